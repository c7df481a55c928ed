#!/usr/bin/env bash
# The TRL side of the benchmarks: two git-ignored venvs under bench/.venvs/.
#   trl-1.16  current TRL (GRPOTrainer, DPOTrainer)
#   trl-1.12  the last TRL with PPO (trl.experimental.ppo.PPOTrainer)
#
#   bash bench/setup_trl.sh [BASE_VENV]      # BASE_VENV defaults to .venv (the project's venv)
#
# To save ~2 GB and minutes per venv, each new venv sees BASE_VENV's site-packages through a .pth
# file (read-only: pip never writes outside the venv it runs in) and installs only TRL and
# whatever TRL needs that the base lacks. Without a usable BASE_VENV, each venv gets its own full
# install: torch pinned first (the CPU 2.13.0 wheel; an unpinned torch pulls a multi-GB CUDA build).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
base="${1:-$here/../.venv}"
python="${PYTHON:-python3.11}"

make_venv() {  # make_venv NAME TRL_VERSION
    local dir="$here/.venvs/$1" version="$2"
    if "$dir/bin/python" -c "import trl, sys; sys.exit(trl.__version__ != '$version')" 2>/dev/null; then
        echo "$dir: trl $version already there"; return
    fi
    rm -rf "$dir"
    if [ -x "$base/bin/python" ] && "$base/bin/python" -c "import torch, transformers, accelerate, datasets" 2>/dev/null; then
        "$base/bin/python" -m venv --without-pip "$dir"
        "$base/bin/python" -m pip --version >/dev/null  # the base's pip drives the install below
        local site base_site
        site="$("$dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
        base_site="$("$base/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
        echo "$base_site" > "$site/_base_venv.pth"
        # Install with the base's pip into the new venv: packages the base already has satisfy TRL's needs.
        "$base/bin/python" -m pip --python "$dir/bin/python" install --quiet "torch==2.13.0" "trl==$version"
    else
        "$python" -m venv "$dir"
        "$dir/bin/pip" install --quiet "torch==2.13.0"
        "$dir/bin/pip" install --quiet "trl==$version" transformers accelerate datasets
    fi
    "$dir/bin/python" -c "import trl; print('$dir: trl', trl.__version__)"
}

make_venv trl-1.16 1.16.0
make_venv trl-1.12 1.12.0
