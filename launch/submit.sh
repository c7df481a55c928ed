#!/usr/bin/env bash
# Submit a training run of any mode to a Ray cluster with `ray job submit`.
#
#   launch/submit.sh CONFIG [--set key=value ...] [--resume]
#
# The repository is the job's working directory (uploaded; .gitignore'd files such as .venv and
# .assets are left out, so give model/data/output paths that exist on the nodes). The runtime_env
# carries only non-secret settings: the Jobs API shows a job's entrypoint and runtime_env to
# anyone who can list jobs, so API keys (WANDB_API_KEY, judge keys) must come from the nodes'
# environment (exported before `ray start`) or a secret store, never from this command.
# Environment: RAY_ADDRESS (Jobs API URL), RLHF_SUBMISSION_ID, RLHF_NO_WAIT=1, RLHF_STOP_WAIT_S,
# RLHF_PYTHON, WANDB_MODE, WANDB_PROJECT.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
JOBS_ADDRESS=${RAY_ADDRESS:-}
source "$HERE/cluster_env.sh"
RAY_ADDRESS=${JOBS_ADDRESS:-$RAY_ADDRESS}
CONFIG=${1:?usage: launch/submit.sh CONFIG [--set key=value ...] [--resume]}
shift

# `ray job stop` sends SIGTERM, then SIGKILL after RAY_JOB_STOP_WAIT_TIME_S (3 s by default):
# the trainer needs that window to finish its step and write a checkpoint.
RUNTIME_ENV=$(cat <<JSON
{"env_vars": {
  "RAY_JOB_STOP_WAIT_TIME_S": "${RLHF_STOP_WAIT_S:-120}",
  "WANDB_MODE": "${WANDB_MODE:-offline}",
  "WANDB_PROJECT": "${WANDB_PROJECT:-rlhf}",
  "TOKENIZERS_PARALLELISM": "false",
  "PYTHONUNBUFFERED": "1"
}}
JSON
)
args=(--address "$RAY_ADDRESS" --working-dir "$ROOT" --runtime-env-json "$RUNTIME_ENV")
[ -n "${RLHF_SUBMISSION_ID:-}" ] && args+=(--submission-id "$RLHF_SUBMISSION_ID")
[ -n "${RLHF_NO_WAIT:-}" ] && args+=(--no-wait)
exec "$RAY" job submit "${args[@]}" -- "${RLHF_PYTHON:-python}" -m rlhf.train --config "$CONFIG" "$@"
