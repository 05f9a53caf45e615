"""Tiny real trainings through `train()`: they must learn, repeat exactly, and write the metrics.json schema."""
import json

import pytest
import torch

from sweeper.mnist.checks import ConfigError
from sweeper.mnist.trial import Rejected, TrialFailed, train

EPOCH_KEYS = {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"}


def read(path):
    return json.loads((path / "metrics.json").read_text())


def test_tiny_run_learns_and_writes_schema(tiny, tmp_path):
    m = train(tiny("trainer.epochs=2"), str(tmp_path), overrides=["trainer.epochs=2"])
    on_disk = read(tmp_path)
    assert on_disk == json.loads(json.dumps(m))
    assert on_disk["status"] == "ok" and on_disk["reason"] is None
    assert isinstance(on_disk["params"], int) and 3000 < on_disk["params"] < 20000
    assert on_disk["seed"] == 0 and on_disk["device"] == "cpu" and on_disk["overrides"] == ["trainer.epochs=2"]
    assert on_disk["precision"] in ("fp32", "bf16")
    assert on_disk["cuda_graph"] is False   # the CPU path never captures
    assert [e["epoch"] for e in on_disk["epochs"]] == [1, 2]
    for e in on_disk["epochs"]:
        assert set(e) == EPOCH_KEYS
        assert 0 <= e["train_acc"] <= 1 and 0 <= e["test_acc"] <= 1 and e["lr"] > 0 and e["seconds"] > 0
    assert on_disk["final_test_acc"] == on_disk["epochs"][-1]["test_acc"]
    assert on_disk["best_test_acc"] == max(e["test_acc"] for e in on_disk["epochs"])
    assert on_disk["first_epoch_at_target"] is None or on_disk["first_epoch_at_target"] in (1, 2)
    assert on_disk["wall_seconds"] > 0
    assert on_disk["final_test_acc"] > 0.6, on_disk["epochs"]          # chance is 0.1
    state = torch.load(tmp_path / "model.pt")
    assert sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k) == m["params"]


@pytest.mark.parametrize("option", ["model=slim trainer.precision=fp32", "model=lean trainer.precision=fp32",
                                    "optimizer=adamw scheduler=step augment=seed trainer.precision=bf16"])
def test_other_options_learn(tiny, tmp_path, option):
    m = train(tiny(*option.split(), "trainer.epochs=2"), str(tmp_path))
    assert m["status"] == "ok" and m["final_test_acc"] > 0.3, m["epochs"]
    assert m["precision"] == option.split("trainer.precision=")[1]


def test_same_seed_same_numbers(tiny, tmp_path):
    def numbers(m):
        return [{k: v for k, v in e.items() if k != "seconds"} for e in m["epochs"]]
    a = train(tiny("data.train_subset=1000"), str(tmp_path / "a"))
    b = train(tiny("data.train_subset=1000"), str(tmp_path / "b"))
    c = train(tiny("data.train_subset=1000", "seed=1"), str(tmp_path / "c"))
    assert numbers(a) == numbers(b)
    assert numbers(a) != numbers(c)


def test_over_budget_is_rejected_before_training(tiny, tmp_path):
    with pytest.raises(Rejected, match=r"model has \d+ parameters, over budget.max_params=20000"):
        train(tiny("model.width=40", "data.root=/nonexistent"), str(tmp_path))   # rejected before any data is read
    m = read(tmp_path)
    assert m["status"] == "rejected" and m["params"] > 20000 and m["epochs"] == [] and m["final_test_acc"] is None
    assert str(m["params"]) in m["reason"] and "20000" in m["reason"]
    assert not (tmp_path / "model.pt").exists()


def test_non_finite_loss_fails_at_its_step(tiny, tmp_path):
    with pytest.raises(TrialFailed, match=r"non-finite loss at epoch 1, step \d+/32"):
        train(tiny("optimizer.lr=1e20", "scheduler=none", "optimizer.nesterov=false"), str(tmp_path))
    m = read(tmp_path)
    assert m["status"] == "failed" and "epoch 1, step" in m["reason"] and m["epochs"] == []


def test_cuda_graph_true_needs_cuda(tiny, tmp_path):
    with pytest.raises(ConfigError, match=r"^trainer.cuda_graph=True is not allowed: true needs device=cuda"):
        train(tiny("device=cpu", "trainer.cuda_graph=true"), str(tmp_path))


@pytest.mark.parametrize("losses,epoch_loss,says", [
    ([2.3, float("nan"), 1e30], None, "diverged: non-finite loss at epoch 3, step 2/4; lower optimizer.lr (now 100)"),
    ([2.3, 2.0, float("inf"), 1.0], 1e30,
     "diverged: non-finite loss at epoch 3, step 3/4; lower optimizer.lr (now 100)"),
    ([1e16, 2e16, 1e16, 1e16], 1.25e16, "diverged: training loss 1.2e+16 at epoch 3; lower optimizer.lr (now 100)"),
    ([1e16, 2e16, 1e16], None, None),         # mid-epoch only a non-finite loss counts
    ([64.0, 63.0, 65.0, 64.0], 64.0, None),   # hopeless but stable (AdamW at lr 10): not diverged
])
def test_divergence_takes_either_form(losses, epoch_loss, says):
    from sweeper.mnist.trial import diverged
    assert diverged(torch.tensor(losses), 3, 4, 100, epoch_loss) == says


def test_a_pruner_that_would_stop_every_epoch_stops_all_but_the_last(tiny, tmp_path):
    # the callback says "stop" whenever it may: after epoch 1 of 2 the trial is pruned; a 1-epoch trial, whose only
    # report is its last, ends ok with its weights
    asked = []

    def report(epoch, acc, may_prune):
        asked.append((epoch, may_prune))
        return may_prune
    from sweeper.mnist.trial import Pruned
    with pytest.raises(Pruned, match="pruned after epoch 1 of 2"):
        train(tiny("trainer.epochs=2"), str(tmp_path / "two"), report=report)
    assert asked == [(1, True)] and read(tmp_path / "two")["status"] == "pruned"
    asked.clear()
    m = train(tiny("trainer.epochs=1"), str(tmp_path / "one"), report=report)
    assert asked == [(1, False)] and m["status"] == "ok" and (tmp_path / "one" / "model.pt").exists()


def test_report_on_the_last_step_records_the_value_without_asking_the_pruner():
    import optuna

    from sweeper.engine import worker
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(lower=10.0))   # prunes anything below 10
    trial = study.ask()
    with worker.bound(trial):
        assert worker.report(1.0, 1) is True
        assert worker.report(2.0, 2, may_prune=False) is False
    assert study.trials[0].intermediate_values == {1: 1.0, 2: 2.0}
