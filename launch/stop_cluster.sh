#!/usr/bin/env bash
# Stop the cluster started by start_cluster.sh (the one with this RLHF_CLUSTER_DIR), or one of
# its nodes: `launch/stop_cluster.sh node_b` kills that node as a machine failure would.
# Only processes started for this cluster are touched (found by its directory and ports):
# `ray stop` would stop every Ray instance of the machine, other users' included.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/cluster_env.sh"

if [ $# -gt 0 ]; then
  pids=$(for node in "$@"; do node_pids "$node"; done)
  signal=KILL   # a lost node does not shut down politely
else
  pids=$(cluster_pids)
  signal=TERM
fi
[ -z "$pids" ] && { echo "nothing running for $RLHF_CLUSTER_DIR ${*:-}"; exit 0; }
kill -s "$signal" $pids 2>/dev/null
for _ in $(seq 1 20); do
  alive=$(for p in $pids; do kill -0 "$p" 2>/dev/null && echo "$p"; done)
  [ -z "$alive" ] && break
  sleep 0.5
done
[ -n "${alive:-}" ] && kill -s KILL $alive 2>/dev/null
# Workers of a killed raylet exit on their own; sweep whatever is left of a full stop.
if [ $# -eq 0 ]; then
  sleep 1
  rest=$(cluster_pids)
  [ -n "$rest" ] && kill -s KILL $rest 2>/dev/null
fi
echo "stopped ${*:-cluster} ($RLHF_CLUSTER_DIR)"
exit 0
