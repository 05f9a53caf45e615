"""The search space (sweeper/engine/space.py): Hydra's sweep grammar -> Optuna distributions, params -> overrides, and
the study identity that guards a resumed sweep (sweeper/engine/study.py check_identity). Milliseconds each."""
import random

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from sweeper.engine import space as sp
from sweeper.engine.study import IDENTITY, StudyError, check_identity

optuna.logging.set_verbosity(optuna.logging.WARNING)


def one(form):
    space, fixed = sp.parse({}, [f"x={form}"])
    assert fixed == []
    return space["x"]


@pytest.mark.parametrize("form, expected", [
    ("choice(a, b)", CategoricalDistribution(["a", "b"])),
    ("choice(1, 2, 3)", CategoricalDistribution([1, 2, 3])),
    ("choice(true,false)", CategoricalDistribution([True, False])),
    ("range(6, 19, step=2)", IntDistribution(6, 18, step=2)),
    ("range(3)", IntDistribution(0, 2, step=1)),
    ("range(10, 0, step=-3)", IntDistribution(1, 10, step=3)),
    ("range(0.1, 0.4, step=0.1)", FloatDistribution(0.1, 0.3, step=0.1)),
    ("range(1, 3, step=0.5)", FloatDistribution(1.0, 2.5, step=0.5)),
    ("interval(0.0, 0.1)", FloatDistribution(0.0, 0.1)),
    ("interval(0, 1)", FloatDistribution(0.0, 1.0)),
    ("int(interval(1, 5))", IntDistribution(1, 5)),
    ("tag(log, interval(1e-3, 1.0))", FloatDistribution(0.001, 1.0, log=True)),
    ("tag(log, int(interval(1, 64)))", IntDistribution(1, 64, log=True)),
])
def test_every_sweep_form_maps_to_its_distribution(form, expected):
    d = one(form)
    assert d == expected
    assert type(d) is type(expected)
    if isinstance(d, FloatDistribution):
        # == on distributions compares floats, but a 0.30000000000000004 high would still show in overrides
        assert (repr(d.low), repr(d.high)) == (repr(expected.low), repr(expected.high))


def test_shuffled_range_is_a_categorical_of_its_values():
    d = one("shuffle(range(1, 4))")
    assert isinstance(d, CategoricalDistribution)
    assert sorted(d.choices) == [1, 2, 3]


def test_grid_lists_exact_values():
    space, _ = sp.parse({}, ["a=range(0.1, 0.4, step=0.1)", "b=range(6, 19, step=2)", "c=range(10, 0, step=-3)",
                             "d=choice(x, y)", "e=range(1, 3, step=0.5)"])
    g = sp.grid(space)
    assert g == {"a": [0.1, 0.2, 0.3], "b": [6, 8, 10, 12, 14, 16, 18], "c": [1, 4, 7, 10], "d": ["x", "y"],
                 "e": [1.0, 1.5, 2.0, 2.5]}
    assert [repr(v) for v in g["a"]] == ["0.1", "0.2", "0.3"]
    assert all(type(v) is int for v in g["b"] + g["c"])


def test_grid_refuses_an_interval_naming_its_key():
    space, _ = sp.parse({}, ["a=choice(1, 2)", "model.dropout=interval(0.0, 0.1)"])
    with pytest.raises(sp.SpaceError, match=r"^model\.dropout: sampler=grid needs params with finitely many values"):
        sp.grid(space)


@pytest.mark.parametrize("override", [
    "x=range(5,5)", "x=range(0,10,step=-1)", "x=interval(1, 1)", "x=tag(log, interval(0, 1))",
])
def test_an_empty_or_invalid_sweep_is_one_line_naming_the_override(override):
    with pytest.raises(sp.SpaceError) as e:
        sp.parse({}, [override])
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"{override}: ")


@pytest.mark.parametrize("override", ["x=choice(", "x=choice()"])
def test_a_hydra_parse_error_becomes_a_one_line_space_error(override):
    with pytest.raises(sp.SpaceError) as e:
        sp.parse({}, [override])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("override, reason", [("x=choice(", "no viable alternative"),
                                              ("x=choice()", "empty choice is not legal")])
def test_a_hydra_parse_error_names_the_override_and_the_reason(override, reason):
    with pytest.raises(sp.SpaceError) as e:
        sp.parse({}, [override])
    assert override in str(e.value) and reason in str(e.value)


def test_parse_merges_config_params_and_command_line_and_keeps_fixed_as_typed():
    space, fixed = sp.parse({"lr": "interval(0.1, 0.2)", "width": "choice(4, 8)"},
                            ["width=choice(16, 32)", "depth=range(1, 4)", "a=1", "+b=2", "~c", "++d=3"])
    assert space == {"lr": FloatDistribution(0.1, 0.2), "width": CategoricalDistribution([16, 32]),
                     "depth": IntDistribution(1, 3)}
    assert fixed == ["a=1", "+b=2", "~c", "++d=3"]


def test_a_fixed_value_on_the_command_line_replaces_a_swept_param():
    space, fixed = sp.parse({"width": "choice(4, 8)", "lr": "interval(0.1, 0.2)"}, ["width=16"])
    assert space == {"lr": FloatDistribution(0.1, 0.2)}
    assert fixed == ["width=16"]


def test_a_forced_override_on_the_command_line_replaces_a_swept_param():
    space, fixed = sp.parse({"width": "choice(4, 8)"}, ["++width=16"])
    assert space == {}
    assert fixed == ["++width=16"]


