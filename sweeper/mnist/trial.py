"""One MNIST trial: `train(cfg, out_dir)` trains the composed config and writes metrics.json.

`train` is the whole trial, top to bottom: checks, model (rejected over budget before any training), optimizer,
data, then one plain loop of epochs with an evaluation on the test set after each. Its command line is
sweeper/train.py.
"""
import logging
import math
import os
import time

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from tqdm import tqdm

from sweeper.mnist import cuda_graph, data
from sweeper.mnist import metrics as mx
from sweeper.mnist.checks import check, check_config
from sweeper.mnist.model import count

log = logging.getLogger(__name__)
# an epoch's mean training loss above this has diverged: guessing scores ln(10) = 2.3; a run that blew up
# (SGD at lr 100: 1.2e16) does not come back, while a hopeless but stable one (AdamW at lr 10: 64) stays below
DIVERGED_LOSS = 1000


class Rejected(Exception):
    """The composed model has more parameters than budget.max_params; nothing was trained."""


class Pruned(Exception):
    """The sweeper's `report` callback said this trial is hopeless; it stops after the epoch it reported."""


class TrialFailed(Exception):
    """Training diverged (a non-finite or huge loss); the message names the epoch (and step)."""


def pick_device(name):
    check(name in ("auto", "cpu", "cuda", "mps"), "device", name, "one of auto, cpu, cuda, mps")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    check(name != "cuda" or torch.cuda.is_available(), "device", name, "CUDA is not available here; use auto or cpu")
    check(name != "mps" or torch.backends.mps.is_available(), "device", name, "MPS is not available here; use auto or cpu")
    return torch.device(name)


def make_scheduler(s, opt, epochs, steps_per_epoch):
    """Every scheduler is stepped once per batch; optimizer.lr is the starting (or peak, for onecycle) lr."""
    total = epochs * steps_per_epoch
    if s.name == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=s.step_size * steps_per_epoch, gamma=s.gamma)
    if s.name == "onecycle":
        # OneCycleLR divides by its warm-up length, pct_start * total - 1, which is 0 on some tiny runs
        pct = s.pct_start if abs(s.pct_start * total - 1) > 1e-9 else min(2 * s.pct_start, 0.99)
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=opt.param_groups[0]["lr"], total_steps=total, pct_start=pct,
            div_factor=s.div_factor, final_div_factor=s.final_div_factor)
    if s.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=s.eta_min)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)


def cpu_has_bf16():
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_bf16(precision, device):
    """auto: bf16 autocast on CUDA and on CPUs with bf16 units (+22 % here); emulated bf16 is slower than fp32."""
    if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        log.warning("trainer.precision=bf16 on a CPU without bf16 units (no avx512_bf16 or amx_bf16 in "
                    "/proc/cpuinfo) is emulated: about 3.7x slower than fp32 where measured; use "
                    "trainer.precision=fp32 (or auto)")
    if precision != "auto":
        return precision == "bf16"
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())


def autocast(device, bf16):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def build(cfg, device, graphed):
    """Seeded model and optimizer. Compiled inside our captured step, the model is Inductor kernels in our graph;
    outside it on CUDA, reduce-overhead has torch capture it (default mode: 7.4 s/epoch to eager's 5.0, issue 12)."""
    torch.manual_seed(cfg.seed)
    model = instantiate(cfg.model).to(device, memory_format=torch.channels_last)
    if cfg.trainer.compile:
        model = torch.compile(model, mode="reduce-overhead" if device.type == "cuda" and not graphed else None)
    return model, instantiate(cfg.optimizer, params=model.parameters())


