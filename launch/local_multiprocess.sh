#!/usr/bin/env bash
# Start N processes of the same training on this machine; they find each other through
# jax.distributed on 127.0.0.1 (CPU: gloo collectives). The way to test multi-host behaviour
# without a cluster, and a way to use several GPUs of one host with one process each.
#
#   launch/local_multiprocess.sh N configs/treesat.py --workdir=/tmp/ts [--config.x=y ...]
#
# Logs: <workdir>.proc<i>.log (process 0 also prints to the terminal). Ctrl-C / SIGTERM is
# forwarded to every process, which checkpoint at the next step and exit; rerun to resume.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 N CONFIG [--workdir=W] [overrides...]" >&2; exit 2
fi
n=$1; config=$2; shift 2
workdir=$(printf '%s\n' "$@" | sed -n 's/^--workdir=//p' | tail -1)
[ -n "$workdir" ] || { echo "$0: --workdir=... is required" >&2; exit 2; }
port=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
cd "$(dirname "$0")/.."
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; }
trap cleanup INT TERM
for ((i = 0; i < n; i++)); do
  args=(-m mtljax.main "--config=$config" "$@" "--coordinator_address=127.0.0.1:$port"
        "--num_processes=$n" "--process_id=$i")
  if [ "$i" -eq 0 ]; then
    python3 "${args[@]}" 2>&1 | tee "$workdir.proc$i.log" &
  else
    python3 "${args[@]}" > "$workdir.proc$i.log" 2>&1 &
  fi
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit "$rc"
