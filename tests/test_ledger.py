"""The trial ledger (sweeper/engine/ledger.py) against in-memory Optuna studies: which trials count towards n_trials.
Milliseconds each; the same rules under real processes are in test_reliability.py."""
import socket

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages import InMemoryStorage
from optuna.trial import TrialState

from conftest import sweeper_settings
from sweeper.engine.ledger import ASKS, Ledger
from sweeper.engine.space import SpaceError
from sweeper.engine.study import RETRY_DELAYS, StudyError, make_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {"lr": FloatDistribution(0.0, 1.0)}


def random_study(seed=0, storage=None):
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed), storage=storage)


def numbers(trials):
    return [t.number for t in trials]


def run_out(ledger, space=SPACE):
    """Ask and complete trials until the ledger says the sweep is done; return the trials it handed out."""
    asked = []
    while (trial := ledger.ask(space)) is not None:
        asked.append(trial)
        ledger.tell(trial, 0.5)
    return asked


def test_asks_stop_at_exactly_n_trials_and_failures_count():
    study = random_study()
    ledger = Ledger(study, 5)
    states = iter([TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED, TrialState.COMPLETE,
                   TrialState.COMPLETE])
    while (trial := ledger.ask(SPACE)) is not None:
        state = next(states)
        ledger.tell(trial, 0.5 if state == TrialState.COMPLETE else None,
                    state=None if state == TrialState.COMPLETE else state)
    assert len(study.trials) == 5   # the ask that returned None created no trial
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED,
                                               TrialState.COMPLETE, TrialState.COMPLETE]
    assert numbers(ledger.counted()) == [0, 1, 2, 3, 4]
    assert ledger.stop_reason is None


def test_waiting_trials_are_not_counted_until_asked():
    study = random_study()
    study.enqueue_trial({"lr": 0.25})
    study.enqueue_trial({"lr": 0.75})
    ledger = Ledger(study, 1)
    assert ledger.counted() == []
    trial = ledger.ask(SPACE)
    assert trial is not None and trial.params == {"lr": 0.25}
    ledger.tell(trial, 0.5)
    assert ledger.ask(SPACE) is None
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.WAITING]


def test_a_requeued_trial_runs_again_and_is_counted_once():
    study = random_study()
    ledger = Ledger(study, 3)
    first = ledger.ask(SPACE)
    ledger.tell(first, 0.5)
    interrupted = ledger.ask(SPACE)
    frozen = study.trials[interrupted.number]

    ledger.requeue(frozen, "interrupted by Ctrl-C")
    closed = study.trials[interrupted.number]
    assert closed.state == TrialState.FAIL
    assert closed.user_attrs["uncounted"] is True
    assert closed.user_attrs["reason"] == "interrupted by Ctrl-C"
    assert numbers(ledger.counted()) == [0]   # neither the closed trial nor its WAITING copy

    again = ledger.ask(SPACE)
    assert again.params == frozen.params
    assert study.trials[again.number].user_attrs["requeued_from"] == interrupted.number
    ledger.tell(again, 0.5)
    run_out(ledger)

    assert numbers(ledger.counted()) == [0, 2, 3]
    assert [t.state for t in ledger.counted()] == [TrialState.COMPLETE] * 3
    assert len(study.trials) == 4
    assert frozen.params in [t.params for t in ledger.finished()]


class RacingStorage(InMemoryStorage):
    """An in-memory storage that runs `before` once, just before it creates the next trial: another sweep's ask
    landing between this sweep's n_trials check and its trial."""
    before = None

    def create_new_trial(self, study_id, template_trial=None):
        if self.before is not None:
            before, self.before = self.before, None
            before()
        return super().create_new_trial(study_id, template_trial)


def test_of_two_asks_racing_for_the_last_place_the_later_is_surplus():
    storage = RacingStorage()
    study = random_study(storage=storage)
    a, b = Ledger(study, 2, worker="host-a:1"), Ledger(study, 2, worker="host-b:2")
    first = a.ask(SPACE)
    by_b = []
    storage.before = lambda: by_b.append(b.ask(SPACE))

    assert a.ask(SPACE) is None
    [second] = by_b
    assert (first.number, second.number) == (0, 1)
    surplus = study.trials[2]
    assert surplus.state == TrialState.FAIL
    assert surplus.user_attrs["uncounted"] is True
    assert surplus.user_attrs["reason"].startswith("surplus")
    assert surplus.user_attrs["worker"] == "host-a:1"
    assert numbers(a.counted()) == [0, 1]
    assert [t.state for t in a.running()] == [TrialState.RUNNING] * 2
    assert b.ask(SPACE) is None and len(study.trials) == 3


