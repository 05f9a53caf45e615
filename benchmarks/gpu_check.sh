#!/usr/bin/env bash
# The GPU measurements for the README, in one go on one CUDA GPU, at most ~8 minutes:
#   1. benchmarks/throughput.py --device cuda --images 60000: the seed's pipeline against ours, img/s
#   2. one full default trial (reference model, 15 epochs): wall time, accuracy, seconds per epoch
#   3. 4 trials of 3 epochs at once on the same GPU: total wall time against one at a time
#   4. only if the config has trainer.compile: 3 epochs with and without it, seconds per epoch
# Measured: see README's performance section.
#
#   MNIST_ROOT=/path/holding/MNIST bash benchmarks/gpu_check.sh [OUTDIR]    # OUTDIR default benchmarks/out
#
# Needs only this repo, its Python dependencies and MNIST's raw files (nothing is downloaded). Writes
# OUTDIR/env.txt, one log per step, the trials' own dirs, and OUTDIR/summary.txt with one line per step.
# A step that fails or times out is noted in the summary and the next one still runs.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/benchmarks/out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$ROOT"
MNIST_ROOT=${MNIST_ROOT:-data}
if [[ ! -f $MNIST_ROOT/MNIST/raw/train-images-idx3-ubyte ]]; then
    echo "error: no MNIST/raw/ under MNIST_ROOT=$MNIST_ROOT; point MNIST_ROOT at a folder holding it" >&2
    exit 2
fi
MNIST_ROOT=$(cd "$MNIST_ROOT" && pwd)
export MNIST_ROOT
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # benchmarks/*.py import sweeper even when not pip-installed
DEADLINE=$((SECONDS + 470))                          # every step's timeout is cut to what is left of 8 minutes
: > "$OUT/summary.txt"

note() { echo "$*" | tee -a "$OUT/summary.txt"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
limit() {  # a step's timeout: its own, or what is left before the deadline (at least 1 s: timeout 0 never fires)
    local left=$((DEADLINE - SECONDS))
    if ((left < 1)); then echo 1; elif ((left < $1)); then echo "$left"; else echo "$1"; fi
}
metrics() {  # one line about a trial from its metrics.json
    python - "$@" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
s = [e["seconds"] for e in m["epochs"]]
rest = s[1:] or s
print(f"{m['status']}, final acc {m['final_test_acc']}, {len(s)} epochs, epoch s: first {s[0] if s else None} "
      f"then mean {sum(rest) / len(rest) if rest else float('nan'):.2f}, trial wall {m['wall_seconds']} s")
EOF
}

# 0. the machine
{
    date -u
    git rev-parse HEAD 2>/dev/null || echo "not a git checkout"
    nvidia-smi || echo "nvidia-smi: not available"
    grep -m1 'model name' /proc/cpuinfo || true
    echo "cpu cores: $(nproc)"
} > "$OUT/env.txt" 2>&1
if ! python -c 'import torch; print(torch.__version__, torch.cuda.get_device_name())' >> "$OUT/env.txt" 2>&1; then
    tail -n 3 "$OUT/env.txt" >&2
    echo "error: torch sees no CUDA GPU (see $OUT/env.txt)" >&2
    exit 1
fi
note "0 env: $(tail -n 1 "$OUT/env.txt")"

# 1. img/s, the seed's pipeline against ours, on a full epoch of images
if timeout "$(limit 150)" python benchmarks/throughput.py --device cuda --images 60000 \
        > "$OUT/throughput_cuda.log" 2>&1; then
    tail -n 1 "$OUT/throughput_cuda.log" > "$OUT/throughput_cuda.json"
    note "1 throughput: $(cat "$OUT/throughput_cuda.json")"
else
    note "1 throughput: FAILED or timed out (exit $?), see throughput_cuda.log"
fi

# 2. one full default trial, as a user runs it
t0=$(now)
if timeout "$(limit 200)" python -m sweeper.train device=cuda trainer.epochs=15 hydra.run.dir="$OUT/trial15" \
        > "$OUT/trial15.log" 2>&1; then
    cp "$OUT/trial15/metrics.json" "$OUT/trial15_metrics.json"
    note "2 trial 15 epochs: wall $(since "$t0") s (process start to exit); $(metrics "$OUT/trial15/metrics.json")"
else
    note "2 trial 15 epochs: FAILED or timed out (exit $?) after $(since "$t0") s, see trial15.log"
fi

# 3. several trials sharing the GPU, as a sweep with n_jobs > 1 would run them
mkdir -p "$OUT/concurrent"
t0=$(now)
t=$(limit 150)
pids=()
for i in 1 2 3 4; do
    timeout "$t" python -m sweeper.train device=cuda trainer.epochs=3 seed="$i" hydra.run.dir="$OUT/concurrent/$i" \
        > "$OUT/concurrent/$i.log" 2>&1 &
    pids+=($!)
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
note "3 concurrent: 4 trials x 3 epochs at once, wall $(since "$t0") s, $failed failed"
for i in 1 2 3 4; do
    if [[ -f $OUT/concurrent/$i/metrics.json ]]; then
        note "3   seed $i: $(metrics "$OUT/concurrent/$i/metrics.json")"
    fi
done

# 4. torch.compile, only where the config has the key (it may not yet)
timeout 60 python -m sweeper.train --cfg job > "$OUT/job_cfg.yaml" 2>&1 || true
if grep -q '^ *compile:' "$OUT/job_cfg.yaml"; then
    for c in false true; do
        t0=$(now)
        if timeout "$(limit 150)" python -m sweeper.train device=cuda trainer.epochs=3 trainer.compile="$c" \
                hydra.run.dir="$OUT/compile_$c" > "$OUT/compile_$c.log" 2>&1; then
            note "4 compile=$c: wall $(since "$t0") s; $(metrics "$OUT/compile_$c/metrics.json")"
        else
            note "4 compile=$c: FAILED or timed out (exit $?) after $(since "$t0") s, see compile_$c.log"
        fi
    done
else
    note "4 compile: skipped, trainer.compile is not in the config"
fi

note "total ${SECONDS} s; outputs in $OUT"
