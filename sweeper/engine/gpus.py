"""hydra.sweeper.gpus: which GPU each worker process gets, so that n_jobs trials do not all land on cuda:0.

`auto` (the default): with n_jobs > 1 and trials that use CUDA (the config's `device` is `cuda`, or `auto` with a
GPU present), worker i gets CUDA_VISIBLE_DEVICES = GPU i mod n_gpus, of the GPUs visible to the sweep (its own
CUDA_VISIBLE_DEVICES, else every NVIDIA device). A list (`[0, 2]`) names the GPUs to cycle through, whatever the
device; null leaves the variable alone. Asked of the system, not of torch: the engine imports no torch.
"""
import glob
import os

VAR = "CUDA_VISIBLE_DEVICES"


def visible():
    """The GPU ids this process may use: its CUDA_VISIBLE_DEVICES, else one per /dev/nvidiaN."""
    given = os.environ.get(VAR)
    if given is not None:
        return [g.strip() for g in given.split(",") if g.strip() and g.strip() != "-1"]
    return sorted((d[len("/dev/nvidia"):] for d in glob.glob("/dev/nvidia[0-9]*")), key=int)


def uses_cuda(device):
    return device == "cuda" or device == "auto" and bool(visible())


def placement(setting, n_jobs, device):
    """The GPU ids the workers cycle through, or None to leave CUDA_VISIBLE_DEVICES as it is."""
    if setting is None:
        return None
    if setting != "auto":
        return [str(g) for g in setting]
    if n_jobs > 1 and uses_cuda(device):
        return visible() or None
    return None


def for_slot(gpus, slot):
    """The environment worker `slot` gets."""
    return {VAR: gpus[slot % len(gpus)]} if gpus else {}