def test_once_both_choices_ran_duplicates_are_uncounted_and_the_space_is_exhausted():
    study = random_study(seed=0)
    ledger = Ledger(study, 10)
    space = {"act": CategoricalDistribution(["relu", "tanh"])}
    asked = run_out(ledger, space)

    assert sorted(t.params["act"] for t in asked) == ["relu", "tanh"]
    assert "exhausted" in ledger.stop_reason
    assert numbers(ledger.counted()) == numbers(asked)
    uncounted = [t for t in study.trials if t.user_attrs.get("uncounted")]
    assert all(t.state == TrialState.FAIL and t.user_attrs["reason"].startswith("duplicate") for t in uncounted)
    # the last ask gave up after exactly ASKS duplicates in a row
    assert len(study.trials) - (max(numbers(asked)) + 1) == ASKS
    n = len(study.trials)
    assert ledger.ask(space) is None and len(study.trials) == n


def test_a_failed_trials_params_may_be_asked_again():
    study = random_study()
    ledger = Ledger(study, 3)
    space = {"act": CategoricalDistribution(["relu"])}
    failed = ledger.ask(space)
    ledger.tell(failed, state=TrialState.FAIL)
    retried = ledger.ask(space)
    assert retried is not None and retried.params == {"act": "relu"}
    ledger.tell(retried, 0.5)
    assert ledger.ask(space) is None
    assert numbers(ledger.counted()) == [0, 1]
    assert len(study.trials) == 2 + ASKS


def test_a_running_trials_params_are_not_asked_again():
    study = random_study()
    ledger = Ledger(study, 3)
    space = {"act": CategoricalDistribution(["relu"])}
    running = ledger.ask(space)
    assert ledger.ask(space) is None
    assert numbers(ledger.counted()) == [running.number]
    assert study.trials[running.number].state == TrialState.RUNNING
    assert [t.user_attrs["reason"] for t in study.trials[1:]] == ["duplicate of another trial's params"] * ASKS


def test_fail_orphans_requeues_only_dead_sweeps_of_this_host():
    study = random_study()
    ledger = Ledger(study, 10, worker="me:1")
    host = socket.gethostname()
    workers = [f"{host}:111", f"{host}:222", f"not-{host}:111"]
    trials = [ledger.ask(SPACE) for _ in workers]
    for trial, worker in zip(trials, workers):
        trial.set_user_attr("worker", worker)

    assert ledger.fail_orphans(lambda pid: pid != 111) == [0]

    dead = study.trials[0]
    assert dead.state == TrialState.FAIL and dead.user_attrs["uncounted"] is True
    assert dead.user_attrs["reason"] == f"interrupted: its sweep ({host}:111) died"
    assert [t.state for t in study.trials[1:3]] == [TrialState.RUNNING, TrialState.RUNNING]
    assert ledger.fail_orphans(lambda pid: pid != 111) == []
    [waiting] = study.get_trials(states=(TrialState.WAITING,))
    assert waiting.user_attrs["requeued_from"] == 0
    assert ledger.ask(SPACE).params == dead.params


def test_running_mine_is_only_this_workers_trials():
    study = random_study()
    a, b = Ledger(study, 10, worker="host:1"), Ledger(study, 10, worker="host:2")
    asked = [a.ask(SPACE), b.ask(SPACE), a.ask(SPACE)]
    a.tell(asked[2], 0.5)
    assert numbers(a.running(mine=True)) == [0]
    assert numbers(b.running(mine=True)) == [1]
    assert numbers(a.running()) == [0, 1]
    assert [t.user_attrs["worker"] for t in study.trials] == ["host:1", "host:2", "host:1"]


def test_stop_keeps_the_first_reason_and_ends_asks():
    study = random_study()
    ledger = Ledger(study, 10)
    ledger.stop("3 trials reached the target")
    ledger.stop("interrupted")
    assert ledger.stop_reason == "3 trials reached the target"
    assert ledger.ask(SPACE) is None and study.trials == []


