"""The Optuna sweeper on the MNIST trial, through the command line, on tiny subsets: what only the MNIST trial
shows (budget rejection, pruning of real curves, confirmation runs, metrics.json). The sweeper's own logic (resume,
failures, n_jobs, stop_after_hits, interruptions) is tested on the torch-free plain app."""
import csv
import json
import subprocess
import sys
import textwrap

import optuna
import pytest
import yaml
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import ROOT, make_cfg, options, search_cmd, study


def sweep(tmp_path, params, *args, **search):
    """Run a search of the test's own (see conftest.search_cmd) as a user would; it must succeed."""
    r = subprocess.run(search_cmd(tmp_path, params, *args, **search), cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def metrics(tmp_path, number):
    return json.loads((tmp_path / "sweep" / str(number) / "metrics.json").read_text())


def test_plugin_is_discovered_and_searches_compose():
    names = [c.__name__ for c in Plugins.instance().discover(Sweeper)]
    assert "MnistOptunaSweeper" in names
    assert set(options("hparams_search")) >= {"budget", "smallest", "pareto"}
    for option in options("hparams_search"):
        cfg = make_cfg(f"hparams_search={option}", hydra=True)
        sw = cfg.hydra.sweeper
        assert sw._target_.endswith("MnistOptunaSweeper") and sw.params and sw.n_trials > 0
        assert len(sw.objectives) == (len(sw.direction) if OmegaConf.is_list(sw.direction) else 1)
        instantiate(sw.sampler), instantiate(sw.pruner)
    for sampler in ["tpe", "random", "cmaes", "nsgaii", "gp"]:
        cfg = make_cfg("hparams_search=budget", f"hydra/sweeper/sampler={sampler}", hydra=True)
        assert isinstance(instantiate(cfg.hydra.sweeper.sampler), optuna.samplers.BaseSampler)
    for pruner in ["median", "percentile", "hyperband", "none"]:
        cfg = make_cfg("hparams_search=budget", f"hydra/sweeper/pruner={pruner}", hydra=True)
        assert isinstance(instantiate(cfg.hydra.sweeper.pruner), optuna.pruners.BasePruner)


def test_budgets_pruner_stops_only_a_trial_worse_than_nine_in_ten_at_the_same_epoch():
    # Optuna's PercentilePruner keeps the top `percentile` %: budget's must prune the worst tenth, not keep the best
    pruner = instantiate(make_cfg("hparams_search=budget", hydra=True).hydra.sweeper.pruner)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for acc in (0.95, 0.96, 0.97, 0.975, 0.98, 0.981, 0.982, 0.983, 0.985, 0.99):   # finished: epochs 1-3
        t = study.ask()
        for step in (1, 2, 3):
            t.report(acc, step)
        study.tell(t, acc)

    def pruned_at_epoch_2(acc):
        t = study.ask()
        t.report(acc, 1)
        t.report(acc, 2)
        return t.should_prune()
    assert pruned_at_epoch_2(0.94)                 # below every finished trial
    assert not pruned_at_epoch_2(0.965)            # below the median, above the worst tenth
    assert not pruned_at_epoch_2(0.99)


def test_sampler_and_pruner_also_take_a_plain_name():
    from hydra_plugins.mnist_optuna_sweeper.config import PRUNERS, SAMPLERS, by_name
    assert isinstance(instantiate(by_name("pruner", "hyperband", PRUNERS)), optuna.pruners.HyperbandPruner)
    assert isinstance(instantiate(by_name("sampler", "random", SAMPLERS)), optuna.samplers.RandomSampler)
    with pytest.raises(ValueError, match="hydra.sweeper.pruner='sometimes' is not allowed: one of median"):
        by_name("pruner", "sometimes", PRUNERS)


@pytest.mark.slow
def test_tiny_sweep_writes_every_output(tmp_path):
    sweep(tmp_path, {"model.width": "choice(6, 8, 10)", "optimizer.lr": "tag(log, interval(0.05, 0.3))"},
          storage=False, n_trials=2, train_subset=500)
    out = tmp_path / "sweep"
    rows = list(csv.DictReader(open(out / "trials.csv")))
    assert [r["number"] for r in rows] == ["0", "1"]
    for r in rows:
        assert r["state"] == "COMPLETE" and r["status"] == "ok" and r["epochs"] == "1"
        m = metrics(tmp_path, r["number"])
        assert (out / r["number"] / ".hydra" / "overrides.yaml").exists()
        assert int(r["params"]) == m["params"] and float(r["value"]) == m["final_test_acc"]
        assert f"model.width={r['model.width']}" in m["overrides"]
    best = yaml.safe_load(open(out / "optimization_results.yaml"))
    assert best["best_value"] == max(float(r["value"]) for r in rows)
    assert set(best["best_params"]) == {"model.width", "optimizer.lr"}


@pytest.mark.slow
def test_over_budget_trials_are_rejected_untrained_and_infeasible(tmp_path):
    r = sweep(tmp_path, {"model.width": "choice(8, 40)"}, sampler="grid", n_trials=2, train_subset=500)
    s = study(tmp_path)
    by_width = {t.params["model.width"]: t for t in s.trials}
    big, small = by_width[40], by_width[8]
    assert big.state == optuna.trial.TrialState.COMPLETE and big.value == 0.0
    assert big.user_attrs["status"] == "rejected" and big.user_attrs["params"] > 20000
    assert big.system_attrs["constraints:params_over_budget"] > 0 >= small.system_attrs["constraints:params_over_budget"]
    m = metrics(tmp_path, big.number)
    assert m["status"] == "rejected" and m["epochs"] == [] and m["wall_seconds"] < 10
    assert not (tmp_path / "sweep" / str(big.number) / "model.pt").exists()
    # rejected by the sweeper from the composed config: no job ran (Hydra writes config.yaml as a job starts)
    assert "rejected before it started" in r.stdout + r.stderr
    assert not (tmp_path / "sweep" / str(big.number) / ".hydra" / "config.yaml").exists()
    assert (tmp_path / "sweep" / str(small.number) / ".hydra" / "config.yaml").exists()
    assert small.value > 0.0 and s.best_trial.number == small.number


@pytest.mark.slow
def test_hopeless_trials_are_pruned(tmp_path):
    # lr 1e-6 cannot learn in 3 epochs. The grid's order is the seed's (5: both good lrs first), so the median rule
    # judges only the hopeless trials, against two that learnt: nothing a CPU's rounding can flip
    sweep(tmp_path, {"optimizer.lr": "choice(0.2, 0.15, 0.000001, 0.000002)"}, "scheduler=none",
          "hydra.sweeper.pruner.n_startup_trials=2", "hydra.sweeper.pruner.n_warmup_steps=0",
          sampler="grid", pruner="median", epochs=3, n_trials=4, seed=5)
    s = study(tmp_path)
    pruned = [t for t in s.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, [(t.number, t.state, t.params, t.intermediate_values) for t in s.trials]
    assert [t.params["optimizer.lr"] for t in s.trials[:2]] == [0.2, 0.15]
    for t in pruned:
        assert t.params["optimizer.lr"] < 1e-3
        m = metrics(tmp_path, t.number)
        assert m["status"] == "pruned" and 1 <= len(m["epochs"]) < 3 and "pruned" in m["reason"]


@pytest.mark.parametrize("status", ["failed", "pruned"])
def test_a_trial_is_told_as_its_metrics_json_says_it_ended(status, tmp_path):
    # a diverged MNIST trial raises in its job and writes why in metrics.json: the sweep tells Optuna that reason
    # (that a failed trial never stops a sweep below max_failure_rate: tests/test_plain_apps.py)
    from sweeper.engine.policy import SweepInfo
    from sweeper.engine.worker import JobResult
    from sweeper.mnist.metrics import write_json
    from sweeper.mnist.policy import MnistPolicy
    m = {"status": status, "reason": "diverged: non-finite loss at epoch 1, step 3/16; lower optimizer.lr (now 1e+20)"}
    write_json(tmp_path / "metrics.json", m)
    job = JobResult(status, error="TrialFailed: diverged" if status == "failed" else "TrialPruned: pruned")
    policy = MnistPolicy(SweepInfo(dict(objectives=["final_test_acc"]), 1, OmegaConf.create({}), None))
    verdict = policy.judge(job, tmp_path)
    assert (verdict.status, verdict.values, verdict.reason) == (status, None, m["reason"])


@pytest.mark.slow
def test_official_plugin_search_runs_after_changing_only_the_sweeper_line(tmp_path):
    # a search written for hydra-optuna-sweeper 1.2 (its docs' form); only `optuna` -> `mnist_optuna` changed
    official = textwrap.dedent(f"""\
        # @package _global_
        defaults:
          - override /hydra/sweeper: mnist_optuna
          - override /hydra/sweeper/sampler: tpe
        hydra:
          sweep:
            dir: {tmp_path}/sweep
          sweeper:
            sampler:
              seed: 123
            direction: maximize
            study_name: official
            storage: null
            n_trials: 2
            n_jobs: 1
            max_failure_rate: 0.0
            params:
              model: choice(reference, slim)
              model.width: range(6, 10, step=2)
              optimizer.lr: tag(log, interval(0.05, 0.3))
              augment: choice(none, affine)
        """)
    (tmp_path / "conf" / "hparams_search").mkdir(parents=True)
    (tmp_path / "conf" / "hparams_search" / "official.yaml").write_text(official)
    r = subprocess.run([sys.executable, "-m", "sweeper.train", "--multirun", "--config-dir", str(tmp_path / "conf"),
                        "hparams_search=official", "data.train_subset=500", "data.test_subset=200",
                        "trainer.epochs=1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "sweep" / "trials.csv")))
    assert len(rows) == 2 and all(r["state"] == "COMPLETE" for r in rows)
    assert all(r["model.width"] in ("6", "8") for r in rows)                 # range's stop is exclusive
    assert (tmp_path / "sweep" / "optimization_results.yaml").exists()


@pytest.mark.slow
def test_parallel_workers_finish_every_trial(tmp_path):
    sweep(tmp_path, {"model.width": "choice(6, 8, 10)", "optimizer.lr": "interval(0.05, 0.3)"},
          pruner="median", n_trials=2, n_jobs=2, epochs=2)
    s = study(tmp_path)
    assert len(s.trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in s.trials)
    workers = {t.user_attrs["worker"] for t in s.trials}
    assert len(workers) == 1                                                   # one sweep process ...
    ran = []
    for t in s.trials:                                                         # ... running trials in children
        m = metrics(tmp_path, t.number)
        assert m["status"] == "ok" and m["final_test_acc"] == t.value
        assert t.intermediate_values == {1: m["epochs"][0]["test_acc"], 2: t.value}   # reported through the storage
        assert (tmp_path / "sweep" / str(t.number) / ".hydra" / "config.yaml").exists()
        ran.append((m["started_at"], m["ended_at"]))                           # as the trial itself timed it
    (a_start, a_end), (b_start, b_end) = ran
    assert max(a_start, b_start) < min(a_end, b_end), ran                      # two trained at once


def run_search(tmp_path, search, *args, options=()):
    """A shipped hparams_search as a user runs it, shrunk to a few tiny trials in tmp_path; `options` (--config-dir)
    go before the overrides."""
    r = subprocess.run([sys.executable, "-m", "sweeper.train", "--multirun", *options, f"hparams_search={search}",
                        "data.train_subset=500", "data.test_subset=200", "trainer.epochs=1",
                        f"hydra.sweep.dir={tmp_path}/sweep", f"hydra.sweeper.storage=sqlite:///{tmp_path}/study.db",
                        "hydra.sweeper.n_jobs=1", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r, optuna.load_study(study_name=search, storage=f"sqlite:///{tmp_path}/study.db")


@pytest.mark.slow
def test_smallest_search_requires_the_target_and_minimises_params(tmp_path):
    # the config decides each width's target, far from any result: width 13 reaches 1 %, width 12 never 99.9 %
    # (10, the default, is composed before the sweep). A grid over the four models (the other params fixed) runs
    # each once; the best is the smallest of width 13
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "width_targets.yaml").write_text(
        "# @package _global_\nwidth_key: w${model.width}\nwidth_targets: {w10: 0.5, w12: 0.999, w13: 0.01}\n"
        "budget:\n  target_acc: ${width_targets.${width_key}}\n")
    # confirmation has its own test; here it would only triple the runs
    r, s = run_search(tmp_path, "smallest", "+experiment=width_targets", "hydra/sweeper/sampler=grid",
                      "model.dropout=0.03", "optimizer.lr=0.2", "hydra.sweeper.confirm_seeds=0",
                      options=["--config-dir", str(tmp_path / "conf")])
    trials = [t for t in s.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted((t.params["model"], t.params["model.width"]) for t in trials) == [
        ("lean", 12), ("lean", 13), ("slim", 12), ("slim", 13)]
    for t in trials:
        assert t.value == t.user_attrs["params"]                                   # the objective: params
        target = metrics(tmp_path, t.number)["budget"]["target_acc"]
        assert target == {12: 0.999, 13: 0.01}[t.params["model.width"]]
        gap = t.system_attrs["constraints:acc_below_target"]
        assert gap == pytest.approx(target - t.user_attrs["final_test_acc"])
        assert (gap <= 0) == (t.params["model.width"] == 13)
    best = yaml.safe_load(open(tmp_path / "sweep" / "optimization_results.yaml"))
    smallest = min(trials, key=lambda t: t.value)
    assert smallest.params["model.width"] == 12                                # smaller, but never at its target
    assert best["best_params"] == {"model": "lean", "model.width": 13}
    assert best["best_value"] == min(t.value for t in trials if t.params["model.width"] == 13)


@pytest.mark.slow
def test_pareto_search_writes_solutions_none_dominating_another(tmp_path):
    r, s = run_search(tmp_path, "pareto", "hydra.sweeper.n_trials=4")
    results = yaml.safe_load(open(tmp_path / "sweep" / "optimization_results.yaml"))
    assert results["name"] == "optuna" and results["solutions"]
    sols = [tuple(x["values"]) for x in results["solutions"]]
    for t in s.trials:
        # a rejected (untrained) model is told accuracy 0
        assert t.values == [t.user_attrs.get("final_test_acc") or 0.0, t.user_attrs["params"]]
    for a in sols:          # maximise accuracy, minimise params: no solution is at least as good on both and better
        for b in sols:
            assert not (b != a and b[0] >= a[0] and b[1] <= a[1]), (a, b, sols)
    assert {x["number"] for x in results["solutions"]} == {t.number for t in s.best_trials}


@pytest.mark.slow
def test_a_study_with_only_infeasible_trials_writes_trials_csv_and_goes_on(tmp_path):
    r = sweep(tmp_path, {"model.width": "choice(8, 10)"}, "budget.max_params=100", n_trials=2, train_subset=500)
    out = r.stdout + r.stderr
    assert "Traceback" not in out and "No feasible trials" not in out
    rows = list(csv.DictReader(open(tmp_path / "sweep" / "trials.csv")))
    assert [r["status"] for r in rows] == ["rejected", "rejected"]
    assert not (tmp_path / "sweep" / "optimization_results.yaml").exists()   # no feasible best to report


@pytest.mark.slow
def test_a_hit_is_confirmed_on_more_seeds_and_a_miss_on_one_of_them_is_no_hit(tmp_path):
    # the config decides each seed's target, far from any result: 1 % on seeds 0 and 1, 99.9 % on seed 2. So trial
    # seed=0 hits and is confirmed on seed 1; trial seed=1 hits, then misses on seed 2, on any CPU
    targets = """\
        seed_key: s${seed}
        seed_targets: {s0: 0.01, s1: 0.01, s2: 0.999}
        budget:
          target_acc: ${seed_targets.${seed_key}}
        """
    # a sweep dir relative to where the sweep starts, as users give it (Hydra reports job dirs as absolute)
    cmd = search_cmd(tmp_path, {"seed": "choice(0, 1)"}, "hydra.sweeper.confirm_seeds=1", "hydra.sweep.dir=sweep",
                     sampler="grid", n_trials=2, train_subset=500, extra=targets)
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = study(tmp_path)
    assert len(s.trials) == 2                                      # confirmation runs are not trials
    by_seed = {t.params["seed"]: t for t in s.trials}
    confirmed, missed = by_seed[0], by_seed[1]
    assert confirmed.user_attrs["hit"] and confirmed.user_attrs["seeds"] == 2
    assert not missed.user_attrs["hit"] and missed.user_attrs["seeds"] == 2
    runs = {seed: metrics(tmp_path, f"{t.number}/seed{seed}") for seed, t in ((1, confirmed), (2, missed))}
    assert runs[1]["seed"] == 1 and runs[1]["budget"]["target_acc"] == 0.01 <= runs[1]["final_test_acc"]
    assert runs[2]["seed"] == 2 and runs[2]["final_test_acc"] < runs[2]["budget"]["target_acc"] == 0.999
    own = metrics(tmp_path, missed.number)
    assert own["final_test_acc"] >= own["budget"]["target_acc"] == 0.01      # its own seed hit
    assert missed.user_attrs["min_final_test_acc"] == min(own["final_test_acc"], runs[2]["final_test_acc"])
    # Optuna gets the mean over the seeds
    first = metrics(tmp_path, confirmed.number)["final_test_acc"]
    assert confirmed.value == pytest.approx((first + runs[1]["final_test_acc"]) / 2)
    assert "confirming on seed 1" in r.stdout + r.stderr and "miss, not confirmed" in r.stdout + r.stderr
    assert f"] hits: 1 (trials {confirmed.number})" in r.stdout + r.stderr   # the sweep's last lines name them
    rows = {row["seed"]: row for row in csv.DictReader(open(tmp_path / "sweep" / "trials.csv"))}
    assert (rows["0"]["hit"], rows["0"]["seeds"], rows["1"]["hit"]) == ("True", "2", "False")
    out = subprocess.run([sys.executable, "-m", "sweeper.compare", str(tmp_path / "sweep")], cwd=ROOT,
                         capture_output=True, text=True).stdout
    marks = {line[2:].split()[0]: line[:2] for line in out.splitlines()[1:3]}
    assert marks == {str(confirmed.number): "**", str(missed.number): "  "}, out
