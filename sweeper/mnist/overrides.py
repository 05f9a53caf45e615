"""The command line checked against the config it overrides, before Hydra creates any dir.

Hydra reports a mistyped key in seven lines (exit 1), and takes `+key=value` for a key nothing reads without a
word. `check(argv, config_dir, config_name)` reads the command line with Hydra's own argument and override
parsers, composes the config as Hydra will (sweeps left out, as --multirun leaves them out of the top-level
config) and raises OverrideError, one line, for:

- `key=v`, `~key` or a sweep `key=a,b` whose key the config lacks: with the closest keys (difflib);
- `+key=v` for a key the config lacks, since a trial reads only its config; under a node with `_target_` a key
  is read when the target takes a keyword of that name (`+optimizer.dampening=0.1` is SGD's);
- `group=option`, or a sweep of options, that is not one of the group's configs: with the options.

`++key=v` (add or replace, on purpose), hydra.* and hydra/... overrides pass as typed. When a sweep varies a
group (`model=slim,lean`, or a group in `hydra.sweeper.params`), a key counts as known if any option has it.
A command Hydra refuses anyway (bad syntax, a sweep without --multirun) is left to Hydra's own message.
Hydra's loader is internal API, stable within hydra-core 1.3 (pinned in pyproject.toml).
"""
import difflib
import inspect
import os
from dataclasses import dataclass

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path, get_args_parser
from hydra.core.config_search_path import SearchPathQuery
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

_ABSENT = object()


class OverrideError(ValueError):
    """An override naming a key or a group option the config lacks; the message names it and what exists."""


@dataclass
class Checked:
    cfg: DictConfig     # the job's config with every override that is not a sweep (no `hydra` node)
    swept: set          # keys and groups a sweep varies: each trial checks their values


def check(argv, config_dir, config_name):
    """-> Checked, or None where Hydra runs no job (--help, --cfg, ...) or will refuse the command itself."""
    args = get_args_parser().parse_args(argv)
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion or args.config_path:
        return None
    search_path = create_config_search_path(f"file://{os.path.abspath(config_dir)}")
    if args.config_dir is not None:
        if not os.path.isdir(args.config_dir):
            return None
        search_path.prepend(provider="command-line", path=f"file://{os.path.abspath(args.config_dir)}",
                            anchor=SearchPathQuery(provider="schema"))   # where Hydra puts it
    loader = ConfigLoaderImpl(config_search_path=search_path)
    name = args.config_name or config_name
    try:
        overrides = OverridesParser.create(config_loader=loader).parse_overrides(args.overrides)
    except HydraException:
        return None
    own = [o for o in overrides if not o.is_hydra_override()]
    groups = [o for o in own if loader.repository.group_exists(o.key_or_group)]
    keys = [o for o in own if not loader.repository.group_exists(o.key_or_group)]
    for o in groups:
        check_options(loader, o)

    fixed = [o.input_line for o in overrides if o.is_hydra_override()]
    fixed += [o.input_line for o in groups if not o.is_sweep_override()]
    base = compose(loader, name, fixed)
    if base is None:
        return None
    multirun = args.multirun or base.hydra.mode == RunMode.MULTIRUN
    if any(o.is_sweep_override() for o in overrides) and not multirun:
        return None
    swept = {o.key_or_group for o in own if o.is_sweep_override()}
    swept |= set(params_swept(base, {o.key_or_group for o in own})) if multirun else set()

    top_groups = [g for g in loader.get_group_options("", results_filter=ObjectType.GROUP) if g != "hydra"]
    cfgs = [job(base)]
    for o in keys:
        if o.is_force_add() or has(cfgs[0], o.key_or_group):
            continue   # (`+key` for a key the config has: Hydra says to drop the +)
        if o.is_sweep_override() and len(cfgs) == 1:
            # a sweep's key may belong to another option of a swept group; composed only when needed
            cfgs += [job(c) for c in swept_options(loader, name, fixed, swept)]
        check_key(o, cfgs if o.is_sweep_override() else cfgs[:1], top_groups)
    full = compose(loader, name, [o.input_line for o in overrides if not o.is_sweep_override()])
    return None if full is None else Checked(job(full), swept)


