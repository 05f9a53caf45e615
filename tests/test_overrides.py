"""Mistyped keys, unknown options and bad values are refused in one line before Hydra writes anything -- no training."""
import dataclasses
import re
import shlex

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from conftest import CONF, ROOT, cli
from hydra_plugins.mnist_optuna_sweeper.config import HyperbandPrunerConf, TPESamplerConf
from sweeper.mnist.checks import ConfigError
from sweeper.mnist.overrides import OverrideError, check
from sweeper.train import check_command


def fields(conf):
    return ", ".join(f.name for f in dataclasses.fields(conf) if not f.name.startswith("_"))


GRAMMAR = ", ".join(sorted(OverridesParser.create().functions.definitions))   # Hydra's own registry
REFUSED = [
    ("trainer.epoch=3", "there is no key trainer.epoch; did you mean trainer.epochs?"),
    ("--multirun hparams_search=budget +trainer.epoch=3", "a trial never reads trainer.epoch"),
    ("data.root=/no/such/dir data.download=false", "MNIST not found"),
    # Hydra's grammar: its parser's words, on one line
    ("model.width=range(6,19,step=2", "no viable alternative at input 'range(6,19,step=2' (a ( is not closed)"),
    ("model.width=rang(6,10)", f"no function rang; did you mean range? It has {GRAMMAR}"),
    # overrides on both sides of a flag: argparse's usage, in eight lines, else
    ("hparams_search=budget --multirun hydra.sweeper.n_jobs=1",
     "unrecognized arguments: hydra.sweeper.n_jobs=1; put the flags first"),
    # Hydra's own groups and keys, the sweeper's among them (a search sweeps without --multirun)
    ("--multirun hparams_search=budget hydra/sweeper/sampler=tpee",
     "hydra/sweeper/sampler is one of cmaes, gp, grid, nsgaii, random, tpe"),
    ("hparams_search=budget hydra.sweeper.n_trial=5",
     "no key hydra.sweeper.n_trial; did you mean hydra.sweeper.n_trials?"),
    ("hparams_search=budget +hydra.sweeper.n_trial=5", "never reads n_trial; did you mean hydra.sweeper.n_trials?"),
    ("hparams_search=budget hydra.sweeper.sampler.foo=1", f"hydra.sweeper.sampler (tpe) has {fields(TPESamplerConf)}"),
    ("hparams_search=budget hydra/sweeper/pruner=hyperband +hydra.sweeper.pruner.n_warmup_steps=2",
     f"hydra.sweeper.pruner (hyperband) never reads n_warmup_steps; it has {fields(HyperbandPrunerConf)}"),
    # refused by the sweeper, after Hydra's callbacks ran: the sweep dir is not made for it
    ("--multirun hparams_search=budget 'optimizer.lr=tag(log,interval(0,0.3))'", "needs start > 0"),
    ("--multirun hparams_search=budget hydra.sweeper.n_jobs=0", "hydra.sweeper.n_jobs=0 is not allowed"),
    ("hparams_search=budget hydra.sweeper.direction=maximise", "minimize or maximize"),
    ("hparams_search=budget 'model.width=range(5,5)'", "range(5, 5, step=1) is empty"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args,says", REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_in_one_line_and_nothing_written(tmp_path, args, says):
    # run from an empty folder with Hydra's default output dirs (the searches' study too): a refused command
    # leaves it empty
    r = cli(*shlex.split(args), cwd=tmp_path, timeout=60)
    err = r.stderr.strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert says in err, err
    assert "Traceback" not in err and "hydra.cc/docs/1.2" not in err and "HYDRA_FULL_ERROR" not in err, err
    assert r.stdout == "" and list(tmp_path.iterdir()) == []


# the same check without a process each
MORE = [
    ("+trainer.epoch=3", OverrideError, "a trial never reads trainer.epoch; did you mean trainer.epochs?"),
    ("model=resnet", OverrideError, "model is one of lean, reference, slim"),
    ("--multirun trainer.epoch=1,2", OverrideError, "there is no key trainer.epoch; did you mean trainer.epochs?"),
    ("model.dropout=1.5", ConfigError, "model.dropout=1.5 is not allowed: must be a number in [0, 1)"),
    ("~trainer.epoch", OverrideError, "there is no key trainer.epoch; did you mean trainer.epochs?"),
    ("optimizer.learning_rate=0.1", OverrideError, "optimizer has lr, momentum, nesterov, weight_decay"),
    ("epochs=3", OverrideError, "did you mean trainer.epochs?"),
    ("foo.bar=1", OverrideError, "the config has augment, budget, data, device, experiment, hparams_search, model"),
    ("+optimizer.foo=1", OverrideError, "a trial never reads optimizer.foo"),
    ("--multirun model=slim,resnet", OverrideError, "model is one of lean, reference, slim"),
    ("--multirun hparams_search=budgett", OverrideError, "hparams_search is one of budget, pareto, smallest"),
    ("trainer.epochs=25", ConfigError, "trainer.epochs=25 is not allowed"),
    ("--multirun model.dropout=1.5 model.width=8,10", ConfigError, "model.dropout=1.5 is not allowed"),
    ("--multirun trainer.epochs=25 model.width=8,10", ConfigError, "trainer.epochs=25 is not allowed"),
    ("+trainer.epochs=3", OverrideError, "trainer.epochs is already in the config; write trainer.epochs=3"),
    ("model.width=8,10", OverrideError, "a sweep and this is one run; add --multirun to sweep it, or write "
                                        "model.width=[8,10] for a list"),
    ("'model.width=range(8,12)'", OverrideError, "a sweep and this is one run; add --multirun"),
    ("--multirun hydra/launcher=basic,joblib", OverrideError,
     "Hydra's own settings (hydra.*, hydra/...) cannot be swept"),
    ("hydra/sweeper/samplr=tpe", OverrideError,
     "there is no group hydra/sweeper/samplr; did you mean hydra/sweeper/sampler?"),
    ("hydra/launcher=nope", OverrideError, "hydra/launcher is one of basic, "),
    ("hydra.run.dirr=x", OverrideError, "there is no key hydra.run.dirr; did you mean hydra.run.dir?"),
    ("hparams_search=budget hydra.sweeper.sampler.sed=1", OverrideError,
     "did you mean hydra.sweeper.sampler.seed? hydra.sweeper.sampler (tpe) has seed, "),
    ("hparams_search=budget 'hydra.sweeper.params.seed=\"choice(1,2)\"'", OverrideError,
     "there is no key hydra.sweeper.params.seed; +hydra.sweeper.params.seed=\"choice(1,2)\" adds it"),
    ("model.width=[8,10", OverrideError, "(a [ is not closed)"),
    ("model.width=interval(x,1)", OverrideError, "TypeError while evaluating 'interval(x,1)'"),
    ("--multrun model.width=8,10", OverrideError, "unrecognized arguments: --multrun; did you mean --multirun?"),
]


@pytest.mark.parametrize("args,error,says", MORE, ids=[m[0] for m in MORE])
def test_refused_before_hydra(args, error, says):
    with pytest.raises(error, match=re.escape(says)):
        check_command(shlex.split(args))


ACCEPTED = [
    "+experiment=smallest",
    "++trainer.note=1",                                  # ++ adds or replaces on purpose
    "+optimizer.dampening=0.1",                          # torch.optim.SGD takes it: the trial reads it
    "model=lean model.width=13 model.dropout=0.03",
    "--multirun hparams_search=budget hydra.sweeper.n_trials=3 hydra/sweeper/sampler=random",
    "--multirun hparams_search=budget 'model.width=range(8,13)' augment=seed",
    "--multirun 'optimizer=sgd,adamw' 'optimizer.betas=[0.9,0.99],[0.9,0.999]'",   # a key of one swept option
    "--multirun trainer.epochs=25 budget.max_epochs=30,40",   # each trial checks its own budget
    "--multirun data.download=false data.root=a,b",           # each trial checks its own data
    "hparams_search=budget 'model.width=range(8,13)'",          # a search sweeps without --multirun
    "hparams_search=budget hydra/sweeper/sampler=random hydra.sweeper.sampler.seed=3 hydra.sweeper.n_jobs=1",
    "hydra.run.dir=runs/one hydra.job.chdir=false",             # ${now:...} in Hydra's config is there, unresolved
    "+hydra.job.env_set.OMP_NUM_THREADS=1",                     # a new key in an open node of Hydra's
]


@pytest.mark.parametrize("args", ACCEPTED)
def test_accepted_forms_pass(args):
    check_command(shlex.split(args))


def test_every_readme_command_names_real_keys_and_options():
    # keys and options only: the README also shows device=cuda, refused on a machine without CUDA
    commands = re.findall(r"python -m sweeper\.train((?: +(?!#)[^\s`|]+)*)", (ROOT / "README.md").read_text().replace("\\\n", " "))   # continued lines
    assert len(commands) >= 15
    for args in commands:
        assert check(shlex.split(args), ROOT / "conf", "train") is not None, args


def test_a_search_sweeps_without_multirun():
    # conf/hparams_search/*.yaml set hydra.mode: MULTIRUN: what they sweep is each trial's to check
    for search in ("budget", "smallest", "pareto"):
        assert check([f"hparams_search={search}"], CONF, "train").swept >= {"model", "model.width", "optimizer.lr"}
    assert check(["hparams_search=budget", "hydra.mode=RUN"], CONF, "train").swept == set()   # as a worker runs it
