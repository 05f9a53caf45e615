#!/usr/bin/env bash
# Issue 12's GPU figures, side by side in one run of at most 6 minutes on one CUDA GPU (sized for an H100):
#   1. tests/test_gpu.py: capture and replay, replays against the eager loop, the fallback after a failed capture
#   2. img/s of the real trainer at batch 64 over one 60k epoch (benchmarks/throughput.py): the seed's pipeline,
#      ours with the CUDA graph (the default) and ours eager (trainer.cuda_graph=false)     goal >= 70k img/s
#   3. the default 8-epoch trial, from process start to exit                             goal <= 12 s, >= 99.4 %
#   4. hparams_search=budget, 16 trials, n_jobs=8, CUDA MPS on (auto)                     goal <= 45 s
#   5. trainer.compile=true against false, 3 epochs each: seconds per epoch after the first   goal: not slower
#
#   bash benchmarks/gpu_check.sh [OUTDIR]      # OUTDIR default benchmarks/out; MNIST_ROOT as for the tests
#
# On a machine whose Python has torch but not hydra-core/optuna and no network (the device machines here), first
# run `bash benchmarks/gpu_wheels.sh` where pip works and carry the git-ignored .gpu/ along: this script then
# installs .gpu/wheels offline into /tmp/site and, without MNIST_ROOT, unpacks .gpu/mnist into /tmp/mnist.
# Writes OUTDIR/env.txt, one log per step, the trials' dirs, and OUTDIR/summary.txt: one line per step, then the
# goals. A step that fails or times out is noted and the next one still runs; each step's timeout is cut to what
# is left of the 6 minutes.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/benchmarks/out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}   # the GPU image's torch lives in python3; there may be no `python`
DEADLINE=$((SECONDS + 350))
: > "$OUT/summary.txt"

note() { echo "$*" | tee -a "$OUT/summary.txt"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
limit() {  # a step's timeout: its own, or what is left before the deadline (at least 1 s: timeout 0 never fires)
    local left=$((DEADLINE - SECONDS))
    if ((left < 1)); then echo 1; elif ((left < $1)); then echo "$left"; else echo "$1"; fi
}
metrics() {  # one line about a trial from its metrics.json
    "$PY" - "$@" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
s = [e["seconds"] for e in m["epochs"]]
rest = s[1:] or s
print(f"{m['status']}, cuda_graph {m.get('cuda_graph')}, final acc {m['final_test_acc']}, {len(s)} epochs, "
      f"epoch s: first {s[0] if s else None} then mean {sum(rest) / len(rest) if rest else float('nan'):.2f}")
EOF
}

# 0. set-up: what the image lacks, from .gpu/ (benchmarks/gpu_wheels.sh)
if ! "$PY" -c 'import hydra, omegaconf, optuna' 2>/dev/null; then
    if [[ ! -d .gpu/wheels ]]; then
        echo "error: $PY lacks hydra-core/optuna and there is no .gpu/wheels: run benchmarks/gpu_wheels.sh" >&2
        exit 2
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .gpu/wheels/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"   # sweeper and hydra_plugins without installing the repo
if [[ -z ${MNIST_ROOT:-} && -d .gpu/mnist ]]; then
    mkdir -p /tmp/mnist/MNIST/raw
    for f in .gpu/mnist/*.gz; do gunzip -c "$f" > "/tmp/mnist/MNIST/raw/$(basename "$f" .gz)"; done
    MNIST_ROOT=/tmp/mnist
fi
MNIST_ROOT=${MNIST_ROOT:-data}
if [[ ! -f $MNIST_ROOT/MNIST/raw/train-images-idx3-ubyte ]]; then
    echo "error: no MNIST/raw/ under MNIST_ROOT=$MNIST_ROOT; point MNIST_ROOT at a folder holding it" >&2
    exit 2
fi
MNIST_ROOT=$(cd "$MNIST_ROOT" && pwd)
export MNIST_ROOT PYTHONUNBUFFERED=1
{
    date -u
    git rev-parse HEAD 2>/dev/null || echo "not a git checkout"
    nvidia-smi || echo "nvidia-smi: not available"
    command -v nvidia-cuda-mps-control || ls /usr/local/nvidia/bin/nvidia-cuda-mps-control || echo "no MPS control"
    grep -m1 'model name' /proc/cpuinfo || true
    echo "cpu cores: $(nproc)"
    "$PY" -c 'import hydra, optuna; print("hydra", hydra.__version__, "optuna", optuna.__version__)'
} > "$OUT/env.txt" 2>&1
if ! "$PY" -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())' >> "$OUT/env.txt" 2>&1; then
    tail -n 3 "$OUT/env.txt" >&2
    echo "error: torch sees no CUDA GPU (see $OUT/env.txt)" >&2
    exit 1
fi
note "0 env: $(tail -n 1 "$OUT/env.txt"), set-up ${SECONDS} s"

# 1. correctness first: a fast number from a broken step is worth nothing
if timeout "$(limit 100)" "$PY" -m pytest -q -n 0 -p no:cacheprovider tests/test_gpu.py > "$OUT/test_gpu.log" 2>&1; then
    note "1 tests/test_gpu.py: $(tail -n 1 "$OUT/test_gpu.log")"
else
    note "1 tests/test_gpu.py: FAILED or timed out (exit $?): $(tail -n 1 "$OUT/test_gpu.log"), see test_gpu.log"
fi

# 2. img/s at batch 64: seed pipeline and ours (graph) in one process, then ours eager
if timeout "$(limit 100)" "$PY" benchmarks/throughput.py --device cuda --images 60000 > "$OUT/throughput.log" 2>&1; then
    tail -n 1 "$OUT/throughput.log" > "$OUT/throughput.json"
    note "2 img/s, graph: $(cat "$OUT/throughput.json")"
else
    note "2 img/s, graph: FAILED or timed out (exit $?), see throughput.log"
fi
if timeout "$(limit 60)" "$PY" benchmarks/throughput.py --device cuda --images 60000 --ours-only \
        --set trainer.cuda_graph=false > "$OUT/throughput_eager.log" 2>&1; then
    tail -n 1 "$OUT/throughput_eager.log" > "$OUT/throughput_eager.json"
    note "2 img/s, eager: $(cat "$OUT/throughput_eager.json")"
else
    note "2 img/s, eager: FAILED or timed out (exit $?), see throughput_eager.log"
fi

# 3. the default trial as a user runs it
t0=$(now)
if timeout "$(limit 60)" "$PY" -m sweeper.train hydra.run.dir="$OUT/trial" > "$OUT/trial.log" 2>&1; then
    trial_s=$(since "$t0")
    note "3 default trial: wall $trial_s s (process start to exit); $(metrics "$OUT/trial/metrics.json")"
else
    trial_s=""
    note "3 default trial: FAILED or timed out (exit $?) after $(since "$t0") s, see trial.log"
fi

# 4. the budget sweep, 8 trial processes sharing the GPU
t0=$(now)
if timeout "$(limit 120)" "$PY" -m sweeper.train --multirun hparams_search=budget hydra.sweeper.n_trials=16 \
        hydra.sweeper.n_jobs=8 hydra.sweeper.storage=null hydra.sweeper.study_name=gpu_check \
        hydra.sweep.dir="$OUT/sweep" > "$OUT/sweep.log" 2>&1; then
    sweep_s=$(since "$t0")
    states=$("$PY" -c 'import csv, collections, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print(dict(collections.Counter(r["status"] for r in rows)))' "$OUT/sweep/trials.csv" 2>&1 || true)
    graphs=$(grep -l "\"cuda_graph\": true" "$OUT"/sweep/*/metrics.json 2>/dev/null | wc -l || true)
    note "4 budget sweep, 16 trials, n_jobs=8: wall $sweep_s s; $states; $graphs with a CUDA graph; " \
         "$(grep -ho 'CUDA MPS[^;]*' "$OUT/sweep.log" | head -n 1)"
