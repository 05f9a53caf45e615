"""The command line checked against the config it overrides, before Hydra creates any dir.

Hydra reports a mistyped key in seven lines (exit 1), and takes `+key=value` for a key nothing reads without a
word. `check(argv, config_dir, config_name)` reads the command line with Hydra's own argument and override
parsers, composes the config as Hydra will (sweeps left out, as --multirun leaves them out of the top-level
config) and raises OverrideError, one line, for:

- a flag Hydra's argument parser refuses (mistyped, or overrides on both sides of it): with the closest flag;
- an override Hydra's grammar cannot read, or a grammar function it lacks: with the functions it has;
- `key=v`, `~key` or a sweep `key=a,b` whose key the config lacks: with the closest keys (difflib);
- `+key=v` for a key the config lacks, since a trial reads only its config; under a node with `_target_` a key
  is read when the target takes a keyword of that name (`+optimizer.dampening=0.1` is SGD's); `+key=v` for a
  key the config has (Hydra wants `key=v` there);
- `group=option`, or a sweep of options, that is not one of the group's configs: with the options, Hydra's own
  groups (`hydra/sweeper/sampler=...`) included;
- hydra.* keys the same way; `+hydra.sweeper.x=v` adds a key the sweeper (its sampler, its pruner) is built
  with, so there it must be one of the dataclass's fields;
- a sweep in one run (no --multirun, and no hydra.mode=MULTIRUN, which the searches set), or of hydra.*.

`++key=v` (add or replace, on purpose) passes as typed. When a sweep varies a group (`model=slim,lean`, or a
group in `hydra.sweeper.params`), a key counts as known if any option has it. Hydra's loader is internal API,
stable within hydra-core 1.3 (pinned in pyproject.toml).
"""
import dataclasses
import difflib
import inspect
import os
import re
from dataclasses import dataclass

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path, get_args_parser
from hydra.core.config_search_path import SearchPathQuery
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ValueType
from hydra.errors import HydraException, OverrideParseException
from hydra.types import RunMode
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class OverrideError(ValueError):
    """An override naming a key or a group option the config lacks; the message names it and what exists."""


@dataclass
class Checked:
    cfg: DictConfig     # the job's config with every override that is not a sweep (no `hydra` node)
    swept: set          # keys and groups a sweep varies: each trial checks their values


def check(argv, config_dir, config_name):
    """-> Checked, or None where Hydra runs no job (--help, --cfg, ...) or will refuse the command itself."""
    args = parse_args(argv)
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
    overrides = parse(loader, args.overrides)
    groups = [o for o in overrides if loader.repository.group_exists(o.key_or_group)]
    keys = [o for o in overrides if not loader.repository.group_exists(o.key_or_group)]
    for o in groups:
        check_options(loader, o)
    chosen = [o.input_line for o in groups if not o.is_sweep_override()]
    base = compose(loader, name, chosen)   # every group as chosen, before any key is set
    if base is None:
        return None
    hydra_keys = [o for o in keys if o.is_hydra_override()]
    for o in hydra_keys:
        check_hydra_key(loader, o, base)
    fixed = chosen + [o.input_line for o in hydra_keys if not o.is_sweep_override()]
    if fixed != chosen:   # composed again only when a hydra.* key is set
        base = compose(loader, name, fixed)
        if base is None:
            return None
    # a search may set hydra.mode: MULTIRUN, as lightning-hydra-template's do: then it sweeps without --multirun
    multirun = args.multirun or base.hydra.mode == RunMode.MULTIRUN
    check_sweeps(overrides, multirun)
    own = [o for o in keys if not o.is_hydra_override()]
    swept = {o.key_or_group for o in overrides if o.is_sweep_override()}
    swept |= set(params_swept(base, {o.key_or_group for o in overrides})) if multirun else set()

    top_groups = [g for g in loader.get_group_options("", results_filter=ObjectType.GROUP) if g != "hydra"]
    cfgs = [job(base)]
    for o in own:
        if o.is_force_add():
            continue
        if o.is_add() and has(cfgs[0], o.key_or_group):
            raise already_there(o)
        if has(cfgs[0], o.key_or_group):
            continue
        if o.is_sweep_override() and len(cfgs) == 1:
            # a sweep's key may belong to another option of a swept group; composed only when needed
            cfgs += [job(c) for c in swept_options(loader, name, fixed, swept)]
        check_key(o, cfgs if o.is_sweep_override() else cfgs[:1], top_groups)
    full = compose(loader, name, [o.input_line for o in overrides if not o.is_sweep_override()])
    return None if full is None else Checked(job(full), swept)


