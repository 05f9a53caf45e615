"""How long a sweep's worker process takes to start for a plain Hydra app, and what it imports.

    python benchmarks/worker_start.py [--repeats 7] [--checkout DIR]

A worker is `python app.py overrides hydra.mode=RUN hydra.run.dir=... +callback` (sweeper/engine/worker.py
builds it); here the app is the smallest that can be pruned: it imports `sweeper` and returns a number. Every
Hydra run imports every installed plugin (ours, and Ray's, submitit's, joblib's launchers), so what our plugin
module imports at the top is paid by every job. `--checkout DIR` runs another checkout's code (PYTHONPATH=DIR), to
compare before and after a change. Prints the median wall time and which heavy modules were imported.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APP = '''\
import hydra
import sweeper


@hydra.main(config_path=None, config_name=None, version_base="1.3")
def main(cfg):
    sweeper.report(1.0, 1)
    return 1.0


if __name__ == "__main__":
    main()
'''
HEAVY = ["torch", "optuna", "sqlalchemy", "matplotlib", "ray"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--checkout", type=Path, help="run this checkout's sweeper and plugin (PYTHONPATH)")
    args = p.parse_args()
    env = dict(os.environ)
    if args.checkout:
        env["PYTHONPATH"] = str(args.checkout.resolve())
    # the callback's module moved once (sweeper.worker -> sweeper.engine.worker): use the one the checkout has
    callback = "sweeper.engine.worker.SaveReturn"
    if subprocess.run([sys.executable, "-c", "import sweeper.engine.worker"], env=env, capture_output=True).returncode:
        callback = "sweeper.worker.SaveReturn"
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp) / "app.py"
        app.write_text(APP)
        times = []
        for i in range(args.repeats + 2):   # the first run warms the file cache; the last one lists imports
            last = i == args.repeats + 1
            cmd = [sys.executable, *(["-X", "importtime"] if last else []), str(app), "hydra.mode=RUN",
                   f"hydra.run.dir={tmp}/job{i}", "hydra.job.num=0",
                   f"++hydra.callbacks.mnist_sweeper_return._target_={callback}"]
            t0 = time.perf_counter()
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp)
            if 0 < i and not last:
                times.append(time.perf_counter() - t0)
            if r.returncode:
                sys.exit(f"the worker failed: {r.stderr.strip().splitlines()[-1]}")
        imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time")}
        print(f"worker start and run, median of {args.repeats}: {statistics.median(times):.2f} s "
              f"(min {min(times):.2f}, max {max(times):.2f})")
        print("heavy modules imported: " + (", ".join(m for m in HEAVY if m in imported) or "none"))


if __name__ == "__main__":
    main()
