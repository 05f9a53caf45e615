"""How a trial ended, as the sweep tells Optuna: (status, values or None, reason).

From what the job returned (a worker.JobResult) and the metrics.json it wrote, if any (the MNIST trial does;
a plain Hydra app does not).
"""
from sweeper.engine import worker


def outcome(result, m, objectives, n_values):
    """(status, values or None, reason). metrics.json's status wins; `objectives` apply only with one."""
    if m and m.get("status") in ("ok", "rejected", "pruned", "failed"):
        status, reason = m["status"], m.get("reason") or result.error
        if status in ("pruned", "failed"):
            return status, None, reason
        if objectives:
            if status == "rejected":   # an untrained model gets accuracy 0: the worst value, never good
                return status, [float(m.get(k) or 0.0) for k in objectives], reason
            bad = [k for k in objectives if isinstance(m.get(k), bool) or not isinstance(m.get(k), (int, float))]
            if bad:
                return "failed", None, (f"metrics.json has no number for hydra.sweeper.objectives "
                                        f"{bad} (it has {sorted(m)})")
            return status, [float(m[k]) for k in objectives], reason
    elif result.status != "completed":
        return result.status, None, result.error
    else:
        status, reason = "ok", None
    if result.status != "completed":
        return "failed", None, reason or result.error
    values, problem = worker.as_values(result.value, n_values)
    if problem:
        result.error = problem
        return "failed", None, problem
    return status, values, reason
