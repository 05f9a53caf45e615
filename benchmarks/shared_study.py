"""Duplicate asks when several sweeps started together share one study (issue 20, item 4).

    python benchmarks/shared_study.py [--repeats 7] [--checkout DIR] [--space continuous|discrete|both]

Per repeat, `--sweeps` (4) sweeps of the torch-free plain app (tests/apps/plainapp: TPE, `sampler.seed: 123`) are
started together, each `python -m plainapp.app --multirun hydra.sweeper.n_trials=24 ...` as a user types it, on
ONE study in a fresh database of a throwaway PostgreSQL server (tests/servers.py; or `--storage`), and waited for.
The trials return at once (`PLAINAPP_SLEEP=0`, or `--sleep`). Two search spaces, measured apart:

- continuous: `x=interval(-5.0,5.0) y=interval(-5.0,5.0)`: two floats are never alike by chance, so every
  duplicate is the sampler proposing what another sweep proposed (sweeps sampling with the same seed);
- discrete: the app's own space, `x: range(-5, 5)` and `y: choice(-2, 0, 2)`: 30 points for 24 trials, so
  duplicates are partly unavoidable whatever the seeds (a random sampler needs about 46 draws for 24 distinct
  points: 48 % duplicates), and TPE, on so few points, proposes its favourite again and again until the ledger
  takes 20 duplicates in a row for an exhausted space and stops the sweep short of n_trials.

Overrides after the options go to every sweep, e.g. `hydra/sweeper/sampler=random hydra.sweeper.sampler.seed=123`.

For each repeat it prints the asks (every trial of the study), the duplicates (asks the ledger closed, uncounted,
as "duplicate of another trial's params"), their share of the asks, the surplus asks (closed past n_trials) and
the counted finished trials (tests/conftest.py's `counted`: must be n_trials exactly), the trials left RUNNING and
the counted trials whose params another counted trial ran too (`twice`: should be 0); then per space the median
and the spread of the rate, whether the issue's bar holds (duplicates < 10 % of the asks in every repeat, every
study at exactly n_trials, nothing left RUNNING), and a last line of JSON.

`--checkout DIR` runs another checkout's sweeper (PYTHONPATH=DIR, and DIR's tests/apps when it has them), e.g.
the code before a change:

    git worktree add /tmp/before-seed 357202f
    python benchmarks/shared_study.py --checkout /tmp/before-seed
"""
import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from servers import create_database, running_postgres  # noqa: E402

from scale_out import _machine  # noqa: E402  (benchmarks/ is this script's own folder on sys.path)

SPACES = {
    "continuous": ["x=interval(-5.0,5.0)", "y=interval(-5.0,5.0)"],
    "discrete": [],   # the app's own: x: range(-5, 5, step=1), y: choice(-2, 0, 2)
}
DUPLICATE = "duplicate of another trial's params"
STUDY = "shared"


def sweep_cmd(url, n_trials, sweep_dir, out, space, extra):
    return [sys.executable, "-m", "plainapp.app", "--multirun", f"hydra.sweep.dir={sweep_dir}", f"out={out}",
            f"hydra.sweeper.storage='{url}'", f"hydra.sweeper.study_name={STUDY}",
            f"hydra.sweeper.n_trials={n_trials}", *SPACES[space], *extra]


