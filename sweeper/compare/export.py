"""`--export-best FILE`: the best finished trial as a Hydra experiment config, to run it again on its own.

The file reads like conf/experiment/smallest.yaml: `# @package _global_`, comments saying which trial it is, what it
scored and the command that runs it, then every override the trial ran with (the sweep's fixed ones too: they are
in each trial's .hydra/overrides.yaml), so that `+experiment=<stem>` composes the trial's config exactly:

- `model.width=12` as nested keys (`model: {width: 12}`), each value typed as Hydra's override parser types it,
  which is what the trial's composed config holds (`1e-3` a float, `'12'` a string);
- a config group's option (`model=slim`: `model` is in the trial's hydra.runtime.choices) as
  `override /model: slim` in `defaults`, since a `@package _global_` config cannot set a group as a key; a group
  added with `+` (`+experiment=smallest`) as the config it names (`- /experiment/smallest`: an experiment cannot
  choose a second option of its own group), a deleted one (`~augment`) as `override /augment: null`;
- `hydra.*` and `hydra/...` overrides are left out (Hydra's own settings, not the job's config), and named.

A deleted key (`~model.dropout`) can't be said in a config file: it goes on the command line the comments give,
and they say so. Refused in one line, with no file written: `++group=option` (added or replaced: the trial's files
don't say which), a group option under another package (`model@net=slim`), a file Hydra would not run (not named
*.yaml, or an experiment of the same name in a config dir Hydra searches first).
"""
import shlex
from pathlib import Path

import yaml

from sweeper.compare.table import COLUMNS, SEEDED, number, value_of

# sweeper/train.py's config dir (its config_path, ../conf): a trial composed from it is the MNIST trial's
MNIST_CONF = Path(__file__).resolve().parents[2] / "conf"
MNIST_CONFIG_NAME = "train"


class ExportError(ValueError):
    """Why the best trial can't be exported: one line, naming the trial or file."""


def best(rows):
    """The first finished trial in table order: only `ok` trials qualify (not pruned, failed, interrupted ...)."""
    return next((r for r in rows if r["status"] == "ok"), None)


# -----------------------------------------------------------------------------
# the trial's files

def load(path):
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def job_files(r):
    """(overrides, Hydra's config of the job, the composed config) from the trial's dir; the last two may be {}."""
    if not r["dir"] or not Path(r["dir"]).is_dir():
        raise ExportError(f"trial {r['label']}: no trial dir to read its overrides from (a study trial alone)")
    hydra_dir = Path(r["dir"]) / ".hydra"
    overrides = load(hydra_dir / "overrides.yaml")
    if overrides is None:   # an older or hand-made dir: metrics.json keeps the overrides too
        overrides = (load(Path(r["dir"]) / "metrics.json") or {}).get("overrides")
    if not isinstance(overrides, list):
        raise ExportError(f"trial {r['label']}: cannot read its overrides from {hydra_dir / 'overrides.yaml'}")
    hydra_cfg = (load(hydra_dir / "hydra.yaml") or {}).get("hydra") or {}
    return [str(o) for o in overrides], hydra_cfg, load(hydra_dir / "config.yaml") or {}


def group_names(hydra_cfg, config):
    """The config groups the trial composed: Hydra's record of their choices, else (a dir written by hand) the keys
    whose composed value is a dict; None when neither file is there."""
    choices = (hydra_cfg.get("runtime") or {}).get("choices")
    if isinstance(choices, dict):
        return set(choices)
    if isinstance(config, dict) and config:
        return {k for k, v in config.items() if isinstance(v, dict)}
    return None


# -----------------------------------------------------------------------------
# overrides -> defaults entries and nested keys