else
    sweep_s=""
    note "4 budget sweep: FAILED or timed out (exit $?) after $(since "$t0") s, see sweep.log"
fi

# 5. torch.compile against none, both with the default CUDA graph
for c in false true; do
    t0=$(now)
    if timeout "$(limit 120)" "$PY" -m sweeper.train trainer.epochs=3 trainer.compile="$c" \
            hydra.run.dir="$OUT/compile_$c" > "$OUT/compile_$c.log" 2>&1; then
        note "5 compile=$c: wall $(since "$t0") s; $(metrics "$OUT/compile_$c/metrics.json")"
    else
        note "5 compile=$c: FAILED or timed out (exit $?) after $(since "$t0") s, see compile_$c.log"
    fi
done

"$PY" - "$OUT" "$trial_s" "$sweep_s" <<'EOF' | tee -a "$OUT/summary.txt"
import json, os, sys
out, trial_s, sweep_s = sys.argv[1], sys.argv[2], sys.argv[3]

def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except (OSError, ValueError):
        return None

def verdict(ok):
    return "n/a" if ok is None else "MET" if ok else "MISSED"

tp, eager = load("throughput.json"), load("throughput_eager.json")
img_s = tp and tp["ours_img_s"]
eager_s = eager and round(eager["images"] / eager["seconds"], 1)
print(f"goal img/s at batch 64 >= 70000: graph {img_s}, eager {eager_s}, seed pipeline {tp and tp['seed_img_s']}"
      f" -> {verdict(img_s and img_s >= 70000)}")
m = load("trial/metrics.json")
acc = m and m["final_test_acc"]
print(f"goal default trial <= 12 s and >= 99.4 %: {trial_s or '-'} s, acc {acc}"
      f" -> {verdict(bool(trial_s) and acc is not None and float(trial_s) <= 12 and acc >= 0.994)}")
print(f"goal budget sweep (16 trials, n_jobs=8) <= 45 s: {sweep_s or '-'} s"
      f" -> {verdict(bool(sweep_s) and float(sweep_s) <= 45)}")
per = {}
for c in ("false", "true"):
    e = (load(f"compile_{c}/metrics.json") or {}).get("epochs") or []
    per[c] = round(sum(x["seconds"] for x in e[1:]) / len(e[1:]), 3) if len(e) > 1 else None
both = None not in per.values()
print(f"goal compile=true not slower (s/epoch after the first, 5 % noise allowed): true {per['true']}, "
      f"false {per['false']}"
      f" -> {verdict(both and per['true'] <= per['false'] * 1.05 if both else None)}")
EOF
note "total ${SECONDS} s; outputs in $OUT"
