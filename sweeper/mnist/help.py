"""`python -m sweeper.train --help` and the README's tables of config groups, keys and searches, from one source:
the tables in sweeper/mnist/help_text.py.

    python -m sweeper.mnist.help           # rewrite conf/hydra/help/mnist.yaml and the README's generated blocks
    python -m sweeper.mnist.help --check   # exit 1 naming what is stale (tests/test_help.py asks the same)

The texts are Markdown as the README shows them; the help page gets them as plain ASCII text (no backticks,
links as the README section they point to). Defaults come from the config itself: conf/train.yaml composed
(`${oc.env:VAR,x}` shown as "$VAR, else x"), the sweeper's structured config for `hydra.sweeper.*`, and its
sampler and pruner options from the plugin's own lists. The help page is Hydra's own mechanism: the
`hydra/help` config `mnist`, selected in conf/train.yaml, whose template is this page as static text.
Generating refuses a config group option (a yaml under conf/), a key of conf/train.yaml's own or a `hydra.sweeper`
key without a line here.
"""
import dataclasses
import re
import sys
import textwrap
from pathlib import Path

from sweeper.mnist.help_text import (APP, ENV, EXAMPLES, GROUPS, KEYS, NOT_IN_CONF, OTHER_GROUPS, SWEEPER_KEYS,
                                     TRIAL_GROUPS)

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
HELP_YAML = CONF / "hydra" / "help" / "mnist.yaml"
README = ROOT / "README.md"
WIDTH = 110

# ------------------------------------------------------------------------------------------ what the config says
def compose(*overrides):
    from hydra import compose as hydra_compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides), return_hydra_config=True)


def group_options():
    """{group: [option, ...]} for every config group dir under conf/ (conf/hydra/* included)."""
    found = {}
    for path in sorted(CONF.rglob("*.yaml")):
        group = path.parent.relative_to(CONF).as_posix()
        if group != ".":
            found.setdefault(group, []).append(path.stem)
    return found


class Facts:
    """What the generated texts take from the config rather than from the tables above."""

    def __init__(self):
        from omegaconf import OmegaConf
        from hydra_plugins.mnist_optuna_sweeper import config
        cfg = compose()
        self.raw = OmegaConf.to_container(cfg, resolve=False)
        self.choices = dict(cfg.hydra.runtime.choices)
        self.budget = cfg.budget
        self.keys = [k for k in leaves(self.raw) if k.split(".")[0] not in GROUPS and k.split(".")[0] != "hydra"]
        self.env = {}   # VAR -> the key it sets
        for key in self.keys:
            m = re.fullmatch(r"\$\{oc\.env:(\w+),.*\}", str(self.value(key)))
            if m:
                self.env[m.group(1)] = key
        self.searches = {}
        for name in GROUPS["hparams_search"]["options"]:
            s = compose(f"hparams_search={name}")
            self.searches[name] = dict(mode=str(s.hydra.mode), storage=s.hydra.sweeper.storage,
                                       dir=s.hydra.sweep.dir, study=s.hydra.sweeper.study_name)
        fields = {f.name: f for f in dataclasses.fields(config.OptunaSweeperConf)}
        choices = {k: v for d in fields["defaults"].default_factory() for k, v in d.items()}
        self.sweeper = {}
        for name, f in fields.items():
            if name in ("_target_", "_recursive_", "defaults"):
                continue
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default   # enqueue: []
            self.sweeper[name] = choices.get(name, default)
        self.samplers, self.pruners = list(config.SAMPLERS), list(config.PRUNERS)

    def value(self, key):
        node = self.raw
        for part in key.split("."):
            node = node[part]
        return node

    def default(self, key, md=True):
        v = self.value(key)
        m = re.fullmatch(r"\$\{oc\.env:(\w+),(.*)\}", str(v))
        if m:
            return f"`${m.group(1)}`, else `{m.group(2)}`" if md else f"${m.group(1)}, else {m.group(2)}"
        return show(v, md)


