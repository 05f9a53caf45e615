"""The board a sweep's slots share (sweeper/engine/slots.py): a trial's extra runs wait there, those of the trial
that hit first go first, and the first run that settles a trial cancels the rest. No sweep, no storage: the unit
alone."""
from pathlib import Path
from types import SimpleNamespace

from sweeper.engine.policy import Verdict
from sweeper.engine.slots import Board


def trial(number):
    return SimpleNamespace(number=number)


def board_with(*numbers):
    b = Board()
    for n in numbers:
        b.add(trial(n), [f"x={n}"], Path(str(n)))
    return b


def runs(n, seeds):
    return [([f"x={n}", f"seed={s}"], Path(f"{n}/seed{s}")) for s in seeds]


def test_extra_runs_wait_for_slots_the_first_hit_first():
    b = board_with(3, 5)
    assert b.take() is None and b.busy()          # no trial's own run has ended yet
    b.more(5, Verdict("ok", [0.995]), runs(5, (1, 2)))
    b.more(3, Verdict("ok", [0.996]), runs(3, (1,)))   # trial 3 hit later: it waits for trial 5's seeds
    taken = [b.take() for _ in range(4)]
    assert [(o.trial.number, index) for o, index, _, _ in taken[:3]] == [(5, 1), (5, 2), (3, 1)]
    assert taken[3] is None
    assert taken[0][2] == ["x=5", "seed=1"] and taken[0][3] == Path("5/seed1")


def test_a_slot_that_got_no_trial_stays_while_another_is_adding_one():
    b = Board()
    b.asks(+1)                                     # another slot asked and got trial 0, and has not added it yet
    assert b.busy()                                # so a slot whose ask came back empty waits for its extra runs
    b.add(trial(0), ["x=0"], Path("0"))
    b.asks(-1)
    assert b.busy()
    b.close(0)
    assert not b.busy()


def test_the_run_that_settles_a_trial_cancels_the_others_and_later_results_are_left_out():
    b = board_with(0)
    b.more(0, Verdict("ok", [0.995]), runs(0, (1, 2, 3)))
    o, first, _, _ = b.take()
    _, second, _, second_dir = b.take()            # seeds 1 and 2 run; seed 3 waits
    miss = lambda v: v.values[0] < 0.994         # noqa: E731
    cancel, complete = b.ended(o, first, Verdict("ok", [0.99]), miss)
    assert [d for _, d in cancel] == [second_dir] and not complete and o.settled.startswith("cancelled")
    assert b.take() is None                        # seed 3 never starts
    cancel, complete = b.ended(o, second, Verdict("interrupted", reason="cancelled"), miss)
    assert cancel == [] and complete
    assert [v.values for v in o.verdicts()] == [[0.995], [0.99]]   # the cancelled run is not among them


def test_a_trial_is_complete_once_every_extra_run_has_ended():
    b = board_with(0)
    b.more(0, Verdict("ok", [0.995]), runs(0, (1, 2)))
    o, i, _, _ = b.take()
    _, j, _, _ = b.take()
    hit = lambda v: False                          # noqa: E731  (nothing settles it early)
    assert b.ended(o, j, Verdict("ok", [0.996]), hit) == ([], False)
    assert b.ended(o, i, Verdict("ok", [0.997]), hit) == ([], True)
    assert [v.values for v in o.verdicts()] == [[0.995], [0.997], [0.996]]   # in seed order, not end order
    b.close(0)
    assert not b.busy()
