#!/usr/bin/env bash
# Usage: launch/local.sh N CONFIG [train args...]
#   Runs N training processes on this machine, joined over 127.0.0.1 (CPU, gloo collectives):
#   the multi-host code path (jax.distributed, per-process data rows, global arrays,
#   multi-process checkpoints) without a cluster.
#   launch/local.sh 2 configs/omnihuman.py:size=tiny,stage=1 --workdir=runs/mp --config.train.steps=20
# Environment:
#   DEVICES_PER_PROCESS  CPU devices each process exposes (default 1)
#   PORT                 coordinator port (default: a free one)
#   PYTHON               interpreter (default: python)
# Exit status: the first non-zero status of any process (0 if all succeeded).
set -euo pipefail
if [[ $# -lt 2 ]]; then
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
N=$1; CONFIG=$2; shift 2
PY=${PYTHON:-python}
PORT=${PORT:-$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
DPP=${DEVICES_PER_PROCESS:-1}

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup INT TERM

for ((i = 0; i < N; i++)); do
  JAX_PLATFORMS=cpu \
  XLA_FLAGS="--xla_force_host_platform_device_count=${DPP} ${XLA_FLAGS_EXTRA:-}" \
  JAX_COORDINATOR_ADDRESS="127.0.0.1:${PORT}" JAX_NUM_PROCESSES="$N" JAX_PROCESS_ID="$i" \
    "$PY" -m omnijax.train --config="$CONFIG" --distributed=env "$@" &
  pids+=($!)
done

status=0
for p in "${pids[@]}"; do
  rc=0
  wait "$p" || rc=$?
  if [[ $status -eq 0 ]]; then status=$rc; fi
done
exit $status
