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


def _range(start, stop, step):
    """Hydra's range(start, stop, step) as (first, last, count), in exact decimals: Hydra itself yields
    0.30000000000000004 and even the stop 0.4 for range(0.1, 0.4, step=0.1)."""
    s, e, d = _dec(start), _dec(stop), _dec(step)
    n = int(max(0, ((e - s) / d).to_integral_value(rounding=ROUND_CEILING))) if d != 0 else 0
    as_type = int if all(isinstance(v, int) for v in (start, stop, step)) else float
    return as_type(s), as_type(s + (n - 1) * d), n


def _values(low, step, n):
    """low, low + step, ... (n values) without float drift."""
    if isinstance(low, int) and isinstance(step, int):
        return [low + i * step for i in range(n)]
    return [float(_dec(low) + i * _dec(step)) for i in range(n)]


def distribution(override):
    """One Hydra sweep override -> an Optuna distribution; SpaceError when it has nothing to sample."""
    value, line = override.value(), override.input_line
    if override.is_choice_sweep():
        value.shuffle = False   # the order as typed: a shuffled order would change the study's identity each run
        choices = list(override.sweep_iterator())
        if not choices:
            raise SpaceError(f"{line}: has no values to sample")
        return CategoricalDistribution(choices)
    if override.is_range_sweep():
        first, last, n = _range(value.start, value.stop, value.step)
        if n == 0:
            raise SpaceError(f"{line}: range({value.start}, {value.stop}, step={value.step}) is empty; "
                             f"the stop is excluded, so use a stop past the last value you want")
        low, high, step = min(first, last), max(first, last), abs(value.step)
        if value.shuffle or n == 1:
            return CategoricalDistribution(_values(low, step, n))
        if isinstance(low, int):
            return IntDistribution(low, high, step=step)
        return FloatDistribution(low, high, step=float(step))
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
    for line in [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments):
        try:
            [o] = parser.parse_overrides([line])
        except Exception as e:   # Hydra's OverrideParseException: several lines, with a link to the grammar
            why = [w for w in str(e).strip().splitlines() if not w.startswith(("See https", "Error parsing"))]
            raise SpaceError(f"{line}: {' '.join(why) or 'cannot be parsed'}") from None
        # +key, ++key and key are one key: the command line's, whatever its prefix, replaces the config's sweep
        merged.pop(o.get_key_element().lstrip("+~"), None)
        merged[o.get_key_element().lstrip("+~")] = o
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
            raise SpaceError(f"{key}: sampler=grid needs params with finitely many values: choice(), range() or "
                             f"int(interval()), not a float interval")
        elif isinstance(d, IntDistribution):
            out[key] = list(range(d.low, d.high + 1, d.step))
        else:
            out[key] = _values(d.low, d.step, round((d.high - d.low) / d.step) + 1)
    return out


def check_params(space, params, fixed=()):
    """A dict of params to enqueue -> the same, each key a param of the space and each value one it can sample;
    SpaceError names the first that is not. Keys that `fixed` (parse's) sets are left out: the command line's value
    wins there, as in every other trial (`trainer.epochs=1` on a search that enqueues epochs)."""
    fixed_keys = {line.split("=", 1)[0].lstrip("+~") for line in fixed}
    params = {k: v for k, v in params.items() if k not in fixed_keys}
    for key, value in params.items():
        d = space.get(key)
        if d is None:
            raise SpaceError(f"{key}={value!r} is not a param of the search space ({', '.join(space) or 'none'})")
        if isinstance(d, CategoricalDistribution):
            ok = value in d.choices
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and d.low <= value <= d.high \
                and (d.step is None or abs(clean(value, d) - value) < 1e-9)
            ok = ok and (not isinstance(d, IntDistribution) or float(value).is_integer())
        if not ok:
            raise SpaceError(f"{key}={value!r} is outside its search space: {_describe(d)}")
    # as Optuna stores them, so a study that ran these params already is seen to have them (enqueue_trial)
    return {k: float(v) if isinstance(space[k], FloatDistribution) else v for k, v in params.items()}


def _describe(d):
    if isinstance(d, CategoricalDistribution):
        return f"one of {list(d.choices)}"
    step = f" in steps of {d.step}" if d.step is not None else ""
    return f"{'an integer' if isinstance(d, IntDistribution) else 'a number'} from {d.low} to {d.high}{step}"


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
        # unquoted only where Hydra reads it back as this same string: '1', 'true' or 'null' stay strings
        try:
            if OverridesParser.create().parse_override(f"k={v}").value() == v:
                return v
        except Exception:
            pass
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
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
