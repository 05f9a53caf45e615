"""A plain Hydra app, as people bring it from hydra-optuna-sweeper: no budget, no metrics.json, no torch.

It returns x**2 + y**2 (or two objectives), can report steps for pruning, fail on purpose, and records the
config it ran with in `seen.yaml` (in the working dir, which `hydra.job.chdir=True` makes the job dir).
"""
import hydra
import optuna
from omegaconf import OmegaConf

import sweeper


@hydra.main(config_path="conf", config_name="quadratic", version_base="1.3")
def main(cfg):
    OmegaConf.save(cfg, "seen.yaml" if cfg.get("chdir_probe") else f"{cfg.out}/seen-{cfg.x}-{cfg.y}.yaml")
    if cfg.fail_from is not None and cfg.x >= cfg.fail_from:
        raise ValueError(f"x={cfg.x} is too big")
    value = cfg.x ** 2 + cfg.y ** 2
    for step in range(cfg.steps):
        if sweeper.report(value, step):
            raise optuna.TrialPruned()
    if cfg.two:
        return value, (cfg.x - 2) ** 2 + (cfg.y - 1) ** 2
    return value


if __name__ == "__main__":
    main()
