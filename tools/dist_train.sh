#!/usr/bin/env bash
# Distributed training with torchrun, as OpenMMLab's tools/dist_train.sh.
#   bash tools/dist_train.sh CONFIG GPUS [train.py args...]
# GPUS is the number of processes on this node (one per GPU; on a machine without GPUs, one per CPU process,
# which then train with gloo). Multi-node: run the same command on every node with
#   NNODES=2 NODE_RANK=0|1 MASTER_ADDR=<node 0 address> PORT=29500
# PYTHON selects the interpreter (default: python).

CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}

PYTHONPATH="$(dirname $0)/..":$PYTHONPATH \
$PYTHON -m torch.distributed.run \
    --nnodes=$NNODES \
    --node_rank=$NODE_RANK \
    --master_addr=$MASTER_ADDR \
    --nproc_per_node=$GPUS \
    --master_port=$PORT \
    $(dirname "$0")/train.py \
    $CONFIG \
    --launcher pytorch ${@:3}
