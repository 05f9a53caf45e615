"""The values a trial accepts: `check_config` checks every key it reads before anything is built, and a bad
value gets one line naming the key, the value and what is allowed (`python -m sweeper.train` exits 2).
"""
import math

from omegaconf import OmegaConf


class ConfigError(ValueError):
    """A config value outside what is allowed; the message names the key, the value and what is allowed."""


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_fraction(v):
    return is_number(v) and 0 <= v < 1


def check(ok, key, value, allowed):
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


_ABSENT = object()
# a rule that compares with another key: a sweep of either leaves it to each trial
COMPARED = {"trainer.epochs": "budget.max_epochs"}


def check_config(cfg, swept=()):
    """Check every value a trial reads before anything is built; keys an option lacks are skipped, and so are
    the `swept` keys of a sweep's top-level config (each trial checks its own values)."""
    b = cfg.budget
    rules = [
        ("budget.max_params", lambda v: is_int(v) and v > 0, "must be an integer > 0"),
        ("budget.max_epochs", lambda v: is_int(v) and v > 0, "must be an integer > 0"),
        ("budget.target_acc", lambda v: is_number(v) and 0 < v <= 1, "must be a fraction in (0, 1]"),
        ("seed", is_int, "must be an integer"),
        ("trainer.epochs", lambda v: is_int(v) and 1 <= v <= b.max_epochs,
         f"must be an integer in [1, budget.max_epochs={b.max_epochs}]"),
        ("trainer.batch_size", lambda v: is_int(v) and v > 0, "must be an integer > 0"),
        ("trainer.threads", lambda v: is_int(v) and v > 0, "must be an integer > 0"),
        ("trainer.compile", lambda v: isinstance(v, bool), "must be true or false"),
        ("trainer.cuda_graph", lambda v: v == "auto" or isinstance(v, bool), "must be auto, true or false"),
        ("trainer.precision", lambda v: v in ("auto", "fp32", "bf16"), "must be one of auto, fp32, bf16"),
        ("data.root", lambda v: isinstance(v, str) and v != "", "must be a folder path"),
        ("data.download", lambda v: isinstance(v, bool), "must be true or false"),
        ("data.train_subset", lambda v: v is None or (is_int(v) and v > 0), "must be null or an integer > 0"),
        ("data.test_subset", lambda v: v is None or (is_int(v) and v > 0), "must be null or an integer > 0"),
        ("model.width", lambda v: is_int(v) and v > 0, "must be an integer > 0"),
        ("model.dropout", is_fraction, "must be a number in [0, 1)"),
        ("augment.pre_rotate", lambda v: is_number(v) and 0 <= v <= 180, "must be degrees in [0, 180]"),
        ("augment.degrees", lambda v: is_number(v) and 0 <= v <= 180, "must be degrees in [0, 180]"),
        ("augment.shear", lambda v: is_number(v) and 0 <= v < 90, "must be degrees in [0, 90)"),
        ("augment.translate", is_fraction, "must be a fraction in [0, 1)"),
        ("augment.scale", lambda v: isinstance(v, list) and len(v) == 2 and all(is_number(s) and s > 0 for s in v)
         and v[0] <= v[1], "must be [low, high] with 0 < low <= high"),
        ("optimizer.lr", lambda v: is_number(v) and v > 0, "must be a number > 0"),
        ("optimizer.momentum", is_fraction, "must be a number in [0, 1)"),
        ("optimizer.weight_decay", lambda v: is_number(v) and v >= 0, "must be a number >= 0"),
        ("scheduler.name", lambda v: v in ("step", "onecycle", "cosine", "none"),
         "must be one of step, onecycle, cosine, none"),
        ("scheduler.step_size", lambda v: is_int(v) and v > 0, "must be an integer number of epochs > 0"),
        ("scheduler.gamma", lambda v: is_number(v) and 0 < v <= 1, "must be a number in (0, 1]"),
        ("scheduler.pct_start", lambda v: is_number(v) and 0 < v < 1, "must be a number in (0, 1)"),
        ("scheduler.div_factor", lambda v: is_number(v) and v >= 1, "must be a number >= 1"),
        ("scheduler.final_div_factor", lambda v: is_number(v) and v >= 1, "must be a number >= 1"),
        ("scheduler.eta_min", lambda v: is_number(v) and v >= 0, "must be a number >= 0"),
    ]
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key, ok, allowed in rules:
        if key in swept or COMPARED.get(key) in swept:
            continue
        node = plain
        for part in key.split("."):
            node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
        if node is not _ABSENT:
            check(ok(node), key, node, allowed)
