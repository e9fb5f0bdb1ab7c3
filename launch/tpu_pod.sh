#!/usr/bin/env bash
# Usage: launch/tpu_pod.sh TPU_NAME ZONE CONFIG [train args...]
#   Runs the same training command on every worker of a Cloud TPU VM pod slice. jax finds
#   the other workers by itself (jax.distributed.initialize() auto-detects Cloud TPU), each
#   worker reads its own data rows, process 0 writes logs. Use a gs:// workdir so every
#   worker sees the same checkpoints:
#   launch/tpu_pod.sh my-v5p-64 us-east5-a configs/omnihuman.py:size=base,stage=2 \
#       --workdir=gs://bucket/runs/s2 --config.init_from=gs://bucket/runs/s1
# Environment:
#   REPO_DIR   checkout on the workers (default ~/omnijax); set up once with
#              gcloud compute tpus tpu-vm ssh $TPU --zone $ZONE --worker=all \
#                --command="git clone <repo> ~/omnijax && pip install -e ~/omnijax[tpu]"
#   PROJECT    gcloud project (default: gcloud's configured one)
# Preemption: a SIGTERM on a worker checkpoints and exits 3; rerun the same command to resume.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
TPU=$1; ZONE=$2; CONFIG=$3; shift 3
REPO_DIR=${REPO_DIR:-'~/omnijax'}
ARGS=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" ${PROJECT:+--project "$PROJECT"} --worker=all \
  --command="cd ${REPO_DIR} && python -m omnijax.train --config=$(printf '%q' "$CONFIG") --distributed=auto${ARGS}"
