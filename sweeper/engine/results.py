"""A sweep's files, rewritten after every trial: `trials.csv` (every trial) and `optimization_results.yaml`.

optimization_results.yaml is hydra-optuna-sweeper's: `name: optuna` with `best_params` and `best_value` (one
objective) or `solutions`, each with `params` and `values` (the Pareto set of several objectives). Only feasible
trials qualify (inside the budget where there is one); while there is none, the file is not written.
"""
import csv
import os

from omegaconf import OmegaConf
from optuna.trial import TrialState

def write_trials_csv(study, path, value_names, extras=()):
    """`value_names`: one per objective, the value columns; `extras`: user attrs to show as columns where some trial
    has them (both the sweep policy's, sweeper/engine/policy.py)."""
    # not trials to report: re-queued params that have not run yet (WAITING), and duplicate or surplus asks
    # the ledger closed before they ran (uncounted, no dir)
    trials = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING
              and not (t.user_attrs.get("uncounted") and "dir" not in t.user_attrs)]
    names = list(dict.fromkeys(k for t in trials for k in t.params))
    values = list(value_names)
    extras = [k for k in extras if k not in values and any(k in t.user_attrs for t in trials)]
    tmp = f"{path}.tmp{os.getpid()}"   # two sweeps may share a sweep dir
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["number", "state", "status", *names, *values, *extras, "reason"])
        for t in trials:
            vs = t.values if t.values is not None else [None] * len(values)
            w.writerow([t.number, t.state.name, t.user_attrs.get("status", t.state.name.lower()),
                        *[t.params.get(n) for n in names], *vs, *[t.user_attrs.get(k) for k in extras],
                        t.user_attrs.get("reason")])
    os.replace(tmp, path)


def best(study):
    """hydra-optuna-sweeper's results dict, or None while no feasible trial has completed."""
    if len(study.directions) == 1:
        try:
            b = study.best_trial
        except ValueError:   # "No trials are completed yet" / "No feasible trials are completed yet"
            return None
        return dict(name="optuna", best_params=b.params, best_value=b.value, best_trial=b.number)
    solutions = [dict(params=t.params, values=t.values, number=t.number) for t in study.best_trials]
    return dict(name="optuna", solutions=solutions) if solutions else None


def write_outputs(study, sweep_dir, policy):
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_trials_csv(study, sweep_dir / "trials.csv", policy.names, policy.columns)
    results = best(study)
    if results is not None:
        tmp = sweep_dir / f"optimization_results.yaml.tmp{os.getpid()}"
        OmegaConf.save(OmegaConf.create(results), tmp)
        os.replace(tmp, sweep_dir / "optimization_results.yaml")