def test_grid_exhaustion_through_tell_stops_instead_of_raising():
    study = optuna.create_study(sampler=optuna.samplers.GridSampler({"act": ["relu", "tanh"]}, seed=0))
    ledger = Ledger(study, 10)
    space = {"act": CategoricalDistribution(["relu", "tanh"])}
    asked = run_out(ledger, space)
    assert sorted(t.params["act"] for t in asked) == ["relu", "tanh"]
    assert ledger.stop_reason == "every point of the grid has been tried"
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE]


def test_tell_passes_on_runtime_errors_other_than_a_grid_stop():
    # only GridSampler's "Study.stop" RuntimeError means the grid is done; any other one must reach the sweep
    study = random_study()
    ledger = Ledger(study, 10)
    trial = ledger.ask(SPACE)

    def broken_tell(*args, **kwargs):
        raise RuntimeError("the storage went away")
    study.tell = broken_tell
    with pytest.raises(RuntimeError, match="the storage went away"):
        ledger.tell(trial, 0.5)
    assert ledger.stop_reason is None


def test_extend_is_called_with_each_asked_trial():
    study = random_study()
    seen = []

    def extend(trial):
        seen.append(trial.number)
        trial.suggest_int("model.depth", 2, 5)

    ledger = Ledger(study, 3, extend=extend)
    asked = run_out(ledger)
    assert seen == numbers(asked) == [0, 1, 2]
    assert all(set(t.params) == {"lr", "model.depth"} and 2 <= t.params["model.depth"] <= 5
               for t in ledger.finished())


def test_others_beating_are_other_sweeps_trials_that_had_a_heartbeat():
    from sweeper.engine.heartbeat import BEATS
    study = random_study()
    me, other = Ledger(study, 10, worker="host:1"), Ledger(study, 10, worker="host:2")
    mine = me.ask(SPACE)
    other.ask(SPACE)                  # silent: never had a heartbeat
    beating = other.ask(SPACE)
    mine.set_user_attr(BEATS, 60)
    beating.set_user_attr(BEATS, 60)
    # a trial from a sweep without heartbeats may stay RUNNING for good: waiting on it could never end
    assert numbers(me.others_beating()) == [beating.number]


