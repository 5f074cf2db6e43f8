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
what="${1:-core}"   # core | ui (also the viewer's npm packages) | test (ui + Debian packages)

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
  # jsonschema, which every Ray worker imports, builds an Earley parser of RFC 3987 at import
  # when the optional rfc3987-syntax is installed (TIAToolbox -> JupyterLab -> jupyter-events
  # asks for it as an extra): 2 s of CPU per process, paid by each Ray task and actor worker.
  # Nothing PathRay runs validates IRIs against a JSON schema.
  "$venv/bin/uv" pip uninstall --python "$venv/bin/python" -q rfc3987-syntax 2>/dev/null || true
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

# The slide viewer's JavaScript (OpenSeadragon, Annotorious) from the npm registry, pinned by
# ui/package-lock.json into ui/node_modules (gitignored). A stamp named after the lock's hash
# says the installed tree is up to date with the lock; npm ci runs only when it is missing.
if [ "$what" = "test" ] || [ "$what" = "ui" ]; then
  command -v npm >/dev/null 2>&1 || { echo "setup: npm not found; install Node.js 20+" >&2; exit 1; }
  npm_stamp="$here/ui/node_modules/.pathray-$(sha256sum "$here/ui/package-lock.json" | cut -c1-16)"
  if [ ! -f "$npm_stamp" ]; then
    echo "setup: installing the viewer's npm packages (npm ci --prefix ui)"
    npm ci --prefix "$here/ui" --no-audit --no-fund --loglevel=error >/dev/null
    touch "$npm_stamp"
  fi
fi
echo "$venv"
