#!/usr/bin/env bash
# THE run command: installs the Python environment (same step as scripts/test.sh), then starts
# MarrowDiff on http://127.0.0.1:8000 — web + one worker, SQLite under var/, embedded broker,
# the shipped model, CPU. Extra arguments go to `marrow run`.
set -euo pipefail

# shellcheck source=scripts/_install.sh
source "$(dirname "${BASH_SOURCE[0]}")/_install.sh"
cd "$MARROW_ROOT"

marrow_install_python
exec "$MARROW_VENV/bin/marrow" run --host 127.0.0.1 --port 8000 "$@"