def compose(loader, name, lines):
    """The config Hydra composes for a job from these overrides; None where Hydra will refuse them itself."""
    try:
        return loader.load_configuration(config_name=name, overrides=lines, run_mode=RunMode.RUN)
    except (HydraException, OmegaConfBaseException, ValueError):
        return None


def swept_options(loader, name, fixed, swept):
    """The configs of each option of each swept group, the other overrides as given."""
    for group in sorted(g for g in swept if loader.repository.group_exists(g)):
        for option in loader.get_group_options(group):
            cfg = compose(loader, name, fixed + [f"{group}={option}"])
            if cfg is not None:
                yield cfg


def job(cfg):
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


def params_swept(base, on_command_line):
    """Keys and groups that hydra.sweeper.params sweeps, less those the command line sets (it wins there)."""
    params = OmegaConf.select(base, "hydra.sweeper.params", default=None) or {}
    parser = OverridesParser.create()
    for key, value in params.items():
        try:
            [o] = parser.parse_overrides([f"{key}={value}"])
        except HydraException:
            continue   # the sweeper reports it
        if o.is_sweep_override() and o.key_or_group not in on_command_line:
            yield o.key_or_group


def check_options(loader, o):
    """`group=option` names one of the group's configs; a sweep, every option it lists."""
    if o.is_delete():
        return
    value = list(o.sweep_string_iterator()) if o.is_sweep_override() else o.value()
    chosen = value if isinstance(value, list) else [value]
    options = loader.get_group_options(o.key_or_group)
    for option in chosen:
        if option is not None and option not in options:
            raise OverrideError(f"{o.input_line} is not allowed: {o.key_or_group} is one of {', '.join(options)} "
                                f"({o.key_or_group}/*.yaml in the config dir)")


def check_key(o, cfgs, groups):
    """A key the base config lacks: `key=v` and `~key` are refused; a sweep needs it in another config (a swept
    group's option); `+key=v` needs a target that takes it as a keyword."""
    key = o.key_or_group
    if o.is_add():
        if not any(takes_keyword(c, key) for c in cfgs):
            raise OverrideError(f"{o.input_line} is not allowed: a trial never reads {key}; {hint(key, cfgs, groups)}")
    elif not any(has(c, key) for c in cfgs):
        raise OverrideError(f"{o.input_line} is not allowed: there is no key {key}; {hint(key, cfgs, groups)}")


def has(cfg, key):
    return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False,
                            throw_on_resolution_failure=False) is not _ABSENT


def takes_keyword(cfg, key):
    """A node with `_target_` passes every key to its target: a new key is read when the target takes it."""
    parent, _, name = key.rpartition(".")
    target = OmegaConf.select(cfg, f"{parent}._target_" if parent else "_target_", default=None)
    if not isinstance(target, str):
        return False
    try:
        params = inspect.signature(get_object(target)).parameters.values()
    except (ImportError, ValueError, TypeError):
        return False
    return any(p.name == name or p.kind == p.VAR_KEYWORD for p in params)


def paths(node, prefix=""):
    """Every dotted key of a plain dict, nodes and leaves."""
    for k, v in node.items():
        yield f"{prefix}{k}"
        if isinstance(v, dict):
            yield from paths(v, f"{prefix}{k}.")


def hint(key, cfgs, groups):
    """`did you mean ...?` with the closest keys next to where it would be, or the keys there."""
    known = {p for c in cfgs for p in paths(OmegaConf.to_container(c, resolve=False))} | set(groups)
    parent = key.rpartition(".")[0]
    while parent and not any(p.startswith(parent + ".") for p in known):
        parent = parent.rpartition(".")[0]
    prefix = parent + "." if parent else ""
    # _target_ and the like are Hydra's own keys, never what a typo meant
    near = sorted({p[len(prefix):].split(".")[0] for p in known if p.startswith(prefix)} - {"_target_"})
    close = [prefix + m for m in difflib.get_close_matches(key[len(prefix):].split(".")[0], near, n=3)]
    if not close and not parent:   # a key without its group: `epochs` for trainer.epochs
        close = difflib.get_close_matches(key, sorted(p for p in known if not p.endswith("_target_")), n=3)
    if close:
        return f"did you mean {' or '.join(close)}?"
    return f"{parent or 'the config'} has {', '.join(near)}"
