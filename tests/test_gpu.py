"""The captured training step on a CUDA GPU (sweeper/mnist/cuda_graph.py): it captures and replays, replays train as the
plain eager loop does, and a failed capture falls back to eager training. Skipped without CUDA.

    python -m pytest -q -n 0 tests/test_gpu.py          # benchmarks/gpu_check.sh runs it first
"""
import logging

import pytest
import torch
from hydra.utils import instantiate

from conftest import TINY, make_cfg
from sweeper.mnist import cuda_graph, data
from sweeper.mnist.static_step import Step
from sweeper.mnist.trial import eager_step, make_scheduler, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def start(cfg, images):
    """Model, optimizer, generator and training images on the GPU, seeded in train()'s order."""
    torch.manual_seed(cfg.seed)
    model = instantiate(cfg.model).to(CUDA, memory_format=torch.channels_last)
    opt = instantiate(cfg.optimizer, params=model.parameters())
    (x, y), _ = data.load(cfg.data.root, False, images, 100, cfg.seed, CUDA)
    return model, opt, torch.Generator(device=CUDA).manual_seed(cfg.seed), x, y


def schedule(cfg, epochs):
    return lambda params, steps: make_scheduler(cfg.scheduler, instantiate(cfg.optimizer, params=params), epochs, steps)


def capture(cfg, model, opt, g, x, y, epochs):
    return cuda_graph.capture(model, opt, schedule(cfg, epochs), x, y, cfg.augment, g, True, 64, epochs, cfg.seed)


def test_the_step_never_waits_for_the_host():
    """Any sync (.item(), a data-dependent shape) would break the capture: sync debug mode turns one into an error."""
    cfg = make_cfg()
    model, opt, g, x, y = start(cfg, 640)
    step = Step(model, opt, schedule(cfg, 1), x, y, cfg.augment, g, True, 64, 1)
    step.start_epoch(torch.randperm(len(y), generator=g, device=CUDA))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert step.k.item() == 3


def test_capture_undoes_its_warm_up_and_replays_train():
    cfg = make_cfg()
    model, opt, g, x, y = start(cfg, 2000)
    seeded = {k: v.clone() for k, v in model.state_dict().items()}
    step = capture(cfg, model, opt, g, x, y, epochs=2)
    assert step is not None and step.graph is not None and step.steps == 2000 // 64
    for k, v in model.state_dict().items():   # the warm-up steps trained; capture put everything back
        assert torch.equal(v, seeded[k]), k
    assert step.k.item() == 0
    for epoch in range(2):
        step.start_epoch(torch.randperm(len(y), generator=g, device=CUDA))
        for _ in range(step.steps):
            step.replay()
        losses = (step.losses / 64).tolist()
        assert all(0 < v < 5 for v in losses), losses
    assert step.k.item() == 2 * step.steps
    assert sum(losses[-5:]) < sum(losses[:5]), losses   # it learns
    assert 0.5 < step.correct.item() / (step.steps * 64) <= 1


def test_replays_give_the_plain_eager_loops_losses():
    """20 of train.py's eager steps (torch.optim and the scheduler) against 20 replays, from the same seed: the
    same batches, augmentation, dropout masks and lr, so the same losses within bf16 noise."""
    cfg = make_cfg()
    n, batch = 1280, 64
    model, opt, g, x, y = start(cfg, n)
    sched = make_scheduler(cfg.scheduler, opt, 1, n // batch)
    perm = torch.randperm(n, generator=g, device=CUDA)
    eager = []
    for s in range(n // batch):
        idx = perm[s * batch:(s + 1) * batch]
        loss, _ = eager_step(model, opt, sched, x[idx], y[idx], cfg.augment, g, True)
        eager.append(loss.item())
    after_eager = torch.rand(4, generator=g, device=CUDA)

    model, opt, g, x, y = start(cfg, n)
    step = capture(cfg, model, opt, g, x, y, epochs=1)
    step.start_epoch(torch.randperm(n, generator=g, device=CUDA))
    for _ in range(step.steps):
        step.replay()
    replayed = (step.losses / batch).tolist()
    assert len(replayed) == len(eager) == 20
    # the augmentation's generator moved on with each replay as with each eager step: registered with the graph
    # (by torch itself from 2.14, by cuda_graph.capture before), never replaying the captured step's draws
    assert torch.equal(torch.rand(4, generator=g, device=CUDA), after_eager)
    assert replayed[0] == pytest.approx(eager[0], rel=1e-3)
    assert replayed == pytest.approx(eager, rel=3e-2, abs=3e-2)


def test_a_graphed_trial_learns_and_repeats_closely(tmp_path):
    runs = [train(make_cfg(*TINY, "trainer.epochs=2", "device=cuda"), str(tmp_path / str(i))) for i in range(2)]
    for m in runs:
        assert m["status"] == "ok" and m["cuda_graph"] is True and m["final_test_acc"] > 0.6, m["epochs"]
    a, b = ([e["train_loss"] for e in m["epochs"]] for m in runs)
    assert a == pytest.approx(b, rel=1e-2)   # same seed: same data, draws and weights; not bit for bit


def test_a_failed_capture_trains_eagerly_from_a_fresh_start(tmp_path, monkeypatch, caplog):
    """A host sync inside the capture breaks it, as SGD's foreach .item() did for issue 12's probe; the trial goes on
    eagerly, and from a clean state: the same numbers as trainer.cuda_graph=false."""
    real = data.augment

    def syncing(x, aug, g):
        out = real(x, aug, g)
        if torch.cuda.is_current_stream_capturing():
            out.sum().item()
        return out

    monkeypatch.setattr(data, "augment", syncing)
    overrides = [*TINY, "trainer.epochs=2", "device=cuda"]
    with caplog.at_level(logging.WARNING):
        m = train(make_cfg(*overrides, "trainer.cuda_graph=true"), str(tmp_path / "fallback"))
    warned = [r.getMessage() for r in caplog.records if r.name == "sweeper.mnist.cuda_graph"]
    assert len(warned) == 1 and "capture failed" in warned[0] and "\n" not in warned[0], warned
    assert m["status"] == "ok" and m["cuda_graph"] is False and m["final_test_acc"] > 0.6, m["epochs"]
    ref = train(make_cfg(*overrides, "trainer.cuda_graph=false"), str(tmp_path / "eager"))
    assert [e["train_loss"] for e in m["epochs"]] == pytest.approx([e["train_loss"] for e in ref["epochs"]], rel=1e-2)