def test_clean_removes_float_drift_only_on_stepped_floats():
    stepped = FloatDistribution(0.1, 0.3, step=0.1)
    assert 0.1 + 2 * 0.1 == 0.30000000000000004
    assert repr(sp.clean(0.1 + 2 * 0.1, stepped)) == "0.3"
    assert sp.clean(0.30000000000000004, FloatDistribution(0.0, 1.0)) == 0.30000000000000004
    assert sp.clean(7, IntDistribution(1, 10)) == 7


def test_overrides_format_values_and_add_params_missing_from_the_config():
    space = {"lr": FloatDistribution(0.1, 0.5, step=0.1), "flag": CategoricalDistribution([True, False]),
             "act": CategoricalDistribution([None, "relu"]), "model.width": IntDistribution(4, 16)}
    config = OmegaConf.create({"lr": 0.1, "flag": True, "act": "relu", "model": {"width": 4, "depth": 2}})
    study = optuna.create_study()
    study.enqueue_trial({"lr": 0.1 + 2 * 0.1, "flag": False, "act": None, "model.width": 8})
    trial = study.ask(space)
    assert trial.params["lr"] == 0.30000000000000004   # what Optuna hands back; the override must not carry it
    z = trial.suggest_float("z", 0, 1)
    trial.suggest_int("model.depth", 3, 3)
    trial.suggest_int("+extra", 1, 1)
    assert sorted(sp.overrides(trial, space, config)) == sorted([
        "lr=0.3", "flag=false", "act=null", "model.width=8", f"++z={z!r}", "model.depth=3", "+extra=1"])


@pytest.mark.parametrize("value", ["relu", "a b", "it's", "", "a:b", "a/b.c", 1e-05, -0.0, 3, True, None])
def test_overrides_read_back_as_the_same_value(value):
    study = optuna.create_study()
    space = {"x": CategoricalDistribution([value, "other"])}
    study.enqueue_trial({"x": value})
    [override] = sp.overrides(study.ask(space), space, OmegaConf.create({"x": None}))
    back = OverridesParser.create().parse_override(override).value()
    assert (back, type(back)) == (value, type(value))


@pytest.mark.parametrize("value", ["1", "1.5", "true", "null"])
def test_overrides_keep_a_string_that_looks_like_another_type_a_string(value):
    space, _ = sp.parse({}, [f"x=choice('{value}', other)"])
    assert space["x"].choices[0] == value
    study = optuna.create_study()
    study.enqueue_trial({"x": value})
    [override] = sp.overrides(study.ask(space), space, OmegaConf.create({"x": None}))
    back = OverridesParser.create().parse_override(override).value()
    assert (back, type(back)) == (value, str)


BASE = ["x=range(3)", "y=choice(a, b)", "a=1"]


@pytest.mark.parametrize("args, phrases", [
    (BASE, []),
    (["y=choice(a, b)", "x=range(3)", "a=1"], []),
    (["x=range(4)", "y=choice(a, b)", "a=1"], ["x's range changed"]),
    (BASE + ["z=interval(0.0, 1.0)"], ["z is newly swept"]),
    (["x=range(3)", "a=1"], ["y is no longer swept"]),
    (["x=range(3)", "y=choice(a, b)"], ["fixed overrides dropped: a=1"]),
    (BASE + ["+b=2"], ["fixed overrides added: +b=2"]),
    (["x=range(3)", "y=3", "a=2"], ["y is no longer swept", "fixed overrides dropped: a=1",
                                    "fixed overrides added: a=2 y=3"]),
])
def test_differences_name_each_change(args, phrases):
    stored = sp.identity(*sp.parse({}, BASE))
    assert sp.differences(stored, sp.identity(*sp.parse({}, args))) == phrases


def test_a_shuffled_choice_has_the_same_identity_on_every_run():
    random.seed(0)
    first = sp.identity(*sp.parse({}, ["x=shuffle(choice(a, b, c))"]))
    random.seed(1)
    second = sp.identity(*sp.parse({}, ["x=shuffle(choice(a, b, c))"]))
    assert sp.differences(first, second) == []


def test_check_identity_stores_accepts_same_and_refuses_a_change():
    study = optuna.create_study()
    first = sp.identity(*sp.parse({}, BASE))
    check_identity(study, first, accept_changes=False)
    assert study.user_attrs[IDENTITY] == first

    check_identity(study, sp.identity(*sp.parse({}, BASE)), accept_changes=False)

    changed = sp.identity(*sp.parse({}, ["x=range(4)", "y=choice(a, b)", "a=1"]))
    with pytest.raises(StudyError, match=r"x's range changed.*accept_changes=true"):
        check_identity(study, changed, accept_changes=False)
    assert study.user_attrs[IDENTITY] == first

    check_identity(study, changed, accept_changes=True)
    assert study.user_attrs[IDENTITY] == changed
    check_identity(study, changed, accept_changes=False)


def test_identity_survives_storage_so_an_unchanged_sweep_resumes(tmp_path):
    from sweeper.engine.study import open_storage
    path = str(tmp_path / "journal.log")
    identity = sp.identity(*sp.parse({}, BASE + ["lr=tag(log, interval(1e-3, 1.0))", "+b=2"]))
    check_identity(optuna.create_study(storage=open_storage(path), study_name="s"), identity, False)
    reloaded = optuna.load_study(study_name="s", storage=open_storage(path))
    check_identity(reloaded, identity, accept_changes=False)