def parse_args(argv):
    """Hydra's own argument parser, whose refusal (a mistyped flag, overrides on both sides of a flag) is one line
    here instead of its usage."""
    parser = get_args_parser()
    flags = sorted(s for a in parser._actions for s in a.option_strings if s.startswith("--"))

    def error(message):
        unknown = message.partition("unrecognized arguments: ")[2].split()
        if any(a.startswith("-") for a in unknown):
            close = difflib.get_close_matches(next(a for a in unknown if a.startswith("-")), flags, n=1)
            message += f"; did you mean {close[0]}?" if close else f"; the flags are {', '.join(flags)}"
        elif unknown:   # argparse takes overrides before a flag or after it, not on both sides
            message += "; put the flags first: python -m sweeper.train --multirun KEY=VALUE ..."
        raise OverrideError(message)

    parser.error = error
    return parser.parse_args(argv)


def check_sweeps(overrides, multirun):
    """Hydra sweeps an app's keys and groups in a multirun; never its own settings, and nothing in one run."""
    for o in overrides:
        if not o.is_sweep_override():
            continue
        if o.is_hydra_override():
            raise OverrideError(f"{o.input_line} is not allowed: Hydra's own settings (hydra.*, hydra/...) cannot be "
                                f"swept; quote a value meant as text ({o.key_or_group}='...')")
        if not multirun:
            listed = f", or write {o.key_or_group}=[{','.join(o.sweep_string_iterator())}] for a list" \
                if o.value_type == ValueType.SIMPLE_CHOICE_SWEEP else ""
            raise OverrideError(f"{o.input_line} is not allowed: it is a sweep and this is one run; add --multirun to "
                                f"sweep it{listed}")


def parse(loader, lines):
    """Hydra's own parse of the overrides; one that its grammar cannot read is refused in one line."""
    parser = OverridesParser.create(config_loader=loader)
    try:
        return parser.parse_overrides(lines)
    except OverrideParseException as e:
        functions = sorted(parser.functions.definitions)   # Hydra's registry: what its grammar evaluates
        raise OverrideError(f"{e.override} is not allowed: {grammar_error(e, functions)}") from None


def grammar_error(e, functions):
    """What Hydra's parser said, in one line: its first line, and for an unknown function the ones it has."""
    value = e.override.partition("=")[2]
    unknown = [f for f in re.findall(r"([A-Za-z_]\w*)\s*\(", value) if f not in functions]
    if unknown:
        close = difflib.get_close_matches(unknown[0], functions, n=1)
        return (f"Hydra's override grammar has no function {unknown[0]}"
                + (f"; did you mean {close[0]}?" if close else ";") + f" It has {', '.join(functions)}")
    lines = [line for line in e.message.splitlines() if line.strip() and line.strip() != "^"
             and not line.startswith(("See https://", "Error parsing override"))]
    why = lines[0] if lines else "it cannot be read"
    if why.startswith("LexerNoViableAltException") and "^" in e.message:
        # the parser marks the character it stopped at on a line of its own
        at = e.message.splitlines()[1].index("^") - len("LexerNoViableAltException: ")
        why = f"cannot read {e.override[at:]!r}"
    for left, right in ("()", "[]", "{}"):
        if value.count(left) > value.count(right):
            why += f" (a {left} is not closed)"
    return f"Hydra's override grammar {why if why.startswith('cannot') else f'says: {why}'}; " \
           f"the grammar: https://hydra.cc/docs/advanced/override_grammar/basic/"


def already_there(o):
    line = o.input_line.lstrip("+")
    return OverrideError(f"{o.input_line} is not allowed: {o.key_or_group} is already in the config; write {line} "
                         f"(++{line} adds or replaces)")


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
    # Hydra's own groups also hold what plugins register (hydra/sweeper/sampler: the sweeper's config.py)
    where = "" if o.is_hydra_override() else f" ({o.key_or_group}/*.yaml in the config dir)"
    for option in chosen:
        if option is not None and option not in options:
            raise OverrideError(f"{o.input_line} is not allowed: {o.key_or_group} is one of {', '.join(options)}"
                                + where)