def leaves(node, prefix=""):
    """The dotted keys of a dict's leaves (a list is a leaf)."""
    for k, v in node.items():
        if isinstance(v, dict):
            yield from leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def show(v, md=True):
    if v is None or isinstance(v, bool):
        return {None: "null", True: "true", False: "false"}[v]
    if isinstance(v, str) and md:
        return f"`{v}`"
    return str(v)


def check_source(facts):
    """The tables above against the config: every group option, every key of conf/train.yaml's own and every
    hydra.sweeper key has its line."""
    problems = []
    found = group_options()
    for group, options in found.items():
        if group not in GROUPS:
            problems.append(f"conf/{group}/ has no entry in GROUPS")
            continue
        listed = set(GROUPS[group]["options"]) - NOT_IN_CONF.get(group, set())
        for o in sorted(set(options) - listed):
            problems.append(f"conf/{group}/{o}.yaml has no line in GROUPS[{group!r}]")
        for o in sorted(listed - set(options)):
            problems.append(f"GROUPS[{group!r}] names {o!r}, which conf/{group}/ lacks")
    for group in sorted(set(GROUPS) - set(found)):
        problems.append(f"GROUPS names {group!r}, which conf/ lacks")
    if set(SWEEPER_KEYS) != set(facts.sweeper):
        problems.append(f"SWEEPER_KEYS differ from OptunaSweeperConf's fields: "
                        f"missing {sorted(set(facts.sweeper) - set(SWEEPER_KEYS))}, "
                        f"unknown {sorted(set(SWEEPER_KEYS) - set(facts.sweeper))}")
    named = [k for keys, _ in KEYS for k in keys]
    if sorted(named) != sorted(facts.keys):
        problems.append(f"KEYS differ from conf/train.yaml's own keys: missing {sorted(set(facts.keys) - set(named))}, "
                        f"unknown {sorted(set(named) - set(facts.keys))}")
    if set(ENV) != set(facts.env):
        problems.append(f"ENV names {sorted(ENV)}, the config reads {sorted(facts.env)}")
    if problems:
        raise SystemExit("sweeper/mnist/help.py is behind the config:\n  " + "\n  ".join(problems))


def ordered(group, facts):
    """-> [(option, is_default)], the default first."""
    default = facts.choices.get(group)
    names = list(GROUPS[group]["options"])
    names.sort(key=lambda o: o != default)
    return [(o, o == default) for o in names]


# ---------------------------------------------------------------------------------------------- the help page
ASCII = {"≥": ">=", "≤": "<=", "×": "x", "–": "-", "—": "-", "…": "...", "±": "+-", "°": " deg", "→": "->"}


def plain(md):
    """Markdown -> the page's plain ASCII text."""
    text = re.sub(r"\[([^\]]+)\]\(#[^)]*\)", r'README "\1"', md)
    text = text.replace("`", "")
    for a, b in ASCII.items():
        text = text.replace(a, b)
    if not text.isascii():
        raise SystemExit(f"sweeper/mnist/help.py: add {sorted(set(c for c in text if not c.isascii()))} to ASCII")
    return text


def wrap(text, indent, first=""):
    return textwrap.fill(text, WIDTH, initial_indent=first, subsequent_indent=" " * indent,
                         break_long_words=False, break_on_hyphens=False)


def group_lines(group, facts):
    g = GROUPS[group]
    about = plain(g["about"]) + (f"; keys: {plain(g['keys'])}" if g["keys"] else "")
    lines = [wrap(about, 17, f"{group:<16} ")]
    for option, default in ordered(group, facts):
        lines.append(wrap(plain(g["options"][option]), 17, f"  {'*' if default else ' '} {option:<12} "))
    return lines


def sweeper_lines(facts):
    heads = {key: f"{key} = {show(facts.sweeper[key], md=False)}" for key in SWEEPER_KEYS}
    column = max(map(len, heads.values())) + 2
    lines = []
    for key, line in SWEEPER_KEYS.items():
        text = line.format(samplers="|".join(facts.samplers), pruners="|".join(facts.pruners))
        lines.append(f"  {heads[key]:<{column}}{plain(text)}")
        if len(lines[-1]) > WIDTH:
            raise SystemExit(f"sweeper/mnist/help.py: SWEEPER_KEYS[{key!r}] is over one line: {lines[-1]!r}")
    return lines


