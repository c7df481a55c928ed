#!/usr/bin/env bash
# Start a Ray cluster on this machine: a head and two worker nodes, three separate `ray start`
# processes. Worker node_a has the custom resource {"node_a": 1000}, node_b {"node_b": 1000},
# so a group's `ray.<group>.node_resource` pins it to a node and placement is checkable.
#
#   launch/start_cluster.sh            # head + node_a + node_b
#   launch/start_cluster.sh node_b     # (re)start one node into the running cluster
#
# The dashboard and Jobs API listen on 127.0.0.1 only, with token authentication on. On a real
# multi-node cluster run the head command on the head machine and the worker command on each
# worker with --address=HEAD_IP:PORT; everything else is the same.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/cluster_env.sh"

mkdir -p "$RLHF_CLUSTER_DIR"

start_node() {
  local name=$1 off
  off=$(node_offset "$name")
  local base=$(( RLHF_PORT_BASE + off ))
  local common=(
    --temp-dir="$RLHF_CLUSTER_DIR"
    --node-ip-address=127.0.0.1
    --node-manager-port=$(( base + 3 ))
    --object-manager-port=$(( base + 4 ))
    --metrics-export-port=$(( base + 5 ))
    --dashboard-agent-listen-port=$(( base + 6 ))
    --dashboard-agent-grpc-port=$(( base + 7 ))
    --runtime-env-agent-port=$(( base + 8 ))
    --min-worker-port=$(( base + 20 )) --max-worker-port=$(( base + 99 ))
    --object-store-memory="$RLHF_OBJECT_STORE_BYTES"
    --disable-usage-stats
  )
  if [ "$name" = head ]; then
    "$RAY" start --head --port="$RLHF_PORT_BASE" "${common[@]}" --num-cpus="$RLHF_HEAD_CPUS" \
      --ray-client-server-port=$(( base + 9 )) \
      --include-dashboard=true --dashboard-host="$RLHF_DASHBOARD_HOST" --dashboard-port="$RLHF_DASHBOARD_PORT"
  else
    "$RAY" start --address="$RLHF_GCS_ADDRESS" "${common[@]}" --num-cpus="$RLHF_WORKER_CPUS" \
      --resources="{\"$name\": 1000}"
  fi
}

if [ $# -gt 0 ]; then
  for node in "$@"; do start_node "$node"; done
else
  start_node head
  start_node node_a
  start_node node_b
fi
echo "cluster up: GCS $RLHF_GCS_ADDRESS, Jobs API $RAY_ADDRESS (dir $RLHF_CLUSTER_DIR)"
echo "submit with: RAY_AUTH_MODE=token RAY_ADDRESS=$RAY_ADDRESS launch/submit_ppo.sh"
