"""The CUDA-graph step's pure tensor logic, on CPU (sweeper/mnist/static_step.py): its lr table is the torch scheduler's,
its updates are torch.optim's, and one step of it is one step of the plain loop in sweeper/mnist/trial.py. Then
cuda_graph.capture's bookkeeping around the capture, with torch.cuda's calls faked (tests/test_gpu.py does it for real).

    python -m pytest -q -n 0 tests/test_static_step.py
"""
import contextlib
import logging

import pytest
import torch
from hydra.utils import instantiate

from conftest import make_cfg, options
from sweeper.mnist import data
from sweeper.mnist.cuda_graph import WARMUP_STEPS, capture, registers_generators_itself
from sweeper.mnist.static_step import Step, graph_safe, schedule_table
from sweeper.mnist.trial import eager_step, make_scheduler

OPTIMIZERS = ["optimizer=sgd", "optimizer=sgd optimizer.nesterov=false optimizer.weight_decay=0.01",
              "optimizer=sgd optimizer.momentum=0 optimizer.nesterov=false", "optimizer=adamw"]


def schedule(cfg, epochs):
    """What train.py hands the graph: the run's scheduler on a fresh optimizer over `params`."""
    return lambda params, steps: make_scheduler(cfg.scheduler, instantiate(cfg.optimizer, params=params), epochs, steps)


def tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))


@pytest.mark.parametrize("scheduler", options("scheduler"))
@pytest.mark.parametrize("optimizer", ["optimizer=sgd", "optimizer=adamw"])
def test_the_table_holds_what_the_scheduler_sets_before_each_step(scheduler, optimizer):
    cfg = make_cfg(optimizer, f"scheduler={scheduler}", *(["scheduler.step_size=1"] * (scheduler == "step")))
    epochs, steps = 3, 7
    opt = instantiate(cfg.optimizer, params=tiny_model().parameters())
    sched = make_scheduler(cfg.scheduler, opt, epochs, steps)
    used = []
    for _ in range(epochs * steps):
        group = opt.param_groups[0]
        used.append((group["lr"], group["betas"][0] if "betas" in group else group["momentum"]))
        opt.step()
        sched.step()
    table = schedule_table(lambda p: schedule(cfg, epochs)(p, steps), epochs * steps)
    assert table.tolist() == [list(u) for u in used]
    assert table.dtype == torch.float64 and len(set(table[:, 0].tolist())) > (scheduler != "none")


