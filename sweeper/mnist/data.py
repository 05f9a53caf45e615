"""MNIST as uint8 tensors on the training device, and batched random affine augmentation.

The whole dataset (47 MB of uint8) is loaded once; batches are cut by index, augmented with one
`affine_grid` + `grid_sample` call per batch (per-sample random parameters) and normalised on the device.
No DataLoader or PIL on the hot path: per-sample PIL transforms run at ~2.4k img/s here, as slow as training.
"""
import logging
import math
import os

import torch
import torch.nn.functional as F

from sweeper.mnist.files import FILES, DataError, check_files  # noqa: F401  (callers catch data.DataError)

MEAN, STD = 0.1307, 0.3081
log = logging.getLogger(__name__)


def load(root, download, train_subset, test_subset, seed, device):
    """Return ((train_x, train_y), (test_x, test_y)): uint8 images [N, 1, 28, 28] and int64 labels on `device`."""
    # torchvision takes seconds to import: only load it once a run gets this far, so bad overrides fail fast
    from torchvision.datasets import MNIST

    raw, why = os.path.join(root, "MNIST", "raw"), ""
    if download and not all(os.path.isfile(os.path.join(raw, f)) for f in FILES):
        created = missing_dirs(raw)
        try:
            MNIST(root, train=True, download=True)
        except Exception as e:  # no internet, no write access, ...: check_files says what is missing
            # torchvision's message lists every mirror on its own line; the last line holds the cause
            why = f" and the download failed ({(str(e).strip().splitlines() or [type(e).__name__])[-1]})"
            remove_empty(created)
    check_files(root, why)
    g = torch.Generator().manual_seed(seed)
    out = []
    for train, subset in ((True, train_subset), (False, test_subset)):
        ds = MNIST(root, train=train, download=False)
        x, y = ds.data, ds.targets
        if subset is not None and subset > len(y):
            which = "train" if train else "test"
            log.warning(f"data.{which}_subset={subset} is more than the {len(y)} {which} images: using all {len(y)}")
        if subset is not None and subset < len(y):
            idx = torch.randperm(len(y), generator=g)[:subset]
            x, y = x[idx], y[idx]
        out.append((x.unsqueeze(1).contiguous().to(device), y.to(device)))
    return out


def missing_dirs(path):
    """The folders from `path` up that do not exist yet, deepest first: what a download is about to create."""
    out = []
    path = os.path.abspath(path)
    while not os.path.exists(path):
        out.append(path)
        path = os.path.dirname(path)
    return out


def remove_empty(dirs):
    """Take back the folders a failed download created (`missing_dirs`), deepest first. Only empty ones: another
    process downloading into the same data.root keeps what it has."""
    for d in dirs:
        try:
            os.rmdir(d)
        except FileNotFoundError:
            continue
        except OSError:   # not empty: nor are the folders above it
            return


def normalize(x):
    """uint8 [B, 1, 28, 28] -> float, normalised with MNIST's mean and std."""
    return (x.float() / 255.0 - MEAN) / STD


def _uniform(n, lo, hi, g, device):
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def augment(x, aug, g, by_factors=None):
    """Random affine per sample, as torchvision's RandomRotation(pre_rotate) then RandomAffine(...), fill 0.

    `x` is uint8 [B, 1, H, W]; returns normalised float. Works in pixel units, then maps to the
    [-1, 1] grid that `affine_grid` expects (square images, align_corners=False). `by_factors` (default: on CUDA)
    inverts the map factor by factor instead of with torch.linalg; the two agree to float rounding.
    """
    if not (aug.pre_rotate or aug.degrees or aug.translate or aug.shear or aug.scale[0] != 1 or aug.scale[1] != 1):
        return normalize(x)
    b, dev = x.shape[0], x.device
    rad = math.pi / 180
    pre = _uniform(b, -aug.pre_rotate, aug.pre_rotate, g, dev) * rad
    rot = _uniform(b, -aug.degrees, aug.degrees, g, dev) * rad
    shear = _uniform(b, -aug.shear, aug.shear, g, dev) * rad
    scale = _uniform(b, aug.scale[0], aug.scale[1], g, dev)
    # translate is a fraction of the image; in grid units the image spans 2
    tx = _uniform(b, -aug.translate, aug.translate, g, dev) * 2
    ty = _uniform(b, -aug.translate, aug.translate, g, dev) * 2
    # forward map M = T * R(rot) * Shear * S * R(pre), as torchvision composes its affine (centre-based)
    zero, one = torch.zeros(b, device=dev), torch.ones(b, device=dev)

    def mat(a, b_, c, d, e, f):
        return torch.stack([torch.stack([a, b_, c], -1), torch.stack([d, e, f], -1),
                            torch.stack([zero, zero, one], -1)], -2)

    r_pre = mat(pre.cos(), -pre.sin(), zero, pre.sin(), pre.cos(), zero)
    r = mat(rot.cos(), -rot.sin(), tx, rot.sin(), rot.cos(), ty)
    sh = mat(one, -shear.tan(), zero, zero, one, zero)
    s = mat(scale, zero, zero, zero, scale, zero)
    # grid_sample pulls pixels: output coordinate -> input coordinate is the inverse map
    if x.is_cuda if by_factors is None else by_factors:
        # the factors' inverses in reverse order: on CUDA torch.linalg's batched inverse is an LU in MAGMA or
        # cuSOLVER, which a CUDA graph may fail to capture (pytorch#96632). The CPU keeps inv_ex and its numbers.
        c, sn = rot.cos(), rot.sin()
        m_inv = (mat(pre.cos(), pre.sin(), zero, -pre.sin(), pre.cos(), zero)
                 @ mat(1 / scale, zero, zero, zero, 1 / scale, zero) @ mat(one, shear.tan(), zero, zero, one, zero)
                 @ mat(c, sn, -(c * tx + sn * ty), -sn, c, sn * tx - c * ty))
    else:
        m_inv = torch.linalg.inv_ex(r @ sh @ s @ r_pre)[0]  # inv_ex skips the error check, which would sync a GPU
    theta = m_inv[:, :2]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (out / 255.0 - MEAN) / STD
