"""`python -m sweeper.train --help` (conf/hydra/help/mnist.yaml) and the README's generated tables: both current
with sweeper/mnist/help.py, and every key, group and option the page names real."""
import dataclasses
import os
import re
import shlex
import string
import subprocess
import sys
from functools import lru_cache

import pytest
from omegaconf import OmegaConf

from conftest import CONF, ROOT, make_cfg
from sweeper.mnist import help

UPPER = re.compile(r"[A-Z_]+")


@pytest.fixture(scope="module")
def facts():
    return help.Facts()


@pytest.fixture(scope="module")
def page(facts):
    return help.page(facts)


@lru_cache(maxsize=None)
def composed(*overrides):
    return OmegaConf.to_container(make_cfg(*overrides, hydra=True), resolve=False)


def has(container, key):
    for part in key.split("."):
        if not isinstance(container, dict) or part not in container:
            return False
        container = container[part]
    return True


def conf_options():
    """{group: {option}} for every yaml under every config group dir of conf/ (conf/hydra/* included)."""
    found = {}
    for path in CONF.rglob("*.yaml"):
        if path.parent != CONF:
            found.setdefault(path.parent.relative_to(CONF).as_posix(), set()).add(path.stem)
    return found


def listed(text):
    """{group: {option: is_default}} as the page lists them: a group's line, then its options' lines."""
    out, group = {}, None
    for line in text.splitlines():
        if m := re.match(r"([a-z_/]+) {2,}\S", line):
            group = m.group(1)
            out[group] = {}
        elif (m := re.match(r"  ([* ]) ([a-z_]+) {2,}\S", line)) and group:
            out[group][m.group(2)] = m.group(1) == "*"
        elif not line.startswith(" " * 17):   # not a wrapped line: the group's list has ended
            group = None
    return out


def test_the_committed_help_and_readme_are_what_the_source_generates():
    assert help.stale() == [], "run python -m sweeper.mnist.help"


def test_hydra_renders_the_committed_template_as_the_page(page):
    cfg = make_cfg(hydra=True)
    assert cfg.hydra.runtime.choices["hydra/help"] == "mnist"
    text = string.Template(cfg.hydra.help.template).substitute(FLAGS_HELP="", HYDRA_CONFIG_GROUPS="",
                                                              APP_CONFIG_GROUPS="", CONFIG="")
    assert text.rstrip("\n") == page
    assert page.isascii() and "MNIST_ROOT" in page and "--multirun" in page


def test_every_option_of_every_config_group_is_listed_and_marked_default_as_composed(page):
    shown, conf = listed(page), conf_options()
    choices = make_cfg(hydra=True).hydra.runtime.choices
    assert set(shown) == set(conf)
    for group, options in shown.items():
        assert conf[group] <= set(options), (group, conf[group] - set(options))
        for option, default in options.items():
            assert default == (choices.get(group) == option), (group, option)
            if option not in conf[group]:   # one Hydra provides: hydra/help=default
                make_cfg(f"{group}={option}")


def test_every_key_the_page_names_exists(page):
    tokens = set(re.findall(r"(?<![\w/.$+-])((?:model|augment|optimizer|scheduler|trainer|data|budget|hydra)"
                            r"\.[A-Za-z_*][\w.*]*)", page))
    assert {"trainer.epochs", "data.root", "budget.target_acc", "model.width"} <= tokens
    for token in sorted(tokens):
        key = ".".join(p for p in token.rstrip(".").split(".") if p != "*" and not UPPER.fullmatch(p))
        if token == "model.pt":   # a file of every run
            continue
        top = key.split(".")[0]
        if key.startswith("hydra.launcher."):
            candidates = [composed(f"hydra/launcher={o}") for o in conf_options()["hydra/launcher"]]
        elif top == "hydra":
            candidates = [composed("hparams_search=budget")]
        elif top in ("model", "augment", "optimizer", "scheduler"):
            candidates = [composed(f"{top}={o}") for o in conf_options()[top]]
        else:
            candidates = [composed()]
        assert any(has(c, key) for c in candidates), token


def test_every_key_of_a_group_and_of_the_keys_table_exists(facts):
    for group in ["model", "augment", "optimizer", "scheduler"]:
        for key in re.findall(r"`(\w+)`", help.GROUPS[group]["keys"]):
            assert any(has(composed(f"{group}={o}")[group], key) for o in conf_options()[group]), (group, key)
    for keys, _ in help.KEYS:
        for key in keys:
            assert has(composed(), key), key


def test_the_sweeper_keys_are_the_plugins_fields_and_a_search_has_them(page):
    from hydra_plugins.mnist_optuna_sweeper.config import PRUNERS, SAMPLERS, OptunaSweeperConf
    fields = {f.name for f in dataclasses.fields(OptunaSweeperConf)} - {"_target_", "_recursive_", "defaults"}
    assert set(help.SWEEPER_KEYS) == fields
    budget = composed("hparams_search=budget")["hydra"]["sweeper"]
    section = page[page.index("hydra.sweeper.KEY=VALUE"):page.index("== Hydra's groups")]
    for key in fields:
        assert key in budget, key
        assert re.search(rf"^  {key} = \S+ +\S", section, re.M), key          # one line each, with its default
    assert f"hydra/sweeper/sampler={'|'.join(SAMPLERS)};" in page
    assert f"hydra/sweeper/pruner={'|'.join(PRUNERS)}" in page


def test_the_examples_pass_the_command_check():
    from sweeper.train import check_command
    for _, command in help.EXAMPLES:
        argv = shlex.split(command)
        assert argv[:3] == ["python", "-m", "sweeper.train"]
        check_command(argv[3:])


def test_an_option_or_a_key_without_a_line_stops_the_generator(facts, monkeypatch):
    help.check_source(facts)
    with monkeypatch.context() as m:
        m.setitem(help.GROUPS, "model", {**help.GROUPS["model"], "options": {"reference": "x", "slim": "y"}})
        with pytest.raises(SystemExit, match=r"conf/model/lean.yaml has no line"):
            help.check_source(facts)
    with monkeypatch.context() as m:
        m.setattr(help, "KEYS", [row for row in help.KEYS if row[0] != ["trainer.threads"]])
        with pytest.raises(SystemExit, match=r"missing \['trainer.threads'\]"):
            help.check_source(facts)
    with monkeypatch.context() as m:
        m.setattr(help, "SWEEPER_KEYS", {k: v for k, v in help.SWEEPER_KEYS.items() if k != "policy"})
        with pytest.raises(SystemExit, match=r"missing \['policy'\]"):
            help.check_source(facts)


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--help"], ["hparams_search=budget", "model=slim", "--help"]])
def test_help_prints_the_page_and_writes_nothing(args, page, tmp_path):
    r = subprocess.run([sys.executable, "-m", "sweeper.train", *args], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == page
    for word in ["== Config groups", "model.width", "trainer.epochs", "hydra.sweeper.KEY", "MNIST_ROOT", "budget",
                 "--multirun"]:
        assert word in r.stdout
    assert list(tmp_path.iterdir()) == []   # no outputs/, no .hydra/, no log
