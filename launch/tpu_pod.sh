#!/usr/bin/env bash
# Run the training on every worker of a Cloud TPU VM pod slice (the usual
# `gcloud compute tpus tpu-vm ssh --worker=all` pattern). JAX auto-detects the pod
# (--distributed); each host reads only its rows of every global batch.
#
#   launch/tpu_pod.sh my-tpu us-central2-b configs/treesat.py --workdir=gs://bucket/runs/ts \
#       --config.data.root=/mnt/disks/data/TreeSatAI --config.train.batch_size=256
#
# Workdir: a gs:// path works for checkpoints (orbax/tensorstore) and metrics.jsonl/TensorBoard
# are written by process 0 only; the TreeSatAI reader needs a POSIX path (a persistent disk or a
# gcsfuse mount), since tifffile reads local files. Set REPO_DIR if the repository lives
# elsewhere on the workers and SETUP=1 to pip-install it first.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG [--workdir=W] [overrides...]" >&2; exit 2
fi
tpu=$1; zone=$2; config=$3; shift 3
repo=${REPO_DIR:-'~/mtljax'}
quoted=$(printf ' %q' "$@")
setup=""
if [ "${SETUP:-0}" = 1 ]; then
  setup="pip install -q -e '$repo' 'jax[tpu]' &&"
fi
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command \
  "cd $repo && $setup python3 -m mtljax.main --config=$config --distributed$quoted"
