"""The training step with static shapes and no host work: what sweeper/mnist/cuda_graph.py captures once and replays.

    step = Step(model, opt, schedule, train_x, train_y, aug, g, bf16, batch_size, epochs)
    step.start_epoch(perm)      # this epoch's batches in; its losses and correct count zeroed
    step()                      # one step; step.losses[row], step.correct and the step counter move on the device

A CUDA graph replays the same kernels on the same addresses, so between two steps only tensor contents may change:

- The batch is row `k % steps` of `plan`, this epoch's shuffled indices cut into full batches, `k` being a step
  counter on the device. Every batch has batch_size images: the last partial batch is dropped (as DataLoader's
  drop_last), 32 of 60,000 images at batch 64, and a different 32 each epoch since the order is reshuffled.
  Wrapping it round instead would show some images twice in one epoch.
- The learning rate, and the momentum (SGD) or beta1 (AdamW) that OneCycle cycles with it, come from row `k` of a
  table: the values the configured torch scheduler sets at every step of the run, worked out up front on a
  throwaway optimizer. The scheduler's step count is the table's length, epochs * steps, so the schedule ends
  where it would have.
- The update is written here with foreach ops that read those values from device tensors. torch.optim cannot do
  it: SGD's foreach path turns a tensor lr into a float with .item() (a host sync, which breaks a capture), and
  fused SGD takes a tensor lr but only a float momentum, which OneCycle changes every step. tests/test_static_step.py
  checks both updates against torch.optim with the real scheduler, step by step.

Nothing here syncs with the host or needs CUDA: on CPU the step runs eagerly, which is how the tests check it.
"""
import torch
import torch.nn.functional as F

from sweeper.mnist import data


def schedule_table(schedule, total):
    """[total, 2] float64: the lr and the momentum (SGD) or beta1 (Adam family) that step k trains with, read from
    the scheduler `schedule(params)` builds on its own optimizer, stepped as the plain loop steps it."""
    sched = schedule([torch.zeros(1, requires_grad=True)])
    opt = sched.optimizer
    rows = []
    for _ in range(total):
        group = opt.param_groups[0]
        rows.append((float(group["lr"]), float(group["betas"][0] if "betas" in group else group["momentum"])))
        opt.step()   # no gradient, so nothing moves; a scheduler stepped before its optimizer warns
        sched.step()
    return torch.tensor(rows, dtype=torch.float64)


class SGD:
    """torch.optim.SGD's update (momentum, nesterov, weight decay) with lr and momentum read per step from the table.

    torch starts the momentum buffer as the first gradient; a zero buffer gives the same, buf = 0 * m + g, as long as
    dampening is 0 (it is in conf/optimizer/sgd.yaml; other values are refused here and train eagerly)."""

    def __init__(self, params, group, table):
        if group["dampening"] or group["maximize"]:
            raise ValueError("SGD with dampening or maximize has no graph-safe update here")
        self.params, self.weight_decay, self.nesterov = params, group["weight_decay"], group["nesterov"]
        self.bufs = [torch.zeros_like(p) for p in params]
        self.table = table.to(device=params[0].device, dtype=torch.float32)   # lr, momentum

    def reset(self):
        torch._foreach_zero_(self.bufs)

    @torch.no_grad()
    def step(self, k):
        lr, momentum = self.table.index_select(0, k).squeeze(0).unbind()
        grads = [p.grad for p in self.params]
        if self.weight_decay:
            grads = torch._foreach_add(grads, self.params, alpha=self.weight_decay)
        torch._foreach_mul_(self.bufs, momentum)
        torch._foreach_add_(self.bufs, grads)
        if self.nesterov:
            update = torch._foreach_mul(self.bufs, momentum)
            torch._foreach_add_(update, grads)
            torch._foreach_mul_(update, lr)
        else:
            update = torch._foreach_mul(self.bufs, lr)
        torch._foreach_sub_(self.params, update)


