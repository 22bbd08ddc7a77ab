#!/usr/bin/env bash
# The embedded demo (`make demo`): train and evaluate a PreResNet-20 with one SNL block on RelationDataset,
# images the package generates (no download), and the same network without the block for comparison.
#
# For each of the two configs of configs/demo: tools/dist_train.sh with 2 processes (gloo on a machine
# without GPUs), then tools/test.py on the last checkpoint; for the SNL model, an attention-map PNG of the
# trained block (tools/analysis/attention_map.py). Prints the accuracies and where the logs, checkpoints
# and the PNG are.
#
# Environment: PYTHON (default .venv/bin/python, else python), WORK_DIR (default work_dirs/demo),
# NPROC (processes, default 2), PORT (default: a free port).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
export PYTHON
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# one thread per process: the two training processes share the cores, and a second thread only spins on
# a busy machine
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
WORK_DIR=${WORK_DIR:-work_dirs/demo}
NPROC=${NPROC:-2}
if [ -z "${PORT:-}" ]; then
    PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
export PORT

SNL_CONFIG=configs/demo/preresnet20-snl_relation.py
BASE_CONFIG=configs/demo/preresnet20_relation.py

train_and_test() {  # NAME CONFIG
    local name=$1 config=$2 dir=$WORK_DIR/$1
    echo "==> [$name] training $config on $NPROC processes (tools/dist_train.sh)"
    rm -rf "$dir"
    bash tools/dist_train.sh "$config" "$NPROC" --work-dir "$dir"
    local ckpt
    ckpt=$(cat "$dir/last_checkpoint")
    echo "==> [$name] testing $ckpt (tools/test.py)"
    "$PYTHON" tools/test.py "$config" "$ckpt" --work-dir "$dir/test" \
        --out "$dir/test_metrics.json" --out-item metrics
}

start=$(date +%s)
train_and_test snl "$SNL_CONFIG"
echo "==> [snl] attention maps of the trained block (tools/analysis/attention_map.py)"
"$PYTHON" tools/analysis/attention_map.py "$SNL_CONFIG" "$(cat "$WORK_DIR/snl/last_checkpoint")" \
    --out "$WORK_DIR/snl/attention.png" --num-images 4
train_and_test baseline "$BASE_CONFIG"

"$PYTHON" tools/demo.py "$WORK_DIR" --seconds $(( $(date +%s) - start ))