def check_key(o, cfgs, groups):
    """A key the base config lacks: `key=v` and `~key` are refused; a sweep needs it in another config (a swept
    group's option); `+key=v` needs a target that takes it as a keyword."""
    key = o.key_or_group
    if o.is_add():
        if not any(takes_keyword(c, key) for c in cfgs):
            raise OverrideError(f"{o.input_line} is not allowed: a trial never reads {key}; {hint(key, cfgs, groups)}")
    elif not any(has(c, key) for c in cfgs):
        raise OverrideError(f"{o.input_line} is not allowed: there is no key {key}; {hint(key, cfgs, groups)}")


def check_hydra_key(loader, o, cfg):
    """A hydra.* key (or hydra/... group) that Hydra's config lacks is refused, as an app's key is. `+key` adds
    one, which is fine in an open node (hydra.job.env_set) but not where a `_target_` is built from a dataclass's
    fields (the sweeper, its sampler and pruner, a launcher): it would fail with a TypeError once Hydra is running."""
    key = o.key_or_group
    if "/" in key:   # hydra/sweeper/samplr=tpe: a group that does not exist
        raise OverrideError(f"{o.input_line} is not allowed: there is no group {key}; {group_hint(loader, key)}")
    if o.is_force_add():
        return
    if has(cfg, key):
        if o.is_add():
            raise already_there(o)
        return
    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None, throw_on_missing=False)
    if o.is_add():
        if built_from_fields(node):
            raise OverrideError(f"{o.input_line} is not allowed: {label(node)} never reads {name}; "
                                f"{hydra_hint(key, node, 'it')}")
        return
    if isinstance(node, DictConfig) and OmegaConf.get_type(node) is dict:   # hydra.sweeper.params, env_set
        raise OverrideError(f"{o.input_line} is not allowed: there is no key {key}; +{o.input_line} adds it")
    why = hydra_hint(key, node, label(node)) if built_from_fields(node) else hint(key, [cfg], [])
    raise OverrideError(f"{o.input_line} is not allowed: there is no key {key}; {why}")


def built_from_fields(node):
    """A dataclass config with a `_target_`: its fields are all that its target takes."""
    return (isinstance(node, DictConfig) and "_target_" in node
            and dataclasses.is_dataclass(OmegaConf.get_type(node)))


def label(node):
    """'hydra.sweeper.sampler (tpe)': the node's key and the group option that gave it."""
    path = node._get_full_key(None)
    choice = OmegaConf.select(node._get_root(), "hydra.runtime.choices", default={}).get(path.replace(".", "/"))
    return f"{path} ({choice})" if choice else path


def hydra_hint(key, node, subject):
    """The closest of a sampler's (a pruner's, ...) fields to the key's last part, and all of them when few."""
    parent, _, name = key.rpartition(".")
    fields = [k for k in node if not k.startswith("_")]   # _target_, _recursive_: Hydra's, not the target's
    close = difflib.get_close_matches(name, fields, n=3)
    mean = f"did you mean {' or '.join(f'{parent}.{c}' for c in close)}?" if close else ""
    if close and len(fields) > 10:
        return mean
    return f"{mean} {subject.capitalize() if close and subject == 'it' else subject} has {', '.join(fields)}".strip()


def group_hint(loader, group):
    """The closest groups next to where `group` would be, or the groups there."""
    parent = group.rpartition("/")[0]
    while parent and not loader.repository.group_exists(parent):
        parent = parent.rpartition("/")[0]
    near = loader.get_group_options(parent, results_filter=ObjectType.GROUP)
    prefix = parent + "/" if parent else ""
    close = difflib.get_close_matches(group[len(prefix):].split("/")[0], near, n=3)
    if close:
        return f"did you mean {' or '.join(prefix + c for c in close)}?"
    return f"{parent or 'the config'} has the groups {', '.join(prefix + n for n in near)}"


def has(cfg, key):
    """The key is in the config, whatever its value: `???`, or `${now:...}` (Hydra's resolvers are not registered
    before it runs), count as there."""
    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None, throw_on_missing=False) if parent else cfg
    if isinstance(node, DictConfig):
        return name in node.keys()
    if isinstance(node, ListConfig):
        return name.isdigit() and int(name) < len(node)
    return False


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