class AdamW:
    """torch.optim.AdamW's update (no amsgrad) with lr and beta1 read per step from the table. torch's bias
    corrections use the step's own beta1 and lr, so they are worked out up front with them, in float64 as torch does."""

    def __init__(self, params, group, table):
        if group["amsgrad"] or group["maximize"]:
            raise ValueError("AdamW with amsgrad or maximize has no graph-safe update here")
        self.params, (_, self.beta2), self.eps = params, group["betas"], group["eps"]
        lr, beta1 = table.unbind(1)
        t = torch.arange(1, len(table) + 1, dtype=torch.float64)
        columns = [1 - lr * group["weight_decay"], beta1, 1 - beta1, lr / (1 - beta1 ** t),
                   (1 - self.beta2 ** t).sqrt()]
        self.table = torch.stack(columns, 1).to(device=params[0].device, dtype=torch.float32)
        self.exp_avgs = [torch.zeros_like(p) for p in params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in params]

    def reset(self):
        torch._foreach_zero_(self.exp_avgs)
        torch._foreach_zero_(self.exp_avg_sqs)

    @torch.no_grad()
    def step(self, k):
        row = self.table.index_select(0, k).squeeze(0)
        decay, beta1, one_minus_beta1, step_size, bias_correction2_sqrt = row.unbind()
        grads = [p.grad for p in self.params]
        torch._foreach_mul_(self.params, decay)
        torch._foreach_mul_(self.exp_avgs, beta1)
        torch._foreach_add_(self.exp_avgs, torch._foreach_mul(grads, one_minus_beta1))
        torch._foreach_mul_(self.exp_avg_sqs, self.beta2)
        torch._foreach_addcmul_(self.exp_avg_sqs, grads, grads, value=1 - self.beta2)
        denom = torch._foreach_sqrt(self.exp_avg_sqs)
        torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, self.eps)
        update = torch._foreach_div(self.exp_avgs, denom)
        torch._foreach_mul_(update, step_size)
        torch._foreach_sub_(self.params, update)


def graph_safe(opt, params, table):
    """The update above that does what the torch optimizer `opt` (built from the config) does."""
    kind = AdamW if isinstance(opt, torch.optim.AdamW) else SGD if isinstance(opt, torch.optim.SGD) else None
    if kind is None or len(opt.param_groups) != 1:
        raise ValueError(f"{type(opt).__name__} has no graph-safe update here (SGD and AdamW with one param group do)")
    return kind(params, opt.param_groups[0], table)


class Step:
    """One training step from device state alone, as the plain loop in sweeper/mnist/trial.py does it eagerly."""

    def __init__(self, model, opt, schedule, train_x, train_y, aug, g, bf16, batch_size, epochs):
        self.steps = len(train_y) // batch_size
        if self.steps == 0:
            raise ValueError(f"{len(train_y)} training images are less than one batch of {batch_size}")
        self.model, self.train_x, self.train_y, self.aug, self.g, self.bf16 = model, train_x, train_y, aug, g, bf16
        self.params = [p for p in model.parameters() if p.requires_grad]
        table = schedule_table(lambda params: schedule(params, self.steps), epochs * self.steps)
        self.lrs = table[:, 0].tolist()   # the lr of step k, for the log, without asking the device
        self.opt = graph_safe(opt, self.params, table)
        device = train_x.device
        self.k = torch.zeros(1, dtype=torch.long, device=device)
        self.plan = torch.zeros(self.steps, batch_size, dtype=torch.long, device=device)
        self.losses = torch.zeros(self.steps, device=device)   # summed per step, as the plain loop's
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.graph = None   # set by cuda_graph.capture

    def start_epoch(self, perm):
        self.plan.copy_(perm[:self.plan.numel()].view_as(self.plan))   # the tail past the last full batch is dropped
        self.losses.zero_()
        self.correct.zero_()

    def reset(self):
        """Back to step 0 with a fresh optimizer state (after the warm-up steps that come before a capture)."""
        self.k.zero_()
        self.opt.reset()

    def replay(self):
        self.graph.replay()

    def __call__(self):
        row = self.k % self.steps
        idx = self.plan.index_select(0, row).view(-1)
        x = data.augment(self.train_x.index_select(0, idx), self.aug, self.g)
        y = self.train_y.index_select(0, idx)
        for p in self.params:
            p.grad = None   # before a capture this makes backward allocate the grads in the graph's own memory
        # autocast's weight cache would hold casts made during the capture: it must be off there
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=False):
            out = self.model(x.contiguous(memory_format=torch.channels_last))
        loss = F.cross_entropy(out.float(), y)
        loss.backward()
        self.opt.step(self.k)
        self.losses.index_copy_(0, row, loss.detach().view(1) * len(idx))
        self.correct += (out.argmax(1) == y).sum()
        self.k += 1
