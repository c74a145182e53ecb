#!/usr/bin/env bash
# Installs everything (scripts/install.sh) and runs the whole test suite:
# engine tests and tests through real FUSE mounts. Extra arguments go to pytest.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$("$root/scripts/install.sh" | tail -n 1)
cd "$root"
status=0
"$venv/bin/python" -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "test.sh: pytest collected no tests: that is a failure" >&2
fi
exit "$status"
