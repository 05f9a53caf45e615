"""Time to the first confirmed hit: the wait a user of `hparams_search=budget` feels.

    python benchmarks/time_to_hit.py [--repeats 3] [--device cpu|cuda|auto] [--checkout DIR] [-- OVERRIDES...]

Runs, N times with sampler seeds 0 ... N-1, the search a user starts to get one configuration that reaches the
target on every seed, under budget:

    python -m sweeper.train hparams_search=budget hydra.sweeper.confirm_seeds=2 hydra.sweeper.stop_after_hits=1

on full data, cold (`hydra.sweeper.enqueue=[]` where the checkout has that key: a warm start only proves a known
recipe again). OVERRIDES after `--` are added to each sweep (another pruner, `data.train_subset=...` to try the
benchmark quickly). `--checkout DIR` runs another checkout's code (PYTHONPATH=DIR), for the "before" figure.
`--stop-at-hit` stops a sweep once it has a confirmed hit, for code that would go on confirming other trials.

For each run it prints, from the files the sweep wrote (each run's last `metrics.json` write is when it ended):
- the time from the command to the first confirmed hit: the last seed's metrics.json of the first trial whose
  runs all hit;
- the time to the first hit on one seed (unconfirmed);
- the trials and epochs spent (every run, confirmation seeds too), and when the sweep exited.
Then the median and spread of the confirmed-hit times; the last line is JSON.

    python benchmarks/time_to_hit.py --check-pruned SWEEP_DIR

runs every pruned trial of a sweep (kept with --keep) to its end, two at a time, and says whether any would have
hit: a pruner worth keeping never prunes one that would.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.scale_out import _machine  # noqa: E402
from sweeper.mnist.metrics import metrics_hit  # noqa: E402

SEARCH = ["hparams_search=budget", "hydra.sweeper.confirm_seeds=2", "hydra.sweeper.stop_after_hits=1"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="sampler seed of the first run (then +1 each)")
    p.add_argument("--device", default="auto", help="the trials' device: auto, cpu or cuda")
    p.add_argument("--checkout", type=Path, help="run this checkout's code (PYTHONPATH), e.g. the code before a change")
    p.add_argument("--timeout", type=float, default=3600, help="seconds a run may take before it is stopped")
    p.add_argument("--stop-at-hit", action="store_true",
                   help="stop each sweep once it has a confirmed hit (its exit time is then not measured)")
    p.add_argument("--keep", type=Path, help="keep the sweeps' dirs here (default: a temp dir, removed)")
    p.add_argument("--check-pruned", type=Path, metavar="SWEEP_DIR", help="run this sweep's pruned trials to the end")
    p.add_argument("overrides", nargs="*", help="more overrides for every sweep (after --)")
    args = p.parse_args()
    if args.check_pruned:
        return check_pruned(args.check_pruned, args.device)
    code = (args.checkout or ROOT).resolve()
    # the checkout first; what PYTHONPATH held stays behind it (a GPU image's carried wheels, benchmarks/gpu_check.sh)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")])),
           "HYDRA_FULL_ERROR": "1"}
    env.setdefault("MNIST_ROOT", str(ROOT.parent / "shared" / "data"))
    cold = ["hydra.sweeper.enqueue=[]"] if _has_enqueue(code) else []
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        where = args.keep or Path(tmp)
        for i in range(args.repeats):
            seed = args.first_seed + i
            out = where / f"seed{seed}"
            cmd = [sys.executable, "-m", "sweeper.train", *SEARCH, *cold, f"hydra.sweeper.sampler.seed={seed}",
                   f"hydra.sweeper.study_name=time_to_hit_{seed}", f"hydra.sweeper.storage=sqlite:///{out}/study.db",
                   f"hydra.sweep.dir={out}/sweep", f"device={args.device}", *args.overrides]
            out.mkdir(parents=True, exist_ok=True)
            t0 = time.time()
            with open(out / "console.log", "w") as log:
                p = subprocess.Popen(cmd, cwd=code, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
                rc = watch(p, out / "sweep", t0, args)
            run = measure(out / "sweep", t0, time.time())
            run.update(sampler_seed=seed, exit_code=rc)
            if rc in ("stopped at the hit", "timeout"):
                run["exit_s"] = None
            runs.append(run)
            print(describe(run), flush=True)
    times = [r["confirmed_s"] for r in runs if r["confirmed_s"] is not None]
    summary = dict(machine=_machine(), gpu=_gpu(), device=args.device, threads=os.cpu_count(),
                   overrides=args.overrides, checkout=str(code), runs=runs, repeats=len(runs), confirmed=len(times),
                   median_confirmed_s=statistics.median(times) if times else None,
                   min_confirmed_s=min(times, default=None), max_confirmed_s=max(times, default=None))
    if times:
        print(f"time to a confirmed hit, median of {len(times)} (of {len(runs)} runs): {clock(summary['median_confirmed_s'])}"
              f" (spread {clock(min(times))} to {clock(max(times))}) on {summary['gpu'] or summary['machine']}, "
              f"device {args.device}")
    else:
        print(f"no run found a confirmed hit (of {len(runs)})")
    print(json.dumps(summary))


def watch(p, sweep_dir, t0, args):
    """Wait for the sweep to exit -> its exit code; with --stop-at-hit, stop it once a hit is confirmed (SIGTERM,
    which a sweep handles as Ctrl-C: SIGINT stays ignored in a benchmark started in the background with `&`)."""
    while True:
        try:
            return p.wait(5)
        except subprocess.TimeoutExpired:
            pass
        stop = time.time() - t0 > args.timeout and "timeout"
        if args.stop_at_hit and measure(sweep_dir, t0, time.time())["confirmed_s"] is not None:
            stop = "stopped at the hit"
        if stop:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait()
            return stop


def check_pruned(sweep_dir, device):
    """Run each pruned trial of `sweep_dir` to the end with its own overrides, into <trial dir>/full/."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    env.setdefault("MNIST_ROOT", str(ROOT.parent / "shared" / "data"))
    pruned = []
    for d in sorted((d for d in sweep_dir.glob("[0-9]*") if d.name.isdigit()), key=lambda d: int(d.name)):
        m = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").is_file() else {}
        if m.get("status") == "pruned":
            pruned.append((d, m))
    results, queue, running = [], list(pruned), []
    while queue or running:
        while queue and len(running) < 2:
            d, m = queue.pop(0)
            overrides = [o for o in m["overrides"] if not o.startswith("device=")]
            cmd = [sys.executable, "-m", "sweeper.train", *overrides, f"device={device}", "hydra.mode=RUN",
                   f"hydra.run.dir={d / 'full'}"]
            running.append((d, m, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.STDOUT)))
        d, m, proc = running.pop(0)
        proc.wait()
        full = json.loads((d / "full" / "metrics.json").read_text())
        results.append(dict(trial=int(d.name), pruned_at=len(m.get("epochs") or []),
                            acc_when_pruned=(m.get("epochs") or [{}])[-1].get("test_acc"),
                            final_test_acc=full.get("final_test_acc"), epochs=len(full.get("epochs") or []),
                            would_have_hit=metrics_hit(full)))
        r = results[-1]
        print(f"trial {r['trial']}: pruned after epoch {r['pruned_at']} at {r['acc_when_pruned']}; run to the end: "
              f"{r['final_test_acc']} after {r['epochs']} epochs -> {'a hit' if r['would_have_hit'] else 'no hit'}",
              flush=True)
    hits = [r["trial"] for r in results if r["would_have_hit"]]
    print(f"{len(results)} pruned trials run to the end: {len(hits)} would have hit {hits if hits else ''}".rstrip())
    print(json.dumps(dict(sweep_dir=str(sweep_dir), machine=_machine(), pruned=results, would_have_hit=hits)))


