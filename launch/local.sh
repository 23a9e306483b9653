#!/usr/bin/env bash
# Starts N vlalign processes on this machine (CPU), coordinated on 127.0.0.1.
# Usage: launch/local.sh N [main.py flags...]   e.g. launch/local.sh 2 --config=configs/demo.py:tiny --workdir=/tmp/w
set -euo pipefail
n=${1:?number of processes}; shift
port=${PORT:-$((20000 + RANDOM % 20000))}
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT INT TERM
for ((i = 0; i < n; i++)); do
  python -m vlalign.main --coordinator=127.0.0.1:$port --num_processes=$n --process_id=$i "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
trap - EXIT
exit $status
