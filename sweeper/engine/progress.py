"""What the sweep's terminal shows: one live line while trials run, and a summary when the sweep ends.

The line: trials done of n_trials, running, pruned, failed, rejected, hits (where the policy has them), the best
value so far with its trial number, and an ETA from the trials' own durations. On a terminal it is a tqdm line
that redraws itself under Hydra's log lines (which go through tqdm.write meanwhile, so neither breaks the other);
otherwise, and when jobs run in the sweep's own process (their own log lines and epoch bars share the terminal),
it is a plain log line after each trial.
"""
import contextlib
import logging
import sys
import time

log = logging.getLogger(__name__)


class Progress:
    def __init__(self, study, n_trials, n_jobs, policy, live):
        self.study, self.n_trials, self.n_jobs, self.policy = study, n_trials, n_jobs, policy
        self.bar = None
        if live and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=n_trials, bar_format="{desc}", file=sys.stderr, dynamic_ncols=True)

    @contextlib.contextmanager
    def shown(self):
        """While the block runs, log lines on the console go through tqdm, above the live line."""
        if self.bar is None:
            yield self
            return
        from tqdm.contrib.logging import logging_redirect_tqdm
        try:
            with logging_redirect_tqdm():
                yield self
        finally:
            self.bar.close()

    def update(self, finished, running):
        """After a trial is told (and once at the start): `finished` and `running` are the study's counted trials."""
        line = status_line(self.study, finished, running, self.n_trials, self.n_jobs, self.policy)
        if self.bar is not None:
            self.bar.set_description_str(line)
        else:
            log.info(line)


def status_line(study, finished, running, n_trials, n_jobs, policy):
    statuses = [t.user_attrs.get("status") or t.state.name.lower() for t in finished]
    parts = [f"{len(finished)}/{n_trials} done", f"{len(running)} running"]
    parts += [f"{statuses.count(s)} {s}" for s in ("pruned", "failed", "rejected") if statuses.count(s)]
    hits = policy.hits(finished)
    if hits is not None:
        parts.append(f"{len(hits)} hit{'' if len(hits) == 1 else 's'}")
    best = best_so_far(study, policy.names)
    eta = remaining_seconds(finished, running, n_trials, n_jobs)
    return " | ".join(parts + ([f"best {best}"] if best else []) + ([f"ETA {_duration(eta)}"] if eta else []))


def best_so_far(study, names):
    """`final_test_acc 0.9951 (trial 8)`, or the size of the Pareto set; None before a feasible trial completed."""
    if len(names) > 1:
        front = [t.number for t in study.best_trials]
        return f"Pareto set of {len(front)}" if front else None
    try:
        best = study.best_trial
    except ValueError:   # none completed, or none feasible yet
        return None
    return f"{names[0]} {best.value:.6g} (trial {best.number})"


def remaining_seconds(finished, running, n_trials, n_jobs):
    """ETA: the mean duration of finished trials, times the trials still to start, spread over n_jobs slots, plus
    what the running ones have left. None until a trial has finished."""
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in finished
                 if t.datetime_complete and t.datetime_start]
    if not durations:
        return None
    mean = sum(durations) / len(durations)
    now = time.time()
    left = [max(0.0, mean - (now - t.datetime_start.timestamp())) for t in running if t.datetime_start]
    to_start = max(0, n_trials - len(finished) - len(running))
    return (to_start * mean + sum(left)) / max(1, n_jobs)


def _duration(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def final_lines(study, finished, policy, sweep_dir, storage_url, rerun):
    """The sweep's last lines: its best trial(s) with params, values and dir; its hits; where trials.csv is and the
    command that plots it; the command that trains the best trial again (`rerun(trial)` -> the command, or None)."""
    lines = []
    names = policy.names
    best = _best(study)
    for t in best[:5]:
        values = ", ".join(f"{n} {v:.6g}" for n, v in zip(names, t.values))
        lines.append(f"{'best' if len(names) == 1 else 'Pareto'} trial {t.number}: {values}, params {t.params}, "
                     f"dir {t.user_attrs.get('dir', '-')}")
    if len(best) > 5:
        lines.append(f"... and {len(best) - 5} more in the Pareto set: see optimization_results.yaml")
    if not best:
        lines.append("no trial completed" + (" inside the constraints" if finished else ""))
    hits = policy.hits(finished)
    if hits is not None:
        lines.append(f"hits: {len(hits)}" + (f" (trials {', '.join(str(t.number) for t in hits)})" if hits else ""))
    study_args = f" --storage {storage_url} --study {study.study_name}" if storage_url and "://" in storage_url else ""
    lines.append(f"every trial: {sweep_dir / 'trials.csv'}; plots: python -m sweeper.compare {sweep_dir}{study_args} "
                 f"--plot {sweep_dir / 'plots'}")
    command = rerun(best[0]) if best else None
    if command:
        lines.append(f"train the {'best' if len(names) == 1 else 'first Pareto'} trial again: {command}")
    return lines


def _best(study):
    try:
        return list(study.best_trials) if len(study.directions) > 1 else [study.best_trial]
    except ValueError:   # no feasible trial completed
        return []


class log_to_file:
    """The sweep's own log lines, and Optuna's ("A new study created", "Using an existing study"), into
    <sweep dir>/sweep.log; Optuna's leave the terminal unless `optuna_on_terminal` (hydra.verbose names optuna)."""

    def __init__(self, path, optuna_on_terminal):
        import optuna
        self.handler = logging.FileHandler(path)
        self.handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        self.loggers = [logging.getLogger("optuna"), logging.getLogger("sweeper")]
        for logger in self.loggers:
            logger.addHandler(self.handler)
        logging.getLogger("sweeper").setLevel(logging.INFO)
        self.restore = None
        if not optuna_on_terminal:
            optuna.logging.disable_default_handler()
            self.restore = optuna.logging.enable_default_handler

    def close_and_detach(self):
        for logger in self.loggers:
            logger.removeHandler(self.handler)
        self.handler.close()
        if self.restore is not None:
            self.restore()
            self.restore = None
