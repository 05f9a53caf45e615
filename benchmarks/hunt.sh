#!/usr/bin/env bash
# The smallest-net hunt (issue 10): hparams_search=smallest on full data, 15 epochs, each hit confirmed on two
# more seeds, over the candidates the budget sweep and the probes pointed at. Two 1-thread trials at a time.
#   MNIST_ROOT=../shared/data bash benchmarks/hunt.sh      # ~1 h on 2 CPU cores
set -euo pipefail
cd "$(dirname "$0")/.."
python -m sweeper.train --multirun hparams_search=smallest hydra/sweeper/sampler=grid \
    'model=choice(lean, slim)' 'model.width=choice(11, 12, 13)' model.dropout=0.02 augment=affine optimizer.lr=0.2 \
    trainer.epochs=15 hydra.sweeper.confirm_seeds=2 hydra.sweeper.n_trials=6 hydra.sweeper.n_jobs=2 \
    hydra.sweeper.study_name=hunt "$@"
