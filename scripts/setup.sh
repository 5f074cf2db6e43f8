#!/usr/bin/env bash
# Create or reuse PathRay's virtual environment and install everything it needs.
#
# Idempotent and quick when nothing changed: a stamp keyed by the dependency files and the
# checkout path says whether the install can be skipped. The environment lives outside the
# checkout (PATHRAY_VENV, default ~/.cache/pathray/venv-py311) so fresh clones on the same
# machine, CI's included, reuse it instead of downloading PyTorch again.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${PATHRAY_VENV:-$HOME/.cache/pathray/venv-py311}"
what="${1:-core}"   # core | test (test also installs the browser and the viewer's npm packages)

python_bin=""
for candidate in python3.11 python3.12 python3; do
  if command -v "$candidate" >/dev/null 2>&1; then python_bin="$candidate"; break; fi
done
[ -n "$python_bin" ] || { echo "setup: no python3 found; install Python 3.11" >&2; exit 1; }

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating the virtual environment at $venv"
  mkdir -p "$(dirname "$venv")"
  "$python_bin" -m venv "$venv"
fi
[ -x "$venv/bin/uv" ] || "$venv/bin/python" -m pip install -q --disable-pip-version-check uv

stamp_key=$( { cat "$here/pyproject.toml"; cat "$here/requirements.lock" 2>/dev/null || true; } | sha256sum | cut -c1-16)
stamp="$venv/.pathray-$stamp_key-$(echo "$here" | sha256sum | cut -c1-8)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python packages (the first time takes several minutes: PyTorch)"
  constraint=()
  [ -f "$here/requirements.lock" ] && constraint=(-c "$here/requirements.lock")
  "$venv/bin/uv" pip install --python "$venv/bin/python" -q "${constraint[@]}" -e "$here[dev]"
  rm -f "$venv"/.pathray-*
  touch "$stamp"
fi

if [ "$what" = "test" ]; then
  # Debian packages the tests need (none are needed to run the main job).
  missing=()
  for pkg in $(grep -v '^#' "$here/scripts/apt-packages.txt" 2>/dev/null || true); do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi
echo "$venv"