def eager_step(model, opt, sched, x, y, aug, g, bf16):
    """One training step on a uint8 batch, as the loop below runs it without a CUDA graph: augment, forward,
    loss, backward, update, lr schedule. Returns the batch's mean loss and its correct count, on the device."""
    xb = data.augment(x, aug, g)
    with autocast(x.device, bf16):
        out = model(xb.contiguous(memory_format=torch.channels_last))
    loss = F.cross_entropy(out.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return loss.detach(), (out.argmax(1) == y).sum()


def diverged(losses, epoch, steps, lr, epoch_loss=None):
    """Why training has diverged, or None. `losses`: the epoch's per-step losses so far, of `steps`; `epoch_loss`:
    the epoch's mean, once it is over. A non-finite loss names its step; a finite epoch mean above
    DIVERGED_LOSS names the mean. A run that blows up shows either, depending on the CPU's float kernels: SGD at lr
    100 reached a finite 1.2e16 on one machine and inf on another."""
    finite = torch.isfinite(losses)
    if not finite.all():
        step = int((~finite).nonzero()[0]) + 1
        return f"diverged: non-finite loss at epoch {epoch}, step {step}/{steps}; lower optimizer.lr (now {lr})"
    if epoch_loss is not None and epoch_loss > DIVERGED_LOSS:
        return f"diverged: training loss {epoch_loss:.2g} at epoch {epoch}; lower optimizer.lr (now {lr})"
    return None


@torch.inference_mode()
def evaluate(model, x, y, bf16, batch_size=2000):
    model.eval()
    loss, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device, dtype=torch.long)
    for i in range(0, len(y), batch_size):
        with autocast(x.device, bf16):
            out = model(data.normalize(x[i:i + batch_size]).contiguous(memory_format=torch.channels_last))
        loss += F.cross_entropy(out.float(), y[i:i + batch_size], reduction="sum")
        correct += (out.argmax(1) == y[i:i + batch_size]).sum()
    return loss.item() / len(y), correct.item() / len(y)


def train(cfg, out_dir, overrides=(), report=None):
    """Run one trial and write `out_dir/metrics.json` whatever the outcome; return the metrics dict.

    Raises ConfigError, DataError, Rejected, Pruned or TrialFailed after writing metrics.json.
    `report(epoch, test_acc, may_prune)` is called after every epoch; when it returns True the trial stops as
    pruned. `may_prune` is False for the last epoch: a trial that trained every epoch is not pruned.
    """
    t0 = time.time()
    os.makedirs(out_dir, exist_ok=True)
    metrics = mx.new(cfg.seed, overrides, cfg.budget)
    try:
        _train(cfg, out_dir, metrics, report)
        metrics["status"] = "ok"
    except BaseException as e:  # Ctrl-C too: the record says why the trial ended
        metrics["status"] = {Rejected: "rejected", Pruned: "pruned", KeyboardInterrupt: "interrupted"}.get(type(e),
                                                                                                      "failed")
        metrics["reason"] = "interrupted (Ctrl-C)" if isinstance(e, KeyboardInterrupt) else str(e) or type(e).__name__
        if isinstance(e, TrialFailed):
            log.error(metrics["reason"])   # into train.log too: stderr's line is gone with the terminal
        raise
    finally:
        metrics["ended_at"] = round(time.time(), 3)
        metrics["wall_seconds"] = round(time.time() - t0, 3)
        mx.write_json(os.path.join(out_dir, "metrics.json"), metrics)
    return metrics


