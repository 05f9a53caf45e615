"""Every option of every group composes, builds and stays within budget -- no training."""
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import make_cfg, options
from sweeper.mnist import data
from sweeper.mnist.model import count_params
from sweeper.mnist.checks import ConfigError, check_config
from sweeper.mnist.trial import make_scheduler

GROUPS = ["model", "augment", "optimizer", "scheduler"]


def test_every_group_has_options():
    for group in GROUPS:
        assert len(options(group)) >= 2, group
    assert set(options("augment")) >= {"none", "seed", "rotate", "affine"}
    assert set(options("optimizer")) >= {"sgd", "adamw"}
    assert set(options("scheduler")) >= {"step", "onecycle", "cosine", "none"}


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_option_composes_and_builds(group, option):
    cfg = make_cfg(f"{group}={option}")
    check_config(cfg)
    model = instantiate(cfg.model)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    opt = instantiate(cfg.optimizer, params=model.parameters())
    sched = make_scheduler(cfg.scheduler, opt, cfg.trainer.epochs, 10)
    for _ in range(3):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] > 0
    x = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    out = data.augment(x, cfg.augment, torch.Generator().manual_seed(0))
    assert out.shape == (8, 1, 28, 28) and out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("option", options("model"))
def test_model_default_width_under_budget(option):
    cfg = make_cfg(f"model={option}")
    n = count_params(instantiate(cfg.model))
    assert 3000 < n < cfg.budget.max_params == 20000


def test_counting_on_the_meta_device_matches_the_built_model():
    from sweeper.mnist.model import count
    for option, width, n in [("reference", 10, 8780), ("slim", 16, 8770), ("slim", 12, 5020), ("lean", 12, 4660)]:
        cfg = make_cfg(f"model={option}", f"model.width={width}")
        assert count(cfg.model) == count_params(instantiate(cfg.model)) == n


def test_lean_has_no_fc_after_its_average():
    model = instantiate(make_cfg("model=lean").model)
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert isinstance(model[-3], torch.nn.Conv2d) and model[-3].out_channels == 10


def test_reference_is_in_the_seeds_range():
    assert 8000 <= count_params(instantiate(make_cfg().model)) <= 10000


def test_defaults_follow_the_seed_where_the_issue_fixes_them():
    sgd = make_cfg("optimizer=sgd").optimizer
    assert sgd.momentum == 0.9 and sgd._target_ == "torch.optim.SGD"
    seed_aug = make_cfg("augment=seed").augment
    assert (seed_aug.pre_rotate, seed_aug.degrees, seed_aug.translate, list(seed_aug.scale), seed_aug.shear) == \
        (7, 7, 0.1, [0.8, 1.2], 10)
    cfg = make_cfg()
    assert cfg.trainer.threads == 1 and cfg.trainer.epochs <= 15
    assert (cfg.budget.max_params, cfg.budget.max_epochs, cfg.budget.target_acc) == (20000, 20, 0.994)


def test_augment_none_is_plain_normalisation():
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    out = data.augment(x, make_cfg("augment=none").augment, torch.Generator())
    assert torch.equal(out, data.normalize(x))


def test_augment_moves_pixels_but_keeps_the_digit():
    x = torch.zeros(64, 1, 28, 28, dtype=torch.uint8)
    x[:, :, 10:18, 10:18] = 255
    out = data.augment(x, make_cfg("augment=seed").augment, torch.Generator().manual_seed(1))
    raw = out * data.STD + data.MEAN
    assert not torch.allclose(raw, x.float() / 255, atol=1e-3)     # something moved
    mass = raw.sum(dim=(1, 2, 3)) / (x.float() / 255).sum(dim=(1, 2, 3))
    assert ((mass > 0.5) & (mass < 1.6)).all()                      # scale 0.8-1.2 keeps most of the square


@pytest.mark.parametrize("override,key", [
    ("model.dropout=1.0", "model.dropout"), ("model.dropout=-0.1", "model.dropout"),
    ("model.width=0", "model.width"), ("model.width=2.5", "model.width"),
    ("trainer.epochs=0", "trainer.epochs"), ("trainer.epochs=21", "trainer.epochs"),
    ("optimizer.lr=0", "optimizer.lr"), ("optimizer.lr=nan", "optimizer.lr"), ("optimizer.lr=abc", "optimizer.lr"),
    ("trainer.batch_size=-1", "trainer.batch_size"), ("augment.scale=[1.2,0.8]", "augment.scale"),
    ("trainer.precision=fp16", "trainer.precision"), ("trainer.compile=yes", "trainer.compile"),
    ("trainer.cuda_graph=maybe", "trainer.cuda_graph"),
    ("scheduler=step", None),
])
def test_check_config(override, key):
    cfg = make_cfg(override)
    if key is None:
        check_config(cfg)
        return
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    assert str(e.value).startswith(f"{key}=")
    assert "\n" not in str(e.value)


def test_data_root_defaults_to_env(monkeypatch):
    monkeypatch.setenv("MNIST_ROOT", "/somewhere/mnist")
    assert make_cfg().data.root == "/somewhere/mnist"
    monkeypatch.delenv("MNIST_ROOT")
    assert OmegaConf.to_container(make_cfg().data, resolve=True)["root"] == "data"


@pytest.mark.parametrize("option", options("scheduler"))
@pytest.mark.parametrize("steps", [1, 2, 3, 5, 10])
def test_schedulers_survive_tiny_runs(option, steps):
    cfg = make_cfg(f"scheduler={option}", "trainer.epochs=1")
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1, momentum=0.9)
    sched = make_scheduler(cfg.scheduler, opt, 1, steps)
    for _ in range(steps):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] >= 0


@pytest.mark.parametrize("option", options("experiment"))
def test_experiments_compose_inside_the_budget(option):
    cfg = make_cfg(f"+experiment={option}")
    check_config(cfg)
    assert cfg.trainer.epochs <= cfg.budget.max_epochs


def test_the_smallest_experiment_is_the_confirmed_winner():
    from sweeper.mnist.model import count
    cfg = make_cfg("+experiment=smallest")
    # the hunt's confirmed winner (README): under the issue's goal of 6,000 params, in at most 15 epochs
    assert (cfg.model._target_, cfg.model.width, cfg.trainer.epochs) == ("sweeper.mnist.model.slim", 12, 15)
    assert count(cfg.model) == 5020 < 6000


@pytest.mark.parametrize("option", options("hydra/launcher"))
def test_launcher_configs_compose_into_their_launchers(option):
    from hydra.utils import get_class
    launcher = make_cfg(f"hydra/launcher={option}", hydra=True).hydra.launcher
    get_class(launcher._target_)   # the plugin is installed (the `cluster` extra) and the target exists
    if option == "ray_cluster":
        assert launcher.ray.init.address == "auto" and launcher.ray.init.object_store_memory is None
    else:
        assert launcher.cpus_per_task == 1 and launcher._target_.endswith("SlurmLauncher")


def test_precision_defaults_to_auto_or_the_environments(monkeypatch):
    monkeypatch.delenv("SWEEPER_PRECISION", raising=False)
    assert make_cfg().trainer.precision == "auto"
    monkeypatch.setenv("SWEEPER_PRECISION", "fp32")   # the whole suite's trials in fp32, subprocesses included
    assert make_cfg().trainer.precision == "fp32" and make_cfg("trainer.precision=bf16").trainer.precision == "bf16"
