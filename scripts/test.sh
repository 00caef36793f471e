#!/usr/bin/env bash
# Run queuectl's checks from a fresh checkout: creates .venv if missing,
# installs queuectl, every bundled plugin and the example plugins (editable)
# with the test tools, then runs ruff, the structure check, mypy and pytest.
# Extra arguments go to pytest.
#
# pytest runs in QUEUECTL_TEST_JOBS parallel processes (pytest-xdist; 0 =
# serial), work-stealing (the crash tests are long: idle processes take
# over the rest of a busy one's share). Default: three times the CPUs (most
# tests wait on real processes and clocks), at most 8; 6 on the project's
# 2-core machines (measured there: 480 s against 530 s with 4).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
plugins=()
for dir in plugins/*/ examples/queuectl-*/; do  # the examples are tested too
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
echo "== structure (seam size, module sizes, import circles)"
.venv/bin/python scripts/check_structure.py
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
jobs=${QUEUECTL_TEST_JOBS:-$(( $(nproc) * 3 > 8 ? 8 : $(nproc) * 3 ))}
parallel=()
if [ "$jobs" != 0 ]; then
    parallel=(-n "$jobs" --dist worksteal)
fi
.venv/bin/python -m pytest "${parallel[@]}" "$@"
