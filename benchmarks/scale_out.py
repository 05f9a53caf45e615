"""Trials per hour of tiny MNIST trials when sweeps scale out (issue 11).

    MNIST_ROOT=../shared/data python benchmarks/scale_out.py [--trials 40] [--storage postgresql+psycopg://...]

Four runs of the same tiny sweep (2,000 training images, 500 test images, 1 epoch, random widths and learning
rates), each on a fresh PostgreSQL database:

- `sweeps=1|2|3`: that many sweep processes started at once on one study, each running its trials in-process
  (the same command on N machines, here N processes on one machine);
- `ray n_jobs=2`: one sweep with `hydra/launcher=ray` at `n_jobs=2` (the launcher starts a local Ray itself, and
  that start-up is in the time).

Trials per hour = trials / wall seconds from the first process start to the last exit x 3600. Without
--storage a throwaway PostgreSQL server is started (tests/servers.py) and stopped. The last line printed is JSON.
"""
import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from servers import create_database, running_postgres  # noqa: E402

TINY = ["data.train_subset=2000", "data.test_subset=500", "trainer.epochs=1", "hydra/sweeper=mnist_optuna",
        "hydra/sweeper/sampler=random", "hydra/sweeper/pruner=none", "hydra.sweeper.direction=maximize",
        "model.width=choice(6, 8, 10, 12)", "optimizer.lr=interval(0.05, 0.2)"]


def sweep(url, n_trials, out, name, *extra):
    return [sys.executable, "-m", "sweeper.train", "--multirun", *TINY, f"hydra.sweeper.storage='{url}'",
            f"hydra.sweeper.n_trials={n_trials}", "hydra.sweeper.study_name=scale", f"hydra.sweep.dir={out}/{name}",
            *extra]


def measure(cmds, n_trials, url):
    import optuna
    start = time.time()
    procs = [subprocess.Popen(c, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for c in cmds]
    errors = [p.communicate()[1] for p in procs]
    wall = time.time() - start
    for p, err in zip(procs, errors):
        if p.returncode != 0:
            sys.exit(f"a sweep failed ({p.returncode}): {err.strip().splitlines()[-1] if err.strip() else ''}")
    trials = [t for t in optuna.load_study(study_name="scale", storage=url).trials
              if t.state.is_finished() and not t.user_attrs.get("uncounted")]
    assert len(trials) == n_trials, f"{len(trials)} trials counted, expected {n_trials}"
    return dict(trials=n_trials, wall_s=round(wall, 1), trials_per_hour=round(n_trials / wall * 3600))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=40, help="trials per run (default 40)")
    ap.add_argument("--storage", help="a PostgreSQL server's base URL, postgresql+psycopg://user@host:port")
    ap.add_argument("--out", default=str(ROOT / "outputs" / "scale_out"), help="sweep dirs go here")
    args = ap.parse_args()
    os.environ.setdefault("MNIST_ROOT", str(ROOT / "data"))
    results = {}
    with running_postgres() if args.storage is None else contextlib.nullcontext(args.storage) as server:
        for n in (1, 2, 3):
            url = create_database(server)
            results[f"sweeps={n}"] = r = measure(
                [sweep(url, args.trials, args.out, f"s{n}-{i}") for i in range(n)], args.trials, url)
            print(f"{n} sweep process(es) on one PostgreSQL study: {r}", flush=True)
        url = create_database(server)
        results["ray n_jobs=2"] = r = measure(
            [sweep(url, args.trials, args.out, "ray", "hydra/launcher=ray", "hydra.sweeper.n_jobs=2")], args.trials, url)
        print(f"Ray launcher, n_jobs=2: {r}", flush=True)
    print(json.dumps(dict(machine=_machine(), cores=os.cpu_count(), **results)))


def _machine():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
