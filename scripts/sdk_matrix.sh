#!/usr/bin/env bash
# tests/sdk on every Python the SDK claims (3.11, 3.12, 3.13), and with the lowest tenacity its
# pyproject allows on the oldest and the newest of them: one venv per case, each from a hashed
# lock (requirements/sdk-test.txt, sdk-test-lowest.txt) with modelhub_sdk installed from this
# tree (scripts/extra_venv.sh), so the suite runs without the service package or the dev venv.
#
#   scripts/sdk_matrix.sh                 # every case
#   scripts/sdk_matrix.sh py312 py313     # some of them (the names below)
#   PYTEST_ARGS="-x -q" scripts/sdk_matrix.sh
#
# Interpreters come from pyenv (the newest installed X.Y.*) or, failing that, pythonX.Y on PATH;
# a missing one fails the run: nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."

# case name -> "<python version> <lock name>"
declare -A cases=(
  [py311]="3.11 sdk-test"
  [py312]="3.12 sdk-test"
  [py313]="3.13 sdk-test"
  [py311-tenacity-lowest]="3.11 sdk-test-lowest"
  [py313-tenacity-lowest]="3.13 sdk-test-lowest"
)
order=(py311 py312 py313 py311-tenacity-lowest py313-tenacity-lowest)

find_python() {
  local version=$1 root candidate found=
  if root=$(pyenv root 2>/dev/null); then
    for candidate in "$root"/versions/"$version".*/bin/python; do
      # Globs sort 3.12.10 before 3.12.9: keep the highest patch release.
      if [[ -x $candidate ]] && { [[ -z $found ]] ||
        [[ $(printf '%s\n%s\n' "$found" "$candidate" | sort -V | tail -1) == "$candidate" ]]; }; then
        found=$candidate
      fi
    done
  fi
  if [[ -z $found ]]; then
    found=$(command -v "python$version" || true)
  fi
  if [[ -z $found ]]; then
    echo "sdk_matrix.sh: no Python $version (neither under \$(pyenv root)/versions nor python$version on PATH)" >&2
    return 1
  fi
  echo "$found"
}

# The venv agrees with the SDK's requirements, and a lowest case installs the lower bound itself
# (a bound moved without its lock fails here, not silently).
check_versions() {
  local python=$1 lock=$2
  "$python" -m pip --disable-pip-version-check check >&2 || return 1
  [[ $lock == sdk-test-lowest ]] || return 0
  "$python" - <<'PY'
import importlib.metadata as m
import re


def release(version):
    numbers = [int(n) for n in version.split(".")]
    while numbers and numbers[-1] == 0:
        numbers.pop()
    return numbers


(required,) = [r for r in m.requires("modelhub-sdk") or [] if r.startswith("tenacity")]
lower = re.search(r">=\s*([0-9.]+)", required)
installed = m.version("tenacity")
if lower is None or release(lower[1]) != release(installed):
    raise SystemExit(f"modelhub-sdk requires {required}; the lowest lock has tenacity {installed}")
PY
}

selected=("$@")
if ((${#selected[@]} == 0)); then
  selected=("${order[@]}")
fi
read -r -a pytest_args <<<"${PYTEST_ARGS:--q}"

failed=()
for name in "${selected[@]}"; do
  if [[ -z ${cases[$name]:-} ]]; then
    echo "sdk_matrix.sh: unknown case $name (one of: ${order[*]})" >&2
    exit 2
  fi
  read -r version lock <<<"${cases[$name]}"
  started=$SECONDS
  interpreter=$(find_python "$version")
  python=$(PYTHON=$interpreter VENV=".venv-sdk-$name" scripts/extra_venv.sh "$lock" | tail -1)
  printf '\n--- %s: %s, %s\n' "$name" "$("$python" --version)" \
    "$("$python" -c 'import importlib.metadata as m; print("tenacity", m.version("tenacity"))')"
  if ! check_versions "$python" "$lock" ||
    ! "$python" -m pytest -p no:cacheprovider "${pytest_args[@]}" tests/sdk; then
    failed+=("$name")
  fi
  printf -- '--- %s: %d s with its venv\n' "$name" $((SECONDS - started))
done

if ((${#failed[@]})); then
  echo "sdk_matrix.sh: tests/sdk failed in: ${failed[*]}" >&2
  exit 1
fi
