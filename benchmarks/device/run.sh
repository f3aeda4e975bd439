#!/usr/bin/env bash
# The one call on a lent GPU machine (issues 3 and 5), after
# benchmarks/device/prepare.sh here:
#
#   run(command="bash benchmarks/device/run.sh", carry=[".device"], timeout_s=540)
#
# Stages, each under its own time limit so one slow stage cannot eat the rest:
# the benchmark against the PyTorch peer (CUDA), the cost of deterministic GPU
# ops, the full default schedule (30 epochs) with its training time, evaluate.py
# on it, determinism (two runs with deterministic ops, compared byte for byte),
# and checkpoint portability: the CPU run from .device/ restored, sampled and
# resumed here; this GPU run's checkpoint packed for the reverse check on the CPU
# (portability.py --data-dir there). QUICK=1 shrinks every stage (a dry run on
# the CPU). Output: $OUT/log.txt (everything), bench*.json, eval.json,
# gpu_run.tar.part-* and grid.png: at most 8 files.
set -u
OUT=${OUT:-/tmp/gpu_out}
D=${DEVICE_DIR:-.device}
WORK=${WORK:-/tmp/gpu_work}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" && rm -rf "$WORK" && mkdir -p "$WORK"
ITERS=50; DET_STEPS=300; PEER=(--vs-torch --torch-python python); SHORT=()
if [ "${QUICK:-0}" = 1 ]; then
    ITERS=2; DET_STEPS=3; PEER=(); SHORT=(--max-steps 5)
fi
LOG="$OUT/log.txt"

stage() {  # stage NAME SECONDS COMMAND...: runs it, logs it, never stops the script
    local name=$1 limit=$2; shift 2
    echo "=== $(date +%T) $name: $*" | tee -a "$LOG"
    timeout "$limit" "$@" >"$WORK/$name.txt" 2>&1
    local rc=$?
    cat "$WORK/$name.txt" >>"$LOG"
    echo "=== $name: exit $rc" | tee -a "$LOG"
}
last_json() { grep '^{' "$WORK/$1.txt" | tail -1 >"$OUT/$1.json"; }

stage env 60 bash -c 'nvidia-smi || true; python -c "import jax; print(jax.__version__, jax.devices())"'
stage bench 240 python benchmarks/throughput.py "${PEER[@]}" --peers-dir "$D/peers" \
    --repeats 3 --iters "$ITERS"
last_json bench
stage bench_deterministic 120 env XLA_FLAGS=--xla_gpu_deterministic_ops=true \
    python benchmarks/throughput.py --repeats 3 --iters "$ITERS"
last_json bench_deterministic
stage train 240 python train.py --workdir "$WORK/run" --data-dir "$D/mnist-idx" \
    --keep 1 --no-progress "${SHORT[@]}"
cp "$WORK/run/grid.png" "$OUT/grid.png" 2>/dev/null
stage evaluate 150 python evaluate.py --checkpoint "$WORK/run" --data-dir "$D/mnist-idx" \
    --classifier "$D/mnist_classifier.msgpack" --json "$OUT/eval.json"
stage cpu_checkpoint_on_gpu 120 python benchmarks/device/portability.py "$D/cpu_run" \
    --data-dir "$D/mnist-idx"
stage gpu_reference 60 python benchmarks/device/portability.py "$WORK/run" --write-reference
# The checkpoint alone (no grids, GIF or generator file), in pieces under 16 MiB.
(cd "$WORK" && tar -cf - --exclude=grids --exclude=progress.gif --exclude=generator.msgpack run) \
    | split -b 15M - "$OUT/gpu_run.tar.part-"
for i in 1 2; do
    stage "determinism_$i" 120 env XLA_FLAGS=--xla_gpu_deterministic_ops=true \
        python train.py --workdir "$WORK/det$i" --data-dir "$D/mnist-idx" \
        --max-steps "$DET_STEPS" --keep 1 --no-progress
done
if cmp -s "$WORK/det1/generator.msgpack" "$WORK/det2/generator.msgpack"; then
    echo "=== determinism: the two runs' generator files are identical" | tee -a "$LOG"
else
    echo "=== determinism: the two runs' generator files DIFFER" | tee -a "$LOG"
fi
echo "=== $(date +%T) done" | tee -a "$LOG"
ls -la "$OUT"