def split(lines, groups, label):
    """The overrides as (defaults entries, nested values, deleted keys, hydra overrides left out); ExportError for
    one a config file cannot repeat."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    includes, overrides, values, deleted, left_out = [], [], {}, [], []
    for line in lines:
        try:
            o = parser.parse_override(line)
        except HydraException as e:
            raise ExportError(f"trial {label}: cannot read its override {line!r}: {str(e).splitlines()[0]}") from None
        key = o.key_or_group
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            left_out.append(line)
            continue
        refuse = f"trial {label} was run with {line}, which"   # the start of each refusal
        if o.is_sweep_override():
            raise ExportError(f"{refuse} is a sweep, not one value")
        if groups is None and "." not in key:
            raise ExportError(f"trial {label}: its dir has neither .hydra/hydra.yaml nor .hydra/config.yaml, so "
                              f"{line} can't be told apart as a group option or a value")
        value = None if o.is_delete() else o.value()
        if "/" in key or key in (groups or ()) and (value is None or isinstance(value, str)):
            if o.package:
                raise ExportError(f"{refuse} puts a group option under another package: not exported")
            if o.is_force_add():
                raise ExportError(f"{refuse} adds or replaces a group option (++): its files don't say which")
            if o.is_add():
                includes.append(f"/{key}/{value}")
            else:
                overrides.append({f"override /{key}": value})
        elif o.is_delete():
            deleted.append(line)
        else:
            put(values, key.split("."), value, line, label)
    # Hydra wants a config's overrides after its other defaults; either way the trial's own choice wins
    return includes + overrides, values, deleted, left_out


def put(tree, parts, value, line, label):
    """Set tree[a][b]... = value; a dict value merges as Hydra merges it into the config."""
    for part in parts[:-1]:
        tree = tree.setdefault(part, {})
        if not isinstance(tree, dict):
            raise ExportError(f"trial {label}: {line} sets a key inside a value another override sets")
    last = parts[-1]
    if isinstance(tree.get(last), dict) and isinstance(value, dict):
        for k, v in value.items():
            put(tree[last], [k], v, line, label)
    elif last in tree:
        raise ExportError(f"trial {label}: {line} sets a key another override sets too")
    else:
        tree[last] = value


# -----------------------------------------------------------------------------
# the comments: which trial, its values, the command that runs it

def sources(hydra_cfg, provider):
    """The trial's config search path entries of one provider, as URLs (file:///abs/conf, pkg://app.conf)."""
    return [f"{s.get('schema')}://{s['path']}" for s in (hydra_cfg.get("runtime") or {}).get("config_sources") or []
            if isinstance(s, dict) and s.get("provider") == provider and s.get("path")]


def local(url):
    """The folder of a file:// URL; None for any other (a package's configs)."""
    return url[len("file://"):] if url and url.startswith("file://") else None


def same_dir(a, b):
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


def trial_dirs(hydra_cfg):
    """(its main config dir, its --config-dir): where the trial's own configs were found (None: not known), in the
    order Hydra searches them."""
    main, extra = sources(hydra_cfg, "main"), sources(hydra_cfg, "command-line")   # Hydra takes one --config-dir
    return local(main[0] if main else None), local(extra[0] if extra else None)


def command(hydra_cfg, conf, stem, deleted):
    """`python ... +experiment=<stem>` for an experiment in `conf`/experiment/. Hydra must find the trial's configs
    where the trial found them (its main config dir, its --config-dir, its hydra.searchpath) and `conf` too; the
    config name is the trial's."""
    main_dir, config_dir = trial_dirs(hydra_cfg)
    mnist = same_dir(main_dir, MNIST_CONF)
    config_name = (hydra_cfg.get("job") or {}).get("config_name")
    searchpath = sources(hydra_cfg, "hydra.searchpath in command-line")
    if not same_dir(conf, main_dir) and not same_dir(conf, config_dir):
        if config_dir is None:
            config_dir = str(conf)
        else:   # a second dir goes on the search path, after those the primary config names (they stay)
            searchpath = (searchpath or sources(hydra_cfg, "hydra.searchpath in main")) + [f"file://{conf}"]
    args = [*(["-m", "sweeper.train"] if mnist else []), *(["--config-dir", config_dir] if config_dir else []),
            *(["--config-name", config_name] if config_name and not (mnist and config_name == MNIST_CONFIG_NAME)
              else []),
            *([f"hydra.searchpath=[{','.join(searchpath)}]"] if searchpath else []), f"+experiment={stem}", *deleted,
            "hydra.mode=RUN"]   # one run, though the trial's search (hparams_search=budget) says MULTIRUN
    return " ".join(["python", *([] if mnist else ["<app>"]), *map(shlex.quote, args)])


def shadowing(hydra_cfg, conf, name):
    """An experiment of this name that Hydra would find before `conf`'s: it searches the app's main config dir
    first, then the --config-dir, then the search path."""
    for d in trial_dirs(hydra_cfg):
        if d is None:
            continue
        if same_dir(d, conf):
            return None
        if (Path(d) / "experiment" / name).is_file():
            return Path(d) / "experiment" / name
    return None