def page(facts=None):
    """The whole page, as `--help` prints it."""
    facts = facts or Facts()
    b = facts.budget
    out = [
        f"{APP} [GROUP=OPTION ...] [KEY=VALUE ...] [--multirun]",
        "",
        wrap(f"Trains one small MNIST CNN, composed by Hydra from the config groups and keys below, and writes its "
             f"metrics.json; a search (hparams_search=NAME, below) sweeps many. The goal (budget.*): final test accuracy "
             f">= {b.target_acc:.1%} with at most {b.max_params} parameters in at most {b.max_epochs} epochs. A "
             f"mistyped key, an unknown option or a bad value stops in one line (exit 2) before anything is "
             f"written.", 0),
        "",
        "== Config groups: GROUP=OPTION (* the default) ==",
    ]
    for group in TRIAL_GROUPS:
        out += group_lines(group, facts)
    out += ["", "== Keys: KEY=VALUE (the default after =) =="]
    for keys, meaning in KEYS:
        out.append(f"  {', '.join(keys)} = {', '.join(facts.default(k, md=False) for k in keys)}")
        out.append(wrap(plain(meaning), 6, " " * 6))
    out += ["", "== Sweep: hparams_search=NAME =="]
    out += group_lines("hparams_search", facts)
    out.append(wrap(plain(searches_where(facts)), 0))
    out += ["", "Keys of any search: hydra.sweeper.KEY=VALUE (the sweeper's default after =; a search sets its "
                "own:", f"{APP} hparams_search=NAME --cfg hydra --package hydra.sweeper shows them)"]
    out += sweeper_lines(facts)
    out += ["", "== Hydra's groups =="]
    for group in OTHER_GROUPS:
        out += group_lines(group, facts)
    out += ["", "== Flags =="]
    out += [wrap(text, 17, f"{flag:<16} ") for flag, text in [
        ("--multirun, -m", "sweep instead of one run: every comma list (model.width=8,10,12) with Hydra's basic "
                           "sweeper, or a search. " + plain(multirun_note(facts))),
        ("--cfg job", "print the config a command composes and run nothing (--cfg hydra: Hydra's part)"),
        ("--hydra-help", "Hydra's own flags and config groups"),
    ]]
    out += ["", "== Environment =="]
    for var, text in ENV.items():
        out.append(wrap(f"{facts.env[var]}'s default: {plain(text)}", 20, f"{var:<19} "))
    out += ["", "== Examples =="]
    for what, command in EXAMPLES:
        out += [f"# {what}", command]
    out += ["", wrap("A run writes outputs/DATE/TIME/ (metrics.json, train.log, model.pt), a sweep "
                     "outputs/multirun/...; python -m sweeper.compare outputs shows them as one table. More in "
                     "README.md.", 0)]
    return "\n".join(out)


def searches_where(facts):
    s = facts.searches
    if len({v["storage"] for v in s.values()}) == 1 and all(v["dir"] == f"outputs/multirun/{v['study']}"
                                                            for v in s.values()):
        return (f"Each keeps its study in `{next(iter(s.values()))['storage']}` (the same command again resumes "
                f"it) and its trials in `outputs/multirun/<study_name>/<trial number>/`.")
    return "Each keeps its study in its `hydra.sweeper.storage` and its trials in its `hydra.sweep.dir`."


def multirun_note(facts):
    if all(v["mode"] == "RunMode.MULTIRUN" for v in facts.searches.values()):
        return "The searches set `hydra.mode=MULTIRUN`: `hparams_search=NAME` sweeps without it."
    return "A search needs it: `--multirun hparams_search=NAME`."


