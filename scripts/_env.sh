# Shared by scripts/run and scripts/test: make .venv and install the project into it.
# Sourced, not executed. Reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"

ensure_venv() {
    local extras="$1"  # "" or "[dev]"
    if [ ! -x "$VENV/bin/python" ]; then
        "$PY" - <<'PYCHECK' || { echo "error: Python 3.11, 3.12 or 3.13 is required (set PYTHON=...)" >&2; exit 2; }
import sys
sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 13) else 1)
PYCHECK
        echo "creating $VENV" >&2
        "$PY" -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
    fi
    local stamp
    stamp="$VENV/.installed-$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)${extras}"
    if [ ! -f "$stamp" ]; then
        echo "installing replyhq-trio${extras} into $VENV" >&2
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT${extras}"
        rm -f "$VENV"/.installed-*
        touch "$stamp"
        # an install with extras also satisfies a plain install
        if [ -n "$extras" ]; then touch "${stamp%"$extras"}"; fi
    fi
}
