"""Training throughput, images per second: the seed's input pipeline against ours, same model, same images.

    python benchmarks/throughput.py [--images 20000] [--device auto|cpu|cuda] [--data-root DIR] [--set KEY=VALUE ...]

Measured: see README's performance section.

Two timed passes over the same N training images (the seed's rounded up to whole batches of 64), in order:
  seed  what the seed's code does: torchvision's per-sample PIL transforms (RandomRotation, RandomAffine,
        ToTensor, Normalize) on torchvision's MNIST in a shuffled DataLoader, batch 64, SGD 0.01 / 0.9,
        num_workers 0 on CPU (1 with pin_memory on CUDA), torch's default thread count (the core count).
  ours  the project's real `sweeper.mnist.trial.train` at its default config (batched affine on the device,
        trainer.threads=1) for one epoch of N images. Its epoch time also covers evaluating 500 test
        images, so ours img/s is slightly conservative.
Both train the reference model (8,780 params) built from the default config. The seed runs first because
`train()` calls torch.set_num_threads(1), which would otherwise change the seed's thread count.
`--set` adds config overrides (e.g. trainer.cuda_graph=false for the eager step on CUDA). With a CUDA graph `ours`
trains full batches only (the last partial one is dropped), and counts only the images it trained.
The last line printed is one JSON object; gpu_check.sh keeps it.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
import torchvision
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torchvision import transforms

from sweeper.mnist.trial import train

CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")
WARMUP_BATCHES = 5


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def seed_pipeline(cfg, device, images):
    """The seed's loader and loop; returns (images trained, seconds)."""
    tf = transforms.Compose([
        transforms.RandomRotation((-7, 7), fill=0),
        transforms.RandomAffine(7, translate=(0.1, 0.1), scale=(0.8, 1.2), shear=10),
        transforms.ToTensor(),
        transforms.Normalize((0.1307,), (0.3081,)),
    ])
    ds = torchvision.datasets.MNIST(cfg.data.root, train=True, download=False, transform=tf)
    cuda = device.type == "cuda"
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, num_workers=1 if cuda else 0,
                                         pin_memory=cuda)
    torch.manual_seed(cfg.seed)
    model = instantiate(cfg.model).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(x, y):
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    model.train()
    for i, (x, y) in enumerate(loader):
        step(x, y)
        if i + 1 == WARMUP_BATCHES:
            break
    sync(device)
    # a fresh iterator, as each of the seed's epochs starts one: on CUDA this includes starting its worker
    t0, seen = time.perf_counter(), 0
    for x, y in loader:
        step(x, y)
        seen += len(y)
        if seen >= images:
            break
    sync(device)
    return seen, time.perf_counter() - t0


def ours(cfg, images):
    """One epoch of the project's own trial; returns (images trained, seconds of that epoch)."""
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up: a few batches through the same code, so first-call costs stay out of the timed epoch
        warm = OmegaConf.merge(cfg, {"data": {"train_subset": WARMUP_BATCHES * cfg.trainer.batch_size,
                                              "test_subset": 100}})
        train(warm, os.path.join(tmp, "warmup"))
        metrics = train(cfg, os.path.join(tmp, "run"))
    batch = cfg.trainer.batch_size
    return (images // batch * batch if metrics["cuda_graph"] else images), metrics["epochs"][0]["seconds"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=20000, help="training images per pipeline (at most 60000)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--data-root", help="folder holding MNIST/raw/ (default: the config's, $MNIST_ROOT or data)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override (repeatable)")
    p.add_argument("--ours-only", action="store_true", help=argparse.SUPPRESS)  # one of the two concurrent runs
    args = p.parse_args()
    if not 0 < args.images <= 60000:
        p.error("--images must be in [1, 60000]: both pipelines train at most one epoch")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)

    overrides = [f"data.train_subset={args.images}", "data.test_subset=500", "trainer.epochs=1",
                 f"device={device.type}"]
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    overrides += args.set
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)

    if args.ours_only:
        print(json.dumps(dict(zip(["images", "seconds"], ours(cfg, args.images)))))
        return
    rows = []
    n, s = seed_pipeline(cfg, device, args.images)
    rows.append(("seed", torch.get_num_threads(), 64, n, s))
    n, s = ours(cfg, args.images)
    rows.append(("ours", torch.get_num_threads(), cfg.trainer.batch_size, n, s))

    if device.type == "cpu" and (os.cpu_count() or 1) >= 2:
        # a sweep with n_jobs=2 runs two 1-thread trials at once: their summed rate is what the two cores deliver
        cmd = [sys.executable, os.path.abspath(__file__), "--ours-only", f"--images={args.images}",
               f"--device={device.type}"] + ([f"--data-root={args.data_root}"] if args.data_root else []) + \
            [f"--set={o}" for o in args.set]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(2)]
        runs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        rows.append(("ours x2", 1, cfg.trainer.batch_size, 2 * args.images,
                     2 * args.images / sum(r["images"] / r["seconds"] for r in runs)))

    print(f"device {device}, torch {torch.__version__}, {cpu_name()}, {os.cpu_count()} cores")
    print(f"{'pipeline':8} {'threads':>7} {'batch':>5} {'images':>7} {'seconds':>8} {'img/s':>8}")
    for name, threads, batch, n, s in rows:
        print(f"{name:8} {threads:7d} {batch:5d} {n:7d} {s:8.2f} {n / s:8.0f}")
    print("ours' seconds include evaluating 500 test images: its img/s is slightly conservative")

    (_, seed_threads, seed_bs, seed_n, seed_s), (_, ours_threads, ours_bs, ours_n, ours_s) = rows[:2]
    result = dict(
        seed_img_s=round(seed_n / seed_s, 1), ours_img_s=round(ours_n / ours_s, 1),
        ratio=round((ours_n / ours_s) / (seed_n / seed_s), 2),
        device=str(device), gpu=torch.cuda.get_device_name() if device.type == "cuda" else None,
        torch_threads=dict(seed=seed_threads, ours=ours_threads),
        images=dict(seed=seed_n, ours=ours_n), seconds=dict(seed=round(seed_s, 3), ours=round(ours_s, 3)),
        batch_size=dict(seed=seed_bs, ours=ours_bs),
        torch=torch.__version__, cpu=cpu_name(), cpu_count=os.cpu_count(),
    )
    if len(rows) == 3:
        _, _, _, pair_n, pair_s = rows[2]
        result.update(ours_two_processes_img_s=round(pair_n / pair_s, 1),
                      ratio_two_processes=round((pair_n / pair_s) / (seed_n / seed_s), 2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