def help_yaml(facts=None):
    """conf/hydra/help/mnist.yaml: the page as Hydra's help config. Its template is static text: `$` doubled for
    string.Template; the header (the usage line) and the footer (the last paragraph) come in by interpolation."""
    text = page(facts)
    if "${" in text:
        raise SystemExit("sweeper/mnist/help.py: the page may not contain '${' (an OmegaConf interpolation)")
    usage, rest = text.split("\n", 1)
    body, footer = rest.rsplit("\n\n", 1)
    assert usage.startswith(APP + " ")
    return "\n".join([
        "# `python -m sweeper.train --help`. Generated by `python -m sweeper.mnist.help` from sweeper/mnist/help.py:",
        "# edit there, then run it (tests/test_help.py fails while this file is behind).",
        f"app_name: {APP}",
        f"header: '${{hydra.help.app_name}}{usage[len(APP):]}'",
        "footer: |-",
        textwrap.indent(footer.replace("$", "$$"), "  "),
        "template: |",
        "  ${hydra.help.header}",
        textwrap.indent(body.replace("$", "$$"), "  "),
        "",
        "  ${hydra.help.footer}",
    ]) + "\n"


# --------------------------------------------------------------------------------------- the README's blocks
def md_cell(text):
    return text.replace("|", "\\|")


def readme_blocks(facts=None):
    """{name: Markdown}: the README's generated blocks."""
    facts = facts or Facts()
    groups = TRIAL_GROUPS + ["hparams_search"] + OTHER_GROUPS
    rows = ["| group | what it changes | keys |", "|---|---|---|"]
    rows += [f"| `{g}` | {md_cell(GROUPS[g]['about'])} | {md_cell(GROUPS[g]['keys'])} |" for g in groups]
    rows += ["", "| option (default first) | what it is |", "|---|---|"]
    for g in TRIAL_GROUPS + OTHER_GROUPS:
        plus = "+" if GROUPS[g].get("add") else ""
        for option, default in ordered(g, facts):
            rows.append(f"| `{plus}{g}={option}`{' (default)' if default else ''} | "
                        f"{md_cell(GROUPS[g]['options'][option])} |")
    rows += ["", "Other keys (see `conf/train.yaml`):", "", "| key | default | meaning |", "|---|---|---|"]
    for keys, meaning in KEYS:
        rows.append(f"| {', '.join(f'`{k}`' for k in keys)} | {', '.join(facts.default(k) for k in keys)} | "
                    f"{md_cell(meaning)} |")
    searches = ["| search | what it looks for |", "|---|---|"]
    searches += [f"| `{o}` | {md_cell(GROUPS['hparams_search']['options'][o])} |"
                 for o, _ in ordered("hparams_search", facts)]
    return {"groups": "\n".join(rows), "searches": "\n".join(searches)}


def markers(name):
    return (f"<!-- generated by `python -m sweeper.mnist.help` from sweeper/mnist/help.py ({name}): edit there -->",
            f"<!-- end of the generated {name} -->")


def with_blocks(readme, blocks):
    for name, block in blocks.items():
        begin, end = markers(name)
        if readme.count(begin) != 1 or readme.count(end) != 1:
            raise SystemExit(f"README.md: the block {name!r} needs one line {begin!r} and one {end!r}")
        start, stop = readme.index(begin) + len(begin), readme.index(end)
        readme = readme[:start] + "\n\n" + block + "\n\n" + readme[stop:]
    return readme


def generated():
    """{path: the text it should have now}."""
    facts = Facts()
    check_source(facts)
    return {HELP_YAML: help_yaml(facts), README: with_blocks(README.read_text(), readme_blocks(facts))}


def stale():
    """The files that differ from what the source generates now."""
    if not HELP_YAML.exists():   # conf/train.yaml selects it: nothing composes without it
        return [HELP_YAML]
    return [p for p, text in generated().items() if p.read_text() != text]


def main(argv):
    if argv == ["--check"]:
        behind = stale()
        for p in behind:
            print(f"{p.relative_to(ROOT)} is behind sweeper/mnist/help.py: run python -m sweeper.mnist.help",
                  file=sys.stderr)
        return 1 if behind else 0
    if argv:
        print("usage: python -m sweeper.mnist.help [--check]", file=sys.stderr)
        return 2
    if not HELP_YAML.exists():   # conf/train.yaml selects it: a stand-in until the real one is written
        HELP_YAML.parent.mkdir(parents=True, exist_ok=True)
        HELP_YAML.write_text("app_name: ''\nheader: ''\nfooter: ''\ntemplate: ''\n")
    for p, text in generated().items():
        if p.read_text() != text:
            p.write_text(text)
            print(f"wrote {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