def _train(cfg, out_dir, metrics, report):
    check_config(cfg)
    epochs, batch_size, budget = cfg.trainer.epochs, cfg.trainer.batch_size, cfg.budget
    torch.set_num_threads(cfg.trainer.threads)
    device = pick_device(cfg.device)
    bf16 = pick_bf16(cfg.trainer.precision, device)
    metrics["device"] = str(device)
    metrics["precision"] = "bf16" if bf16 else "fp32"
    check(cfg.trainer.cuda_graph is not True or device.type == "cuda", "trainer.cuda_graph", True,
          "true needs device=cuda; auto captures where there is one")
    graphed = device.type == "cuda" and cfg.trainer.cuda_graph in ("auto", True)

    metrics["params"] = n_params = count(cfg.model)   # counted before any weight is allocated
    if reason := mx.over_budget(n_params, budget.max_params):
        raise Rejected(reason)
    model, opt = build(cfg, device, graphed)

    d = cfg.data
    (train_x, train_y), (test_x, test_y) = data.load(d.root, d.download, d.train_subset, d.test_subset,
                                                     cfg.seed, device)
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    graph = None
    if graphed:
        def schedule(params, steps):   # the run's scheduler on a throwaway optimizer: the graph tabulates its lr
            return make_scheduler(cfg.scheduler, instantiate(cfg.optimizer, params=params), epochs, steps)
        graph = cuda_graph.capture(model, opt, schedule, train_x, train_y, cfg.augment, g, bf16, batch_size, epochs,
                                   cfg.seed)
        if graph is None:   # it said why in one warning line: train eagerly from a fresh start
            model, opt = build(cfg, device, graphed=False)
            g = torch.Generator(device=device).manual_seed(cfg.seed)
    metrics["cuda_graph"] = graph is not None
    # a graph's batches all have batch_size images: it drops the last partial one (sweeper/mnist/static_step.py)
    steps = graph.steps if graph else math.ceil(len(train_y) / batch_size)
    trained = steps * batch_size if graph else len(train_y)
    sched = None if graph else make_scheduler(cfg.scheduler, opt, epochs, steps)
    # a host sync per step is free on the CPU; on an accelerator, look for non-finite losses every 50 steps
    sync_every = 1 if device.type == "cpu" else 50
    log.info(f"{n_params} params, {len(train_y)} train / {len(test_y)} test images, {epochs} epochs "
             f"on {device} ({metrics['precision']}{', CUDA graph' if graph else ''})")

    for epoch in range(1, epochs + 1):
        t_epoch = time.time()
        lr = graph.lrs[(epoch - 1) * steps] if graph else opt.param_groups[0]["lr"]
        model.train()
        perm = torch.randperm(len(train_y), generator=g, device=device)
        if graph:
            graph.start_epoch(perm)
            losses, correct = graph.losses, graph.correct
        else:
            losses = torch.zeros(steps, device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
        bar = tqdm(range(steps), desc=f"epoch {epoch}/{epochs}", leave=False, disable=None, dynamic_ncols=True)
        for step in bar:
            if graph:
                graph.replay()
            else:
                idx = perm[step * batch_size:(step + 1) * batch_size]
                loss, right = eager_step(model, opt, sched, train_x[idx], train_y[idx], cfg.augment, g, bf16)
                losses[step] = loss * len(idx)
                correct += right
            if step % sync_every == 0 or step == steps - 1:
                if reason := diverged(losses[:step + 1], epoch, steps, cfg.optimizer.lr):
                    raise TrialFailed(reason)
                if step % 50 == 0:
                    bar.set_postfix(loss=f"{(losses[step] / batch_size if graph else loss).item():.3f}")
        train_loss, train_acc = losses.sum().item() / trained, correct.item() / trained
        if reason := diverged(losses, epoch, steps, cfg.optimizer.lr, train_loss):
            raise TrialFailed(reason)
        test_loss, test_acc = evaluate(model, test_x, test_y, bf16)
        metrics["epochs"].append(dict(epoch=epoch, train_loss=train_loss, train_acc=train_acc, test_loss=test_loss,
                                      test_acc=test_acc, lr=lr, seconds=round(time.time() - t_epoch, 3)))
        metrics["best_test_acc"] = max(metrics["best_test_acc"] or 0.0, test_acc)
        metrics["final_test_acc"] = test_acc
        if metrics["first_epoch_at_target"] is None and test_acc >= budget.target_acc:
            metrics["first_epoch_at_target"] = epoch
        log.info(f"epoch {epoch:2d}  train loss {train_loss:.4f} acc {train_acc:.4f}  "
                 f"test loss {test_loss:.4f} acc {test_acc:.4f}  lr {lr:.4g}  {time.time() - t_epoch:.1f}s")
        # the last epoch is reported (for the study's curves) but never judged: a trial that ran every epoch ends ok
        if report is not None and report(epoch, test_acc, epoch < epochs):
            raise Pruned(f"pruned after epoch {epoch} of {epochs} (test acc {test_acc:.4f})")
    # a compiled model wraps the original: save the plain state_dict that `instantiate(cfg.model)` can load
    torch.save(getattr(model, "_orig_mod", model).state_dict(), os.path.join(out_dir, "model.pt"))
