"""The search space: Hydra's sweep grammar -> Optuna distributions, and a trial's params -> Hydra overrides.

`params` in the sweeper config and sweeps on the command line are read exactly as Hydra means them:

    choice(a, b)                      CategoricalDistribution([a, b])
    range(6, 19, step=2)              IntDistribution(6, 18, step=2)           the stop is excluded, as in Hydra
    range(0.1, 0.4, step=0.1)         FloatDistribution(0.1, 0.3, step=0.1)    no 0.30000000000000004
    shuffle(range(1, 4))              CategoricalDistribution([1, 2, 3])
    interval(0.0, 0.1)                FloatDistribution(0.0, 0.1)
    int(interval(1, 5))               IntDistribution(1, 5)
    tag(log, interval(1e-3, 1.0))     FloatDistribution(0.001, 1.0, log=True)
    tag(log, int(interval(1, 64)))    IntDistribution(1, 64, log=True)

Every other override (`key=value`, `+key=value`, `~key`) is passed unchanged to every trial.
"""
from decimal import ROUND_CEILING, Decimal

from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import (CategoricalDistribution, FloatDistribution, IntDistribution,
                                  distribution_to_json)


class SpaceError(ValueError):
    """A sweep override Optuna cannot sample; the message names the override and what is allowed."""


def _dec(x):
    return Decimal(repr(x))


def _range_values(start, stop, step):
    """Hydra's range(start, stop, step) without float drift: Hydra itself yields 0.30000000000000004 and even
    the stop 0.4 for range(0.1, 0.4, step=0.1)."""
    if step == 0:
        return []
    s, e, d = _dec(start), _dec(stop), _dec(step)
    n = max(0, ((e - s) / d).to_integral_value(rounding=ROUND_CEILING))
    values = [s + i * d for i in range(int(n))]
    if all(isinstance(v, int) for v in (start, stop, step)):
        return [int(v) for v in values]
    return [float(v) for v in values]


def distribution(override):
    """One Hydra sweep override -> an Optuna distribution; SpaceError when it has nothing to sample."""
    value, line = override.value(), override.input_line
    if override.is_choice_sweep():
        choices = list(override.sweep_iterator())
        if not choices:
            raise SpaceError(f"{line}: has no values to sample")
        return CategoricalDistribution(choices)
    if override.is_range_sweep():
        values = _range_values(value.start, value.stop, value.step)
        if not values:
            raise SpaceError(f"{line}: range({value.start}, {value.stop}, step={value.step}) is empty; "
                             f"the stop is excluded, so use a stop past the last value you want")
        if value.shuffle or len(values) == 1:
            return CategoricalDistribution(values)
        low, high = min(values), max(values)
        if all(isinstance(v, int) for v in values):
            return IntDistribution(low, high, step=abs(int(value.step)))
        return FloatDistribution(low, high, step=abs(float(value.step)))
    if override.is_interval_sweep():
        log = "log" in value.tags
        if value.start >= value.end:
            raise SpaceError(f"{line}: interval(start, end) needs start < end")
        if log and value.start <= 0:
            raise SpaceError(f"{line}: tag(log, interval(...)) needs start > 0")
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(value.start, value.end, log=log)
    raise SpaceError(f"{line}: not a sweep Optuna can sample; use choice, range or interval")


def parse(params, arguments, config_loader=None):
    """The sweeper's `params` and the command line's overrides -> (space, fixed).

    space: {key: distribution} for every sweep; fixed: the other overrides, as typed. On the same key the
    command line wins over the config's params.
    """
    parser = OverridesParser.create(config_loader=config_loader)
    merged = {}
    try:
        overrides = parser.parse_overrides([f"{k}={v}" for k, v in (params or {}).items()] + list(arguments))
    except Exception as e:   # Hydra's OverrideParseException, with a multi-line caret diagram
        raise SpaceError(str(e).strip().splitlines()[0]) from None
    for o in overrides:
        merged[o.get_key_element()] = o
    space = {k: distribution(o) for k, o in merged.items() if o.is_sweep_override()}
    fixed = [o.input_line for o in merged.values() if not o.is_sweep_override()]
    return space, fixed


def grid(space):
    """GridSampler's search space: every value of every choice() and range() param."""
    out = {}
    for key, d in space.items():
        if isinstance(d, CategoricalDistribution):
            out[key] = list(d.choices)
        elif d.step is None:
            raise SpaceError(f"{key}: sampler=grid needs choice() or range() params, not an interval")
        elif isinstance(d, IntDistribution):
            out[key] = list(range(d.low, d.high + 1, d.step))
        else:
            out[key] = _range_values(d.low, d.high + d.step / 2, d.step)
    return out


def clean(value, d):
    """A stepped float as the grid means it: Optuna samples low + k*step, which drifts (0.30000000000000004)."""
    if isinstance(d, FloatDistribution) and d.step is not None:
        k = round((value - d.low) / d.step)
        return float(_dec(d.low) + k * _dec(d.step))
    return value


def overrides(trial, space, config):
    """The trial's params as Hydra overrides. Params a custom_search_space added for keys the config lacks get
    `++`, so they are added rather than refused."""
    out = []
    for key, value in trial.params.items():
        d = space.get(key)
        if d is None and not key.startswith(("+", "~")) and not _in_config(config, key):
            key = f"++{key}"
        out.append(f"{key}={_format(clean(value, d) if d is not None else value)}")
    return out


def _in_config(config, key):
    from omegaconf import OmegaConf
    return OmegaConf.select(config, key.split("@")[0], default=_ABSENT) is not _ABSENT


_ABSENT = object()


def _format(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v if v and all(c.isalnum() or c in "._-/:" for c in v) else "'" + v.replace("'", "\\'") + "'"
    return repr(v)


def identity(space, fixed):
    """What a stored study is: its search space and fixed overrides, in a form that survives a round trip."""
    return dict(space={k: distribution_to_json(d) for k, d in sorted(space.items())}, fixed=sorted(fixed))


def differences(stored, current):
    """One phrase per difference between two identities (empty: the same study)."""
    out = []
    a, b = stored.get("space", {}), current["space"]
    for k in sorted(set(a) | set(b)):
        if k not in b:
            out.append(f"{k} is no longer swept")
        elif k not in a:
            out.append(f"{k} is newly swept")
        elif a[k] != b[k]:
            out.append(f"{k}'s range changed")
    gone, new = set(stored.get("fixed", [])) - set(current["fixed"]), set(current["fixed"]) - set(stored.get("fixed", []))
    if gone:
        out.append(f"fixed overrides dropped: {' '.join(sorted(gone))}")
    if new:
        out.append(f"fixed overrides added: {' '.join(sorted(new))}")
    return out