def _gpu():
    """The GPU's name as nvidia-smi gives it (without importing torch here), or None."""
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                           timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else None


def _has_enqueue(code):
    """Whether the checkout's sweeper knows hydra.sweeper.enqueue (the code before issue 21 refuses it)."""
    return "enqueue" in (code / "hydra_plugins" / "mnist_optuna_sweeper" / "config.py").read_text()


def measure(sweep_dir, t0, t1):
    """What one sweep spent, from its trial dirs: each run's metrics.json (its last write is when it ended)."""
    trials = []
    for d in sorted(sweep_dir.glob("[0-9]*"), key=lambda d: int(d.name) if d.name.isdigit() else -1):
        if not d.name.isdigit():
            continue
        own = _run(d)
        seeds = [_run(s) for s in sorted(d.glob("seed[0-9]*"), key=lambda s: int(s.name[4:]))]
        trials.append(dict(number=int(d.name), own=own, seeds=seeds))
    first_hit = min((t["own"]["ended"] for t in trials if t["own"] and t["own"]["hit"]), default=None)
    confirmed = None
    for t in trials:
        runs = [t["own"], *t["seeds"]]
        if t["own"] and t["own"]["hit"] and len(t["seeds"]) >= 2 and all(r and r["hit"] for r in runs):
            end = max(r["ended"] for r in runs)
            if confirmed is None or end < confirmed[0]:
                confirmed = end, t
    every = [r for t in trials for r in [t["own"], *t["seeds"]] if r]
    return dict(confirmed_s=None if confirmed is None else confirmed[0] - t0,
                confirmed_trial=None if confirmed is None else _about(confirmed[1]),
                first_hit_s=None if first_hit is None else first_hit - t0, exit_s=t1 - t0,
                trials=sum(1 for t in trials if t["own"] and t["own"]["status"] != "rejected"),
                rejected=sum(1 for t in trials if t["own"] and t["own"]["status"] == "rejected"),
                pruned=sum(1 for t in trials if t["own"] and t["own"]["status"] == "pruned"),
                runs=sum(1 for r in every if r["status"] != "rejected"), epochs=sum(r["epochs"] for r in every))


def _run(d):
    path = d / "metrics.json"
    try:
        m = json.loads(path.read_text())
        ended = path.stat().st_mtime
    except (OSError, ValueError):
        return None
    return dict(status=m.get("status"), hit=metrics_hit(m), epochs=len(m.get("epochs") or []), ended=ended,
                acc=m.get("final_test_acc"), params=m.get("params"), overrides=m.get("overrides"))


def _about(t):
    return dict(number=t["number"], params=t["own"]["params"], overrides=t["own"]["overrides"],
                accs=[r["acc"] for r in [t["own"], *t["seeds"]]])


def clock(seconds):
    return f"{int(seconds // 60)} min {seconds % 60:04.1f} s"


def describe(r):
    head = f"sampler seed {r['sampler_seed']}: "
    if r["confirmed_s"] is None:
        head += "no confirmed hit"
    else:
        c = r["confirmed_trial"]
        head += (f"confirmed hit at {clock(r['confirmed_s'])} (trial {c['number']}, {c['params']:,} params, "
                 f"{', '.join(f'{a:.4f}' for a in c['accs'])})")
    first = "none" if r["first_hit_s"] is None else clock(r["first_hit_s"])
    end = f"exit at {clock(r['exit_s'])} (code {r['exit_code']})" if r["exit_s"] is not None else r["exit_code"]
    return (f"{head}; first hit {first}; {r['trials']} trials ({r['pruned']} pruned, {r['rejected']} rejected), "
            f"{r['runs']} runs, {r['epochs']} epochs; {end}")


if __name__ == "__main__":
    main()
