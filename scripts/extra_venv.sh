#!/usr/bin/env bash
# Create .venv-<name> from requirements/<name>.txt, once: an environment of its own for tools
# whose pins conflict with the project's (the Open Inference Protocol clients). Prints the
# venv's python. Re-created when the requirements file is newer than the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: scripts/extra_venv.sh <name> (requirements/<name>.txt)}
requirements="requirements/$name.txt"
venv=".venv-$name"
stamp="$venv/.installed"
python=${PYTHON:-python3.11}
if [[ ! -f $stamp || $requirements -nt $stamp ]]; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
  touch "$stamp"
fi
echo "$PWD/$venv/bin/python"