def test_a_trial_whose_heartbeat_went_stale_is_failed_requeued_and_no_longer_counted(tmp_path):
    import time
    from sweeper.engine.study import open_storage
    storage = open_storage(f"sqlite:///{tmp_path}/hb.db", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    ledger = Ledger(study, 2, worker="elsewhere:1")   # another host: the pid check cannot see it
    stale = ledger.ask(SPACE)
    storage.record_heartbeat(stale._trial_id)
    ledger.recover()
    assert study.trials[stale.number].state == TrialState.RUNNING   # within its grace period
    time.sleep(2.5)
    ledger.recover()
    assert study.trials[stale.number].state == TrialState.FAIL
    [waiting] = study.get_trials(states=(TrialState.WAITING,))
    assert waiting.user_attrs["requeued_from"] == stale.number
    assert ledger.counted() == []                                  # neither the failed trial nor its queued re-run
    assert ledger.ask(SPACE).params == stale.params


# ---------------------------------------------------------------- a result that comes too late
def sweep_for(study, n_trials=2):
    """The sweep's own tell path (sweeper/engine/sweep.py) on an in-memory study, as the plugin's defaults configure it."""
    from sweeper.engine.policy import SweepInfo, TaskValue
    from sweeper.engine.sweep import OptunaSweep
    sweep = OptunaSweep(**sweeper_settings(direction=study.direction.name.lower(), n_trials=n_trials))
    sweep.ledger, sweep.policy = Ledger(study, n_trials), TaskValue(SweepInfo({}, 1, None, None))
    return sweep


@pytest.mark.parametrize("result", [("completed", 0.25), ("failed", None), ("pruned", None)])
def test_a_late_result_from_a_sweep_that_was_only_slow_is_dropped_with_a_warning(result, caplog):
    from sweeper.engine.worker import JobResult
    study = random_study()
    sweep = sweep_for(study)
    trial = sweep.ledger.ask(SPACE)
    # meanwhile a sweep elsewhere heard no heartbeat from this one: it failed the trial and queued its params again
    study.tell(trial.number, state=TrialState.FAIL)
    study.enqueue_trial(trial.params, user_attrs={"requeued_from": trial.number})
    status, value = result
    sweep.tell(study, trial, sweep.policy.judge(JobResult(status, value, error=None if value else f"{status} late"), None))
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"trial {trial.number} was failed by another sweep" in warning and "result is dropped" in warning
    assert study.trials[trial.number].state == TrialState.FAIL and study.trials[trial.number].user_attrs == {
        "worker": trial.user_attrs["worker"]}                # nothing of the late run was written
    assert sweep.last_failure is None                        # a dropped result is no failure of this sweep
    rerun = sweep.ledger.ask(SPACE)
    assert rerun.params == trial.params and rerun.user_attrs["requeued_from"] == trial.number


# ---------------------------------------------------------------- opening the study
@pytest.fixture
def sleeps(monkeypatch):
    """The back-off's sleeps, recorded instead of waited out."""
    import sweeper.engine.study
    slept = []
    monkeypatch.setattr(sweeper.engine.study.time, "sleep", slept.append)
    return slept


GRID, TPE = {"_target_": "optuna.samplers.GridSampler"}, {"_target_": "optuna.samplers.TPESampler"}
OPENINGS = [   # storage ({tmp}: the test's folder, {port}: one nothing listens on), sampler, error, its line, retried
    ("sqlite:///{tmp}/s.db", GRID, SpaceError, r"^lr: sampler=grid needs params with finitely many values", False),
    (None, {**TPE, "n_startup_trial": 5}, StudyError, r"^hydra.sweeper.sampler cannot be built: .*n_startup_trial",
     False),
    ("sqlite:///{tmp}/no/such/s.db", TPE, StudyError, r"cannot be opened: the folder .*/no/such does not exist",
     False),
    ("postgresql+psycopg://postgres@127.0.0.1:{port}/nobody", TPE, StudyError,
     r"^hydra.sweeper.storage='postgresql.*' cannot be opened: .*", True),
]


@pytest.mark.parametrize("storage,sampler,error,says,retried", OPENINGS,
                         ids=["grid given an interval", "bad sampler", "missing folder", "refused connection"])
def test_opening_a_study_retries_only_what_a_retry_can_cure(tmp_path, sleeps, storage, sampler, error, says, retried):
    from servers import free_port
    url = storage and storage.format(tmp=tmp_path, port=free_port())
    with pytest.raises(error, match=says):
        make_study("s", url, ["minimize"], sampler, {"_target_": "optuna.pruners.NopPruner"}, SPACE)
    assert sleeps == (list(RETRY_DELAYS) if retried else [])   # recorded, never waited out


# ---------------------------------------------------------------- seeded samplers on a shared study
def seeded(storage, name="shared"):
    from sweeper.engine.study import make_study
    cfg = {"_target_": "optuna.samplers.TPESampler", "seed": 7, "n_startup_trials": 2}
    return make_study(name, storage, ["minimize"], cfg, {"_target_": "optuna.pruners.NopPruner"}, SPACE)


def test_a_seeded_sweep_proposes_the_same_params_in_the_same_order_every_time(tmp_path):
    runs = []
    for n in range(2):
        study = seeded(f"sqlite:///{tmp_path}/run{n}.db")
        params = []
        for _ in range(4):
            trial = study.ask(SPACE)
            params.append(trial.params)
            study.tell(trial, trial.params["lr"] ** 2)
        runs.append(params)
    assert runs[0] == runs[1] and len({p["lr"] for p in runs[0]}) == 4


def test_sweeps_started_together_on_one_study_with_one_seed_propose_apart(tmp_path):
    # four sweeps that opened the study at the same moment, asking in turn: each trial gets seed + its number
    url = f"sqlite:///{tmp_path}/shared.db"
    sweeps = [seeded(url) for _ in range(4)]
    asked = [s.ask(SPACE) for s in sweeps]
    assert len({t.params["lr"] for t in asked}) == 4
    resumed = seeded(url)   # and a resumed study does not replay its first proposals
    assert resumed.ask(SPACE).params["lr"] not in {t.params["lr"] for t in asked}
