#!/usr/bin/env bash
# One idempotent set-up for a fresh Debian 12 machine (run as root, or with sudo available):
#   1. apt packages (off-screen GL for MuJoCo, libusb for librealsense/open3d),
#   2. .venv with every Python dependency pinned by requirements.lock,
#   3. the project installed editable, and the generated robot assets (URDFs for pinocchio
#      and dex-retargeting) written to the asset cache.
# A stamp with the hash of the inputs makes a second run a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.dexh2r-setup-stamp
APT_PACKAGES=(python3 python3-venv libosmesa6 libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libglx-mesa0 libusb-1.0-0 git)

inputs_hash() {
  cat requirements.lock pyproject.toml setup.py scripts/setup.sh src/*/*/_entry_points.py \
    config/robot/*.yaml config/robot/*/*.yaml | sha256sum | cut -d' ' -f1
}

want=$(inputs_hash)
if [[ -f $STAMP && "$(cat "$STAMP")" == "$want" && -x $VENV/bin/dexh2r ]]; then
  exit 0
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[setup] apt packages missing: ${missing[*]}"
  if [[ $(id -u) -eq 0 ]]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "[setup] not root and no sudo: install them with apt-get, then run this again." >&2; exit 1
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "[setup] Python 3.11 is required ($PY is $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11." >&2
  exit 1
fi
[[ -x $VENV/bin/python ]] || "$PY" -m venv "$VENV"

# The pinned environment takes about 4.2 GB; pip half-way through a full disk leaves a broken venv
# and a bare "Could not install" error, so say it first (DEXH2R_SETUP_MIN_FREE_GB=0 skips the check).
need_gb=${DEXH2R_SETUP_MIN_FREE_GB:-5}
free_gb=$(df -Pk "$VENV" | awk 'NR==2 {print int($4 / 1048576)}')
if ((free_gb < need_gb)); then
  echo "[setup] only ${free_gb} GB free where $VENV lives ($(pwd)); the environment needs about ${need_gb} GB." >&2
  echo "[setup] free some space (old clones, runs/ folders, pip's cache in ~/.cache/pip), then run this again." >&2
  exit 1
fi

echo "[setup] installing pinned Python dependencies into $VENV (requirements.lock)"
# torch first and exactly: a plain `torch` requirement elsewhere would pull a multi-GB CUDA build.
"$VENV/bin/python" -m pip install -q -c requirements.lock "torch==2.13.0"
# The lock is used as constraints: every package pip resolves gets exactly the locked version.
"$VENV/bin/python" -m pip install -q -c requirements.lock "setuptools" "wheel"
"$VENV/bin/python" -m pip install -q -c requirements.lock --no-build-isolation -e ".[dev]"

echo "[setup] generating robot assets"
"$VENV/bin/dexh2r" robot export --all --quiet

echo "$want" > "$STAMP"
echo "[setup] done"
