#!/usr/bin/env bash
# Install everything flightline needs into .venv, exactly as locked in uv.lock.
# Bootstraps uv when it is missing; torch comes as a CPU build from pip's configured find-links.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --user "uv>=0.9" || python3 -m pip install --quiet "uv>=0.9"
  export PATH="$HOME/.local/bin:$PATH"
fi

# uv does not read pip's configuration: hand it the same find-links (where the CPU torch wheel is).
find_links="${PIP_FIND_LINKS:-$(python3 -m pip config get global.find-links 2>/dev/null || true)}"
if [ -n "$find_links" ]; then
  export UV_FIND_LINKS="$find_links"
fi

uv sync --frozen --python 3.11 "$@"
