#!/usr/bin/env bash
# The smallest-net hunt (issue 10): hparams_search=smallest on full data, 15 epochs, each hit confirmed on two
# more seeds (confirm_seeds=2), over the candidates the budget sweep and the probes pointed at. Two 1-thread
# trials at a time; each round is one study in outputs/sweeps.db, its trials in outputs/multirun/<study>/.
#   MNIST_ROOT=../shared/data bash benchmarks/hunt.sh 1     # round 1: dropout 0.02, widths 11-13 (23 min here)
#   MNIST_ROOT=../shared/data bash benchmarks/hunt.sh 2     # round 2: dropout 0.03, widths 12-13
#   MNIST_ROOT=../shared/data bash benchmarks/hunt.sh 3     # round 3: lean 12 (4,660) at dropout 0.01, for < 5,000
#   python -m sweeper.compare outputs/multirun/hunt outputs/multirun/hunt2 outputs/multirun/hunt3 --sort params
set -euo pipefail
cd "$(dirname "$0")/.."
common=(--multirun hparams_search=smallest hydra/sweeper/sampler=grid augment=affine optimizer.lr=0.2
        trainer.epochs=15 hydra.sweeper.confirm_seeds=2 hydra.sweeper.n_jobs=2)
case "${1:-1}" in
  1) python -m sweeper.train "${common[@]}" hydra.sweeper.study_name=hunt hydra.sweeper.n_trials=6 \
         'model=choice(lean, slim)' 'model.width=choice(11, 12, 13)' model.dropout=0.02 ;;
  2) python -m sweeper.train "${common[@]}" hydra.sweeper.study_name=hunt2 hydra.sweeper.n_trials=4 \
         'model=choice(lean, slim)' 'model.width=choice(12, 13)' model.dropout=0.03 ;;
  3) python -m sweeper.train "${common[@]}" hydra.sweeper.study_name=hunt3 hydra.sweeper.n_trials=1 \
         'model=choice(lean)' 'model.width=choice(12)' model.dropout=0.01 hydra.sweeper.n_jobs=1 ;;
esac
