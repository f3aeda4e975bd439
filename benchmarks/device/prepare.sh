#!/usr/bin/env bash
# Fills the git-ignored .device/ folder that travels to a lent GPU machine
# (carry: [".device"]) for benchmarks/device/run.sh: the IDX MNIST files, the
# peers, the judging classifier, and a small run trained here on the CPU whose
# checkpoint the GPU must load. Run from the repository root, in the venv.
set -euo pipefail
D=.device
SHARED=${SHARED:-../shared}
CLASSIFIER=${CLASSIFIER:-weights/mnist_classifier.msgpack}
# The copied data keep the read-only mode of ../shared: make them removable.
[ -d "$D" ] && chmod -R u+w "$D"
rm -rf "$D" && mkdir -p "$D"
cp -r "$SHARED/data/mnist-idx" "$D/mnist-idx"
mkdir -p "$D/peers" && cp "$SHARED"/peers/peer_*.py "$D/peers/"
# Wheels the GPU machine lacks (it has no network); run.sh installs them there.
mkdir -p "$D/whl" && python -m pip download -q --no-deps --only-binary=:all: \
    --python-version 3.12 --platform manylinux2014_x86_64 -d "$D/whl" \
    "tensorboardX==$(python -c 'import tensorboardX; print(tensorboardX.__version__)')" \
    "protobuf==$(python -c 'import google.protobuf as p; print(p.__version__)')"
if [ ! -f "$CLASSIFIER" ]; then  # trains it (about 8 minutes on 2 cores)
    python -c "from gan import classifier; classifier.load_or_train('$CLASSIFIER', '$D/mnist-idx')"
fi
cp "$CLASSIFIER" "$D/mnist_classifier.msgpack"
# A CPU checkpoint for the GPU to restore, sample and resume (portability.py).
python train.py --workdir "$D/cpu_run" --data-dir "$D/mnist-idx" --max-steps 3 \
    --keep 1 --no-progress
python benchmarks/device/portability.py "$D/cpu_run" --write-reference
# The Orbax checkpoint is what travels; the generator file would only add 9 MB.
rm -f "$D/cpu_run/generator.msgpack" "$D/cpu_run/progress.gif"
du -sh "$D" "$D"/*
