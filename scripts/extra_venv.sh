#!/usr/bin/env bash
# Create .venv-<name> from requirements/<name>.txt, once: an environment of its own for tools
# whose pins conflict with the project's (the Open Inference Protocol clients, MLServer). Prints
# the venv's python on its last line of stdout (pip's output goes to stderr).
#
#   scripts/extra_venv.sh kserve-client   # kserve SDK, tritonclient[http]: tests/service/test_v2_clients.py
#   scripts/extra_venv.sh mlserver        # MLServer + mlserver-mlflow, then our two packages
#   VENV=.venv-sdk-py312 PYTHON=python3.12 scripts/extra_venv.sh sdk-test   # tests/sdk, then the SDK
#
# Idempotent: the venv is re-created only when its stamp is missing or older than the lock file.
# A lock with hashes (pip-compile --generate-hashes) is installed with --require-hashes. For
# mlserver, modelhub_sdk and service are then installed from this tree with --no-deps (the lock
# holds their dependencies), for sdk-test and sdk-test-lowest modelhub_sdk alone, again whenever
# a file of theirs is newer than their stamp.
# PYTHON picks the interpreter (default python3.11; MLServer 1.7 needs < 3.13); VENV the venv's
# folder (default .venv-<name>), for one lock in several venvs (scripts/sdk_matrix.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: scripts/extra_venv.sh <name> (installs requirements/<name>.txt into .venv-<name>)}
requirements="requirements/$name.txt"
venv=${VENV:-.venv-$name}
stamp="$venv/.installed"
python=${PYTHON:-python3.11}
pip=("$venv/bin/python" -m pip --disable-pip-version-check --quiet)

if [[ ! -f $requirements ]]; then
  echo "extra_venv.sh: no $requirements" >&2
  exit 2
fi

# One creator at a time (tests may ask for the same venv concurrently): a lock on the lock file.
if command -v flock >/dev/null; then
  exec 9<"$requirements"
  flock 9
fi

if [[ ! -f $stamp || $requirements -nt $stamp || ! -x $venv/bin/python ]]; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
  hashes=()
  if grep -q -- '--hash=' "$requirements"; then
    hashes=(--require-hashes)
  fi
  "${pip[@]}" install "${hashes[@]}" -r "$requirements" >&2
  touch "$stamp"
fi

case $name in
  mlserver) local_packages=(modelhub_sdk service) ;;
  sdk-test | sdk-test-lowest) local_packages=(modelhub_sdk) ;;
  *) local_packages=() ;;
esac
if ((${#local_packages[@]})); then
  local_stamp="$venv/.installed-local"
  local_sources=()
  for package in "${local_packages[@]}"; do
    local_sources+=("$package/pyproject.toml" "$package/src")
  done
  if [[ ! -f $local_stamp || $stamp -nt $local_stamp ]] ||
    [[ -n $(find "${local_sources[@]}" -newer "$local_stamp" -not -path '*/__pycache__/*' \
      -not -path '*.egg-info/*' -print -quit) ]]; then
    "${pip[@]}" install --no-deps --force-reinstall "${local_packages[@]/#/./}" >&2
    touch "$local_stamp"
  fi
fi

echo "$PWD/$venv/bin/python"
