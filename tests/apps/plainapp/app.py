"""A plain Hydra app, as people bring it from hydra-optuna-sweeper: no budget, no torch, no metrics.json unless asked.

    cd tests/apps && python -m plainapp.app --multirun out=/tmp/seen hydra.sweep.dir=/tmp/sweep

It returns x**2 + y**2 + len(name) (or two objectives), can report steps for pruning, fail on purpose, write a
`metrics.json` as the MNIST trial does (with `metrics=true`: final_test_acc is `acc`, so the config decides hits), and
records what it ran with: the config in `{out}/seen-{job num}.yaml` (`seen.yaml` in the working dir with
chdir_probe=true, which `hydra.job.chdir=True` makes the job dir) and its own start and end times in
`{out}/ran-{job num}.json` (with the CUDA MPS pipe dir and CUDA_VISIBLE_DEVICES it was given, and whether torch
was imported), so tests measure when jobs really ran, not when the sweeper asked for them. A confirmation run of a
hit (seed > 0) records `ran-{job num}-seed{seed}.json`; the jobs of the x or seeds that PLAINAPP_SLOW lists (x3,s2)
sleep `slow_sleep` seconds more.
"""
import json
import os
import sys
import threading
import time

import hydra
import optuna
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

import sweeper
from sweeper.mnist import metrics as mx


# a global that does not pickle, as torch's do not: a launcher that pickles the task (Ray) must get it by reference,
# as sweeper/engine/launchers.py's `importable` gives it, since by value (cloudpickle's way for __main__) it fails
_RECORDING = threading.Lock()


@hydra.main(config_path="conf", config_name="quadratic", version_base="1.3")
def main(cfg):
    start = time.time()
    num = OmegaConf.select(HydraConfig.get(), "job.num", default="run")   # the trial number in a sweep
    OmegaConf.save(cfg, "seen.yaml" if cfg.chdir_probe else f"{cfg.out}/seen-{num}.yaml")
    time.sleep(float(cfg.sleep))
    seed = cfg.get("seed", 0)   # test_run_forms' own config, as a user brings one, has no seed, slow or acc_on_seed
    if {f"x{cfg.x}", f"s{seed}"} & set(str(cfg.get("slow", "")).split(",")):
        time.sleep(float(cfg.slow_sleep))
    ran = f"ran-{num}.json" if not seed else f"ran-{num}-seed{seed}.json"   # a confirmation run: seed > 0
    with _RECORDING, open(f"{cfg.out}/{ran}", "w") as f:
        json.dump(dict(start=start, end=time.time(), pid=os.getpid(), mps=os.environ.get("CUDA_MPS_PIPE_DIRECTORY"),
                       torch="torch" in sys.modules, gpu=os.environ.get("CUDA_VISIBLE_DEVICES")), f)
    if cfg.fail_from is not None and cfg.x >= cfg.fail_from:
        raise ValueError(f"x={cfg.x} is too big")
    value = cfg.x ** 2 + cfg.y ** 2 + len(cfg.name)
    pruned = False
    for step in range(cfg.steps):
        pruned = sweeper.report(value, step)
        if pruned:
            raise optuna.TrialPruned()
    print(f"report returned {pruned}")
    if cfg.get("metrics"):   # sweeper/mnist/metrics.py's format, as the MNIST trial writes it: status ok, one epoch at `acc`
        acc = cfg.acc_on_seed.get(f"s{seed}", cfg.acc)
        m = mx.new(seed, [], mx.DEFAULT_BUDGET)
        m.update(status="ok", params=100, epochs=[dict(epoch=1, test_acc=acc)], final_test_acc=acc,
                 best_test_acc=acc, ended_at=time.time(), wall_seconds=time.time() - start)
        mx.write_json(os.path.join(HydraConfig.get().runtime.output_dir, "metrics.json"), m)
    if cfg.two:
        return value, (cfg.x - 2) ** 2 + (cfg.y - 1) ** 2
    return value


if __name__ == "__main__":
    main()