def run_lines(hydra_cfg, path, deleted=()):
    """The comment lines that say how to run the experiment written at `path`."""
    main_dir, config_dir = trial_dirs(hydra_cfg)
    if path.parent.name == "experiment":
        conf, how = path.parent.parent, "Run it"
    else:   # +experiment=<stem> looks in the experiment/ folder of each config dir, and nowhere else
        conf = Path(config_dir or main_dir or "CONF")
        how = f"Move it to {conf}/experiment/ (+experiment looks in a config dir's experiment/ folder), then run it"
    if (other := shadowing(hydra_cfg, conf, path.name)) is not None:
        raise ExportError(f"--export-best {path}: Hydra finds {other} first, so +experiment={path.stem} would "
                          f"run that one; give the file another name")
    lines = [f"{how}:", f"  {command(hydra_cfg, conf, path.stem, deleted)}"]
    if same_dir(main_dir, MNIST_CONF):
        return lines
    name = (hydra_cfg.get("job") or {}).get("name")
    return [f"<app>: how you start the app (app.py, -m pkg.app, ...); Hydra records only its job name"
            f"{f', {name}' if name else ''}."] + lines


def scores(r, cols):
    """What the table shows of the trial's values, named as its headers."""
    if cols is not None:
        return ", ".join(f"{name} {number(value_of(r, name))}" for name in cols if value_of(r, name) is not None)
    shown = [f"{h} {fmt(r[f])}" for h, f, fmt in COLUMNS if h in ("params", "final%", "best%", "epochs")
             and r[f] is not None]
    if (r["seeds"] or 1) > 1:
        shown += [f"seeds {r['seeds']}"] + [f"{h} {fmt(r[f])}" for h, f, fmt in SEEDED[1:] if r[f] is not None]
    return ", ".join(shown + ["a hit" if r["hit"] else "not a hit"])


def comments(r, cols, sort_label, hydra_cfg, path, deleted, left_out):
    where = Path(r["dir"]).resolve()
    of = f"of the sweep {where.parent}" if (where.parent / "multirun.yaml").is_file() else f"in {where}"
    lines = [f"Trial {r['label']} {of}: the best by {sort_label}, as python -m sweeper.compare sorted it.",
             f"  {scores(r, cols)}"]
    if left_out:
        lines.append(f"Left out (Hydra's own settings, not the job's config): {' '.join(left_out)}")
    if deleted:
        lines.append(f"A config file cannot delete a key: keep {' '.join(deleted)} on the command line")
    return lines + run_lines(hydra_cfg, path, deleted)


# -----------------------------------------------------------------------------
# the file

class Dumper(yaml.SafeDumper):
    def increase_indent(self, flow=False, indentless=False):   # lists indented under their key, as in conf/
        return super().increase_indent(flow, False)


def dump(obj):
    return yaml.dump(obj, Dumper=Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def render(notes, defaults, values):
    head = "# @package _global_\n" + "".join(f"# {line}\n" for line in notes)
    blocks = ([dump({"defaults": defaults})] if defaults else []) + [dump({k: v}) for k, v in values.items()]
    return head + "\n".join(blocks)


def experiment(r, cols, sort_label, path):
    """The experiment config's text for record `r`, to be written at `path`."""
    lines, hydra_cfg, config = job_files(r)
    defaults, values, deleted, left_out = split(lines, group_names(hydra_cfg, config), r["label"])
    return render(comments(r, cols, sort_label, hydra_cfg, path, deleted, left_out), defaults, values)


def export_best(rows, path, cols, sort_label):
    """Write the best trial of `rows` (table order) to `path`; return the trial's record. ExportError when none
    qualifies or it can't be written as a config; nothing is written then."""
    r = best(rows)
    if r is None:
        raise ExportError(f"--export-best: no finished (ok) trial among the {len(rows)} shown; nothing written")
    path = Path(path).absolute()
    if path.suffix != ".yaml":   # +experiment=<stem> reads <stem>.yaml only
        raise ExportError(f"--export-best {path}: Hydra reads a config from a .yaml file; name it {path.stem}.yaml")
    text = experiment(r, cols, sort_label, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return r
