#!/usr/bin/env bash
# PPO on the tiny letters task, submitted to the cluster of start_cluster.sh, with its groups
# spread over the nodes: the two policy replicas on different nodes (STRICT_SPREAD, one process
# group across nodes), the rollout engines on node_a, the critic on node_b.
#
#   launch/submit_ppo.sh [--set key=value ...] [--resume]
#
# Assets: `rlhf assets --out .assets/tiny` (or RLHF_ASSETS=DIR). Outputs: RLHF_OUTPUT_DIR
# (default outputs/ppo_cluster); on a multi-node cluster both must be on storage every node sees.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ASSETS=${RLHF_ASSETS:-$ROOT/.assets/tiny}
exec "$HERE/submit.sh" configs/ppo_tiny.yaml \
  --set "model.path=$ASSETS/policy" \
  --set "data.train_path=$ASSETS/data/task_train.jsonl" \
  --set "trainer.output_dir=${RLHF_OUTPUT_DIR:-$ROOT/outputs/ppo_cluster}" \
  --set ray.policy.strategy=STRICT_SPREAD \
  --set ray.rollout.node_resource=node_a \
  --set ray.critic.node_resource=node_b \
  --set logging.progress=false \
  "$@"
