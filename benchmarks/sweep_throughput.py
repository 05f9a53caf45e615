"""Sweep throughput, trials per hour: the same small Optuna sweep with one trial at a time and with two.

    python benchmarks/sweep_throughput.py [--trials 6] [--images 10000] [--data-root DIR]

Measured: see README's performance section.

Each sweep runs as a user types it, in a subprocess, and is timed whole (Python start-up included):
    python -m sweeper.train --multirun hparams_search=budget data.train_subset=10000 data.test_subset=500
        trainer.epochs=1 hydra.sweeper.n_trials=6 hydra.sweeper.n_jobs=J ...
model=reference with model.width in {8, 10} keeps every model under the 20k budget (no rejections), the pruner
is off and the batch size pinned, so both sweeps train the same kind of trials; the sampler's seed is fixed and
its first 10 trials are random, so both draw the same parameters. With n_jobs=2 every trial is a fresh process
(import torch, load MNIST: ~4 s each) while n_jobs=1 runs trials in-process, so on tiny trials start-up can
outweigh the training; expect the ratio to grow with --images. Each trial uses trainer.threads=1 (one core).
The last line printed is one JSON object.
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sweep(n_jobs, trials, images, tmp, env):
    """Run one sweep; return (seconds, trials completed, trials in trials.csv)."""
    sweep_dir = os.path.join(tmp, f"j{n_jobs}")
    cmd = [sys.executable, "-m", "sweeper.train", "--multirun", "hparams_search=budget",
           f"data.train_subset={images}", "data.test_subset=500", "trainer.epochs=1", "trainer.batch_size=64",
           f"hydra.sweeper.n_trials={trials}", f"hydra.sweeper.n_jobs={n_jobs}", "hydra.sweeper.storage=null",
           f"hydra.sweep.dir={sweep_dir}", f"hydra.sweeper.study_name=bench_j{n_jobs}",
           "hydra/sweeper/pruner=none", "model=reference", "model.width=choice(8,10)"]
    t0 = time.perf_counter()
    with open(os.path.join(tmp, f"j{n_jobs}.log"), "w") as log:
        p = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"the n_jobs={n_jobs} sweep exited with code {p.returncode}; its log:\n"
                 + open(log.name).read()[-3000:])
    with open(os.path.join(sweep_dir, "trials.csv")) as f:
        rows = list(csv.DictReader(f))
    return seconds, sum(r["state"] == "COMPLETE" for r in rows), len(rows)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=6, help="trials per sweep (>= 6 for a fair two-at-a-time run)")
    p.add_argument("--images", type=int, default=10000, help="training images per trial (data.train_subset); large enough that training, not process start-up, dominates")
    p.add_argument("--data-root", help="folder holding MNIST/raw/ (default: $MNIST_ROOT, else data)")
    args = p.parse_args()
    env = dict(os.environ)
    if args.data_root:
        env["MNIST_ROOT"] = os.path.abspath(args.data_root)

    result = dict(trials=args.trials, images=args.images, cpu_count=os.cpu_count())
    with tempfile.TemporaryDirectory() as tmp:
        for n_jobs in (1, 2):
            seconds, done, total = sweep(n_jobs, args.trials, args.images, tmp, env)
            per_hour = args.trials / seconds * 3600
            print(f"n_jobs={n_jobs}: {args.trials} trials in {seconds:.1f} s = {per_hour:.0f} trials/hour "
                  f"({done} of {total} completed in trials.csv)")
            result[f"trials_per_hour_n_jobs_{n_jobs}"] = round(per_hour, 1)
            result[f"seconds_n_jobs_{n_jobs}"] = round(seconds, 2)
            result[f"completed_n_jobs_{n_jobs}"] = done
    result["ratio"] = round(result["trials_per_hour_n_jobs_2"] / result["trials_per_hour_n_jobs_1"], 2)
    print(f"n_jobs=2 / n_jobs=1: {result['ratio']:.2f}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
