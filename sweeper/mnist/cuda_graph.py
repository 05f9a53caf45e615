"""trainer.cuda_graph: the whole training step captured once in a CUDA graph and replayed (CUDA only).

Why: at batch 64 the reference model's eager step is ~280 small kernels, and the CPU launching them is the
bottleneck (issue 12, on an H100 with the previous code: 10.9-11.8k img/s eager; a throwaway probe of the same
step, captured: 85.5k). A replay launches the whole step at once.

    step = capture(model, opt, schedule, train_x, train_y, aug, g, bf16, batch_size, epochs, seed)
    if step is None: ...                  # it failed and said why in one warning line: train eagerly
    step.start_epoch(perm); step.replay() # sweeper/mnist/trial.py's loop; step.losses / step.correct hold the results

The step itself is sweeper/mnist/static_step.py: gather by index, augmentation, forward, loss, backward, update and
the lr schedule, all from device tensors. Capturing follows torch's whole-network recipe: a few warm-up steps on
a side stream (cuBLAS and cuDNN workspaces, lazy initialisation, torch.compile's compilation), grads set to None
so backward allocates them in the graph's memory, then one step captured with torch.cuda.graph. The warm-up
really trained; its effects (weights, BatchNorm statistics, optimizer state, step counter, RNG offsets) are
undone afterwards, so replay 1 starts where eager step 1 would.

RNG: dropout draws from the default CUDA generator, which every capture registers; the augmentation's generator
`g` is registered too: by torch itself from 2.14 on (it registers every generator a capture draws from, and warns
that `register_generator_state` is deprecated), by the call here before. A replay reads each generator's seed and
offset when it starts and advances the offset by what the captured step used, so replay k draws what eager step k
would, and re-seeding after the capture is safe.

If anything fails (an op that syncs or allocates outside the caching allocator, an optimizer without a
graph-safe update, too little data for one batch): one warning line, the stream and the default generator are
reset (a capture that fails half-way leaves the generator mid-capture, and the next dropout dies with "Offset
increment outside graph capture"), and None is returned: the caller builds a fresh model and optimizer.
"""
import logging

import torch

from sweeper.mnist.static_step import Step

log = logging.getLogger(__name__)
WARMUP_STEPS = 3   # torch's documented whole-network example warms up with 3


def registers_generators_itself(version=torch.__version__):
    """torch >= 2.14 registers each generator a capture draws from, lazily; before, only the default one."""
    major, minor = (int(p) for p in version.split("+")[0].split(".")[:2])
    return (major, minor) >= (2, 14)


def capture(model, opt, schedule, train_x, train_y, aug, g, bf16, batch_size, epochs, seed):
    """The Step with its captured graph, ready to replay from step 0; None when capture failed (logged)."""
    device = train_x.device
    try:
        step = Step(model, opt, schedule, train_x, train_y, aug, g, bf16, batch_size, epochs)
        step.start_epoch(torch.arange(len(train_y), device=device))   # any batches do for the warm-up
        saved = {name: t.clone() for name, t in model.state_dict().items()}
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(min(WARMUP_STEPS, len(step.lrs))):   # on a GPU a step past the lr table is a
                step()                                            # device-side assert, fatal to the process
        torch.cuda.current_stream(device).wait_stream(side)
        step.k.zero_()   # a capture records without running; run (as the CPU tests fake it), step 0 is in range
        graph = torch.cuda.CUDAGraph()
        if not registers_generators_itself():
            graph.register_generator_state(g)   # the default generator is registered by every capture
        with torch.cuda.graph(graph):
            step()
    except Exception as e:  # whatever broke, the trial can still train eagerly
        _recover(device)
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        log.warning(f"CUDA graph capture failed ({type(e).__name__}: {reason}); this trial trains eagerly from a "
                    f"fresh model (trainer.cuda_graph=false skips the attempt)")
        return None
    with torch.no_grad():
        for name, t in model.state_dict().items():
            t.copy_(saved[name])
    step.reset()
    g.manual_seed(seed)
    torch.cuda.manual_seed(seed)   # where torch.manual_seed(seed) left it for an eager trial: offset 0
    step.graph = graph
    return step


def _recover(device):
    """Make the process fit for eager training after a failed capture; each part is best effort."""
    try:
        # torch.cuda.graph's exit leaves its capture stream current when ending the capture raises
        torch.cuda.set_stream(torch.cuda.default_stream(device))
    except Exception as e:
        log.debug(f"resetting the stream after a failed capture: {e}")
    try:
        # a fresh state for the default generator: the old one may still think it is capturing
        torch.cuda.default_generators[device.index].graphsafe_set_state(torch.Generator(device=device))
    except Exception as e:
        log.debug(f"resetting the CUDA generator after a failed capture: {e}")
