#!/usr/bin/env bash
# Run queuectl's checks from a fresh checkout: creates .venv if missing,
# installs queuectl and every bundled plugin (editable) with the test tools,
# then runs ruff, mypy and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
plugins=()
for dir in plugins/*/; do
    plugins+=(-e "$dir")
done
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' "${plugins[@]}"

# Byte-compile the sources once. Every test starts many real queuectl
# processes, and with PYTHONDONTWRITEBYTECODE set (as on the CI machines)
# each of them would otherwise compile every module it imports again
# (a third of a CLI call's time here).
.venv/bin/python -m compileall -q queuectl_core plugins/*/queuectl_* >/dev/null

echo "== ruff"
.venv/bin/ruff check .
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest "$@"
