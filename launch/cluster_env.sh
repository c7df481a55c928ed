# Settings shared by the launch scripts; every one can be overridden from the environment.
# A cluster is identified by its directory (Ray's --temp-dir) and its ports, so several
# clusters (and other Ray instances) can live on one machine without touching each other.
RLHF_CLUSTER_DIR=${RLHF_CLUSTER_DIR:-/tmp/rlhf-cluster-${USER:-$(id -un)}}
RLHF_PORT_BASE=${RLHF_PORT_BASE:-26300}          # ports BASE .. BASE+399 belong to this cluster
RLHF_DASHBOARD_PORT=${RLHF_DASHBOARD_PORT:-8265}  # Jobs API / dashboard
RLHF_DASHBOARD_HOST=${RLHF_DASHBOARD_HOST:-127.0.0.1}  # never 0.0.0.0: the Jobs API runs any code it is sent
RLHF_HEAD_CPUS=${RLHF_HEAD_CPUS:-2}
RLHF_WORKER_CPUS=${RLHF_WORKER_CPUS:-4}
RLHF_OBJECT_STORE_BYTES=${RLHF_OBJECT_STORE_BYTES:-200000000}
RAY=${RAY:-ray}
# Ray 2.60 clusters authenticate every connection with a token (generated under ~/.ray/);
# nodes and the submitting shell need the mode set, else joining fails with InvalidAuthToken.
export RAY_AUTH_MODE=token
export RLHF_GCS_ADDRESS=127.0.0.1:$RLHF_PORT_BASE
export RAY_ADDRESS=http://127.0.0.1:$RLHF_DASHBOARD_PORT

# node name -> offset of its ports inside the cluster's range
node_offset() {
  case "$1" in
    head) echo 0 ;;
    node_a) echo 100 ;;
    node_b) echo 200 ;;
    *) echo "unknown node $1 (head, node_a, node_b)" >&2; return 1 ;;
  esac
}

# A pid and all its descendants (Ray's agents and workers rename themselves, e.g. ray::IDLE,
# so they are found through their raylet, not by their command line).
with_descendants() {
  local table
  table=$(ps -eo pid=,ppid=)
  local queue="$*" seen=""
  while [ -n "$queue" ]; do
    local next=""
    for p in $queue; do
      seen="$seen $p"
      next="$next $(echo "$table" | awk -v parent="$p" '$2 == parent {print $1}')"
    done
    queue=$(echo $next)
  done
  echo $seen
}

# Processes are matched on their whole command line: `ps -ww`, because ps cuts `args` to $COLUMNS
# when that is exported (pytest-xdist workers export COLUMNS=80), and the cut lines hid every raylet.

# The raylet of one node names its own port on its command line.
node_pids() {
  local port=$(( RLHF_PORT_BASE + $(node_offset "$1") + 3 ))
  local raylet
  raylet=$(ps -ww -eo pid=,args= | grep -F -- "$RLHF_CLUSTER_DIR" | grep -F -- "--node_manager_port=$port" \
    | grep -v grep | awk '{print $1}')
  [ -n "$raylet" ] && with_descendants $raylet
}

# Every process of the cluster: those naming its directory, and their descendants.
cluster_pids() {
  local roots
  roots=$(ps -ww -eo pid=,args= | grep -F -- "$RLHF_CLUSTER_DIR/session_" \
    | grep -v grep | awk '{print $1}')
  [ -n "$roots" ] && with_descendants $roots
}