@pytest.mark.parametrize("scheduler", ["onecycle", "step", "cosine"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_the_graph_safe_update_is_torch_optims(optimizer, scheduler):
    """Same gradients into both for 30 steps: OneCycle cycles momentum / beta1 too, and the table must follow."""
    cfg = make_cfg(*optimizer.split(), f"scheduler={scheduler}", *(["scheduler.step_size=1"] * (scheduler == "step")))
    epochs, steps = 3, 10
    ref, mine = tiny_model(), tiny_model()
    opt = instantiate(cfg.optimizer, params=ref.parameters())
    sched = make_scheduler(cfg.scheduler, opt, epochs, steps)
    table = schedule_table(lambda p: schedule(cfg, epochs)(p, steps), epochs * steps)
    params = list(mine.parameters())
    update = graph_safe(instantiate(cfg.optimizer, params=mine.parameters()), params, table)
    g = torch.Generator().manual_seed(1)
    for k in range(epochs * steps):
        for a, b in zip(ref.parameters(), params):
            a.grad = torch.randn(a.shape, generator=g)
            b.grad = a.grad.clone()
        opt.step()
        sched.step()
        update.step(torch.tensor([k]))
    for a, b in zip(ref.parameters(), params):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert not torch.equal(params[0], tiny_model()[0].weight)   # it did train


def test_other_optimizers_and_settings_are_refused():
    params = list(tiny_model().parameters())
    table = torch.zeros(4, 2, dtype=torch.float64)
    for opt in [torch.optim.RMSprop(params), torch.optim.SGD(params, momentum=0.9, dampening=0.1),
                torch.optim.AdamW(params, amsgrad=True)]:
        with pytest.raises(ValueError, match="no graph-safe update"):
            graph_safe(opt, params, table)


def images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("option", ["affine", "seed", "rotate"])
def test_the_inverse_by_factors_is_torch_linalgs(option):
    """CUDA inverts the augmentation's affine factor by factor (a CUDA graph may not capture torch.linalg's LU)."""
    aug = make_cfg(f"augment={option}").augment
    x, _ = images(256)
    by_linalg = data.augment(x, aug, torch.Generator().manual_seed(3), by_factors=False)
    by_factors = data.augment(x, aug, torch.Generator().manual_seed(3), by_factors=True)
    torch.testing.assert_close(by_factors, by_linalg, rtol=0, atol=1e-4)
    assert torch.equal(data.augment(x, aug, torch.Generator().manual_seed(3)), by_linalg)   # the CPU's default


def test_an_epoch_is_full_batches_and_the_partial_one_is_dropped():
    cfg = make_cfg()
    x, y = images(150)
    model = instantiate(cfg.model).to(memory_format=torch.channels_last)
    opt = instantiate(cfg.optimizer, params=model.parameters())
    step = Step(model, opt, schedule(cfg, 2), x, y, cfg.augment, torch.Generator(), False, 64, 2)
    assert step.steps == 2 and len(step.lrs) == 2 * 2   # the schedule spans the steps that run, not ceil(150 / 64)
    perm = torch.randperm(150)
    step.start_epoch(perm)
    assert step.plan.tolist() == perm[:128].view(2, 64).tolist()
    with pytest.raises(ValueError, match="less than one batch"):
        Step(model, opt, None, x[:10], y[:10], cfg.augment, torch.Generator(), False, 64, 2)


# small peak lrs: on random images a large lr turns float rounding (the updates add in another order) into 1e-3
@pytest.mark.parametrize("optimizer", ["optimizer=sgd optimizer.lr=0.01", "optimizer=adamw optimizer.lr=0.001"])
def test_a_step_is_a_step_of_the_plain_loop(optimizer):
    """20 steps over 2 epochs of the plain loop's step (sweeper/mnist/trial.py's eager_step) against Step, from the same
    weights and generators: the same batches, augmentation, dropout masks and lr, so the same losses up to float
    rounding."""
    torch.set_num_threads(1)   # as train() sets it: the test's numbers do not depend on which tests ran before
    cfg = make_cfg(*optimizer.split(), "model.dropout=0.1")
    x, y = images(640)
    batch, epochs, steps = 64, 2, 10

    def start():
        torch.manual_seed(0)
        model = instantiate(cfg.model).to(memory_format=torch.channels_last)
        opt = instantiate(cfg.optimizer, params=model.parameters())
        return model, opt, torch.Generator().manual_seed(0)

    model, opt, g = start()
    sched = make_scheduler(cfg.scheduler, opt, epochs, steps)
    plain = []
    for epoch in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for s in range(steps):
            idx = perm[s * batch:(s + 1) * batch]
            loss, _ = eager_step(model, opt, sched, x[idx], y[idx], cfg.augment, g, False)
            plain.append(loss.item())

    model2, opt2, g2 = start()
    step = Step(model2, opt2, schedule(cfg, epochs), x, y, cfg.augment, g2, False, batch, epochs)
    mine = []
    for epoch in range(epochs):
        step.start_epoch(torch.randperm(len(y), generator=g2))
        for s in range(steps):
            step()
        mine += (step.losses / batch).tolist()
    assert step.k.item() == epochs * steps
    assert mine[0] == pytest.approx(plain[0], rel=1e-6)   # the same batch, augmentation and dropout mask
    assert mine == pytest.approx(plain, rel=2e-4)
    for a, b in zip(model.parameters(), model2.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------- cuda_graph.capture's bookkeeping, CUDA faked
class FakeStream:
    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, other):
        pass


class FakeGraph:
    def register_generator_state(self, g):   # what torch before 2.14 needs for the augmentation's generator
        pass


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda's capture calls replaced: the 'capture' runs the step for real (a real one records it without
    running it), so whatever it changes must be undone as the warm-up's is."""
    seen = dict(seeds=[], fail=None)

    @contextlib.contextmanager
    def graph(cuda_graph):
        if seen["fail"]:
            raise RuntimeError(seen["fail"])
        yield

    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a: FakeStream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", graph)
    monkeypatch.setattr(torch.cuda, "manual_seed", seen["seeds"].append)
    return seen


@pytest.mark.parametrize("n,warm_up", [(256, WARMUP_STEPS), (128, 2)])
def test_capture_undoes_the_warm_up_and_reseeds(fake_cuda, monkeypatch, n, warm_up):
    """128 images are 2 steps in all: a third warm-up step would read past the lr table."""
    cfg = make_cfg("optimizer=adamw")
    x, y = images(n)
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(memory_format=torch.channels_last)
    seeded = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(5)
    calls = []
    monkeypatch.setattr(Step, "__call__", lambda self, real=Step.__call__: (calls.append(1), real(self)))
    step = capture(model, instantiate(cfg.optimizer, params=model.parameters()), schedule(cfg, 1),
                   x, y, cfg.augment, g, False, 64, 1, 7)
    assert step is not None and len(calls) == warm_up + 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, seeded[k]), k   # weights and BatchNorm statistics, num_batches_tracked too
    assert step.k.item() == 0 and all(not t.any() for t in step.opt.exp_avgs + step.opt.exp_avg_sqs)
    assert fake_cuda["seeds"] == [7] and torch.equal(torch.rand(3, generator=g),
                                                     torch.rand(3, generator=torch.Generator().manual_seed(7)))


@pytest.mark.parametrize("version,itself", [("2.11.0+cu126", False), ("2.13.1", False), ("2.14.1+cu130", True),
                                            ("2.15.0.dev20260101", True), ("3.0.0", True)])
def test_generators_are_registered_by_hand_only_where_torch_does_not(version, itself):
    """torch 2.14 registers every generator a capture uses and deprecates the call (a warning per capture).
    What the registration does, replays drawing what eager steps draw, is tests/test_gpu.py's to check."""
    assert registers_generators_itself(version) is itself


def test_a_failed_capture_says_so_in_one_line_and_returns_none(fake_cuda, caplog):
    cfg = make_cfg()
    x, y = images(256)
    model = instantiate(cfg.model)
    fake_cuda["fail"] = "CUDA error: operation not permitted when stream is capturing\nmore detail"
    with caplog.at_level(logging.WARNING):
        step = capture(model, instantiate(cfg.optimizer, params=model.parameters()), schedule(cfg, 1),
                       x, y, cfg.augment, torch.Generator(), False, 64, 1, 0)
    assert step is None
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert line.startswith("CUDA graph capture failed (RuntimeError: CUDA error: operation not permitted") and \
        "trains eagerly" in line and "\n" not in line