def run_sweeps(url, n, n_trials, space, where, checkout, sleep, extra):
    """Start n sweeps of one study together, wait for all; exit on a failed sweep."""
    apps = ROOT / "tests" / "apps"
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PLAINAPP_SLEEP": str(sleep)}
    if checkout:
        apps = checkout / "tests" / "apps" if (checkout / "tests" / "apps" / "plainapp").is_dir() else apps
        env["PYTHONPATH"] = os.pathsep.join([str(checkout), *filter(None, [env.get("PYTHONPATH")])])
    out = where / "out"   # one for all: the study's identity holds the fixed overrides, `out=` among them
    out.mkdir(parents=True)
    procs = [subprocess.Popen(sweep_cmd(url, n_trials, where / f"sweep{i}", out, space, extra), cwd=apps, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(n)]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    for p, err in zip(procs, errors):
        if p.returncode != 0:
            sys.exit(f"a sweep failed ({p.returncode}):\n{err[-3000:]}")


def tally(url, n_trials):
    """What the study holds after the sweeps: asks, duplicates, surplus, counted finished, running."""
    import optuna
    from optuna.trial import TrialState
    from conftest import counted
    s = optuna.load_study(study_name=STUDY, storage=url)
    trials = [t for t in s.trials if t.state != TrialState.WAITING]
    reasons = [t.user_attrs.get("reason", "") for t in trials if t.user_attrs.get("uncounted")]
    finished = [t for t in counted(s) if t.state.is_finished()]
    r = dict(asks=len(trials), duplicates=reasons.count(DUPLICATE),
             surplus=sum(x.startswith("surplus") for x in reasons), counted=len(finished),
             running=sum(t.state == TrialState.RUNNING for t in trials),
             twice=len(finished) - len({tuple(sorted(t.params.items())) for t in finished}))
    r["rate"] = round(r["duplicates"] / r["asks"], 3) if r["asks"] else 0.0
    r["ok"] = r["rate"] < 0.10 and r["counted"] == n_trials and r["running"] == 0
    return r


def measure(server, args, space, checkout):
    rows = []
    print(f"\n{space} space, {args.sweeps} sweeps x one study, n_trials={args.n_trials}, "
          f"code: {checkout or ROOT}", flush=True)
    print(f"{'repeat':>6} {'asks':>5} {'dup':>4} {'dup/asks':>8} {'surplus':>7} {'counted':>7} {'running':>7} "
          f"{'twice':>5} {'wall s':>6}", flush=True)
    with tempfile.TemporaryDirectory(prefix="shared-study-", dir=args.out) as tmp:
        for rep in range(args.repeats):
            url = create_database(server)
            start = time.time()
            run_sweeps(url, args.sweeps, args.n_trials, space, Path(tmp) / f"{space}{rep}", checkout, args.sleep,
                       args.override)
            r = dict(tally(url, args.n_trials), wall_s=round(time.time() - start, 1))
            rows.append(r)
            print(f"{rep + 1:>6} {r['asks']:>5} {r['duplicates']:>4} {r['rate']:>8.1%} {r['surplus']:>7} "
                  f"{r['counted']:>7} {r['running']:>7} {r['twice']:>5} {r['wall_s']:>6}", flush=True)
    rates = [r["rate"] for r in rows]
    summary = dict(median_rate=statistics.median(rates), min_rate=min(rates), max_rate=max(rates),
                   all_ok=all(r["ok"] for r in rows), repeats=rows)
    print(f"duplicates/asks: median {summary['median_rate']:.1%}, spread {summary['min_rate']:.1%} .. "
          f"{summary['max_rate']:.1%}; bar (< 10 % in every repeat, exactly {args.n_trials} counted, none running): "
          f"{'met' if summary['all_ok'] else 'NOT met'}", flush=True)
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="repeats per space (default 7)")
    ap.add_argument("--sweeps", type=int, default=4, help="sweeps started together on the study (default 4)")
    ap.add_argument("--n-trials", type=int, default=24, help="hydra.sweeper.n_trials (default 24)")
    ap.add_argument("--space", choices=["continuous", "discrete", "both"], default="both")
    ap.add_argument("--sleep", type=float, default=0.0, help="seconds each trial sleeps (default 0)")
    ap.add_argument("--checkout", type=Path, help="run this checkout's code (PYTHONPATH=DIR)")
    ap.add_argument("--storage", help="a PostgreSQL server's base URL, postgresql+psycopg://user@host:port "
                                      "(default: a throwaway server)")
    ap.add_argument("--out", default=None, help="sweep dirs go in a temp dir under here (default: the system's)")
    ap.add_argument("override", nargs="*", help="more overrides for every sweep, e.g. hydra/sweeper/sampler=random")
    args = ap.parse_args()
    checkout = args.checkout.resolve() if args.checkout else None
    if checkout and not (checkout / "sweeper" / "engine").is_dir():
        sys.exit(f"--checkout {args.checkout}: no sweeper/engine there")
    commit = subprocess.run(["git", "-C", str(checkout or ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    spaces = ["continuous", "discrete"] if args.space == "both" else [args.space]
    results = {}
    with running_postgres() if args.storage is None else contextlib.nullcontext(args.storage) as server:
        for space in spaces:
            results[space] = measure(server, args, space, checkout)
    print(json.dumps(dict(machine=_machine(), cores=os.cpu_count(), code=str(checkout or ROOT), commit=commit,
                          sweeps=args.sweeps, n_trials=args.n_trials, overrides=args.override, **results)))


if __name__ == "__main__":
    main()
