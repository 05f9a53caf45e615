"""One trial: `python -m sweeper.train [overrides]` composes conf/train.yaml, trains, writes metrics.json.

The training itself is sweeper/mnist/trial.py. The Hydra task `main` returns the final test accuracy, the
objective a sweeper maximises. The command line (`cli`) is checked before Hydra creates a run dir: a refused
command leaves nothing behind.
"""
import errno
import logging
import os
import sys
import tempfile

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from sweeper.engine import worker
from sweeper.mnist import metrics as mx, overrides
from sweeper.mnist.checks import ConfigError, check_config
from sweeper.mnist.files import DataError, check_files

# sweeper/mnist/trial.py imports torch (about a second): only a process that trains pays for it, not a refused
# command, nor a sweep whose trials run in worker processes

log = logging.getLogger(__name__)
CONFIG_PATH, CONFIG_NAME = "../conf", "train"   # relative to this file, as hydra.main takes it


class CheckOutputDir(Callback):
    """Fail in one line, before Hydra writes anything, when the run or sweep dir cannot be written.

    The check creates no dir: a sweep the sweeper then refuses (a bad setting, an empty space) must leave nothing
    behind, so it writes a probe file into the nearest folder that exists, and removes it."""

    def on_run_start(self, config, **kwargs):
        self.check("hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config, **kwargs):
        self.check("hydra.sweep.dir", config.hydra.sweep.dir)

    @staticmethod
    def check(key, path):
        existing = os.path.abspath(path)
        while not os.path.lexists(existing):
            existing = os.path.dirname(existing)
        where = "" if existing == os.path.abspath(path) else f" at {existing}"
        try:
            if not os.path.isdir(existing):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
            fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=existing)
            os.close(fd)
            os.remove(probe)
        except OSError as e:
            print(f"error: {key}={path!r} cannot be written ({e.strerror}{where}); choose a writable folder, "
                  f"e.g. {key}=outputs/run", file=sys.stderr)
            sys.exit(2)


@hydra.main(config_path=CONFIG_PATH, config_name=CONFIG_NAME, version_base="1.3")
def main(cfg: DictConfig) -> float:
    from sweeper.mnist.trial import Pruned, Rejected, TrialFailed, train
    hc = HydraConfig.get()
    in_sweep = hc.mode == RunMode.MULTIRUN or worker.in_sweep()
    try:
        # sweeper.report is a no-op outside a sweep: the trial runs the same on its own
        metrics = train(cfg, hc.runtime.output_dir, hc.overrides.task,
                        lambda epoch, acc, may_prune: worker.report(acc, epoch, may_prune))
    except Rejected as e:
        if in_sweep:
            # metrics.json says rejected; the sweep records accuracy 0 (never a good trial) and the broken budget
            log.warning(f"rejected: {e}")
            return 0.0
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except Pruned as e:
        import optuna
        raise optuna.TrialPruned(str(e)) from None
    except (ConfigError, InstantiationException, DataError, TrialFailed) as e:
        if in_sweep:
            raise  # the sweeper records the trial as failed and goes on
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1 if isinstance(e, TrialFailed) else 2)
    except KeyboardInterrupt:
        if in_sweep:
            raise  # the sweep stops, and re-queues this trial
        print(f"error: {interrupted(hc.runtime.output_dir, cfg.trainer.epochs)}", file=sys.stderr)
        sys.exit(130)
    log.info(f"final test acc {metrics['final_test_acc']:.4f} (best {metrics['best_test_acc']:.4f}), "
             f"{metrics['params']} params -> {hc.runtime.output_dir}/metrics.json")
    return metrics["final_test_acc"]


def interrupted(out_dir, epochs):
    """What a Ctrl-C'd run says: how far it got and what it kept (train() wrote metrics.json on its way out)."""
    m = mx.read(out_dir) or {}
    done = len(m.get("epochs") or [])
    return (f"interrupted (Ctrl-C) after {done} of {epochs} epochs; {out_dir} keeps metrics.json (status "
            f"{m.get('status', 'not written')}) and train.log, no model.pt")


def check_command(argv):
    """Everything a trial would refuse, checked before Hydra creates a dir: keys and group options
    (sweeper/mnist/overrides.py), values, the device and, with no download to try, MNIST. In a sweep, the values
    of swept keys are left to each trial."""
    checked = overrides.check(argv, os.path.join(os.path.dirname(__file__), CONFIG_PATH), CONFIG_NAME)
    if checked is None:
        return   # --help, --cfg, ... or a command Hydra refuses in its own words
    cfg, swept = checked.cfg, checked.swept
    check_config(cfg, swept)
    if "device" not in swept and cfg.device not in ("auto", "cpu"):
        from sweeper.mnist.trial import pick_device   # torch: is CUDA (or MPS) here?
        pick_device(cfg.device)
    if not cfg.data.download and not swept & {"data.root", "data.download"}:
        check_files(cfg.data.root)


def cli():
    """`python -m sweeper.train [overrides]`: a refused command exits 2 with one line and leaves nothing."""
    if not worker.in_sweep():   # a sweep's worker runs what its sweep checked at its start
        try:
            check_command(sys.argv[1:])
        except (overrides.OverrideError, ConfigError, DataError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
    try:
        main()
    except KeyboardInterrupt:   # before the trial started (composing, Hydra's setup) or a sweep worker's
        print("error: interrupted (Ctrl-C)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    cli()
