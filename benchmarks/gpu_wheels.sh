#!/usr/bin/env bash
# What benchmarks/gpu_check.sh needs on a GPU machine that has torch (and torchvision, numpy, PyYAML, tqdm, ...)
# but none of our other dependencies and no network. Run here, where pip reaches the package index:
#
#   MNIST_ROOT=../shared/data bash benchmarks/gpu_wheels.sh      # ~16 MB into .gpu/ (git-ignored)
#
#   .gpu/wheels/  wheels for the GPU image's Python (3.12, x86-64) of hydra-core, omegaconf, antlr4, optuna and
#                 optuna's needs that the image lacks, at the versions installed here, so the GPU runs what CI tests
#   .gpu/mnist/   MNIST's four raw files gzipped: 11 MB instead of 55, since a device call carries at most 64 MiB
#
# Then carry `.gpu` in the device call (README, "GPU"); gpu_check.sh installs the wheels offline into /tmp/site.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${GPU_PYTHON:-3.12}
MNIST_ROOT=${MNIST_ROOT:-data}
raw=$MNIST_ROOT/MNIST/raw
files=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
for f in "${files[@]}"; do
    [[ -f $raw/$f ]] || { echo "error: $raw/$f not found; point MNIST_ROOT at a folder holding MNIST/raw/" >&2; exit 2; }
done

# the GPU image has numpy, PyYAML, packaging, tqdm, MarkupSafe and typing-extensions; alembic wants a recent one
pins=$(python - <<'PY'
from importlib.metadata import version
names = ["hydra-core", "omegaconf", "optuna", "alembic", "Mako", "SQLAlchemy", "colorlog", "typing-extensions"]
print(" ".join(f"{n}=={version(n)}" for n in names))
PY
)
rm -rf .gpu/wheels .gpu/mnist
mkdir -p .gpu/wheels .gpu/mnist
python -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu/wheels $pins
# antlr4's runtime is published as a source archive only: build its (pure Python) wheel here
python -m pip wheel -q --no-deps -w .gpu/wheels "antlr4-python3-runtime==$(python -c \
    'from importlib.metadata import version; print(version("antlr4-python3-runtime"))')"
for f in "${files[@]}"; do gzip -9 -c "$raw/$f" > ".gpu/mnist/$f.gz"; done
ls -1 .gpu/wheels
du -sh .gpu/wheels .gpu/mnist
