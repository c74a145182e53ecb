#!/usr/bin/env bash
# Installs everything (scripts/install.sh) and mounts the default machine.
#   scripts/run.sh [MOUNTPOINT] [memfs mount options...]     (default mount point: /mnt/mm)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$("$root/scripts/install.sh" | tail -n 1)
mnt=/mnt/mm
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then mnt=$1; shift; fi
"$venv/bin/memfs" mount "$mnt" "$@"
echo "memfs: the default machine is mounted at $mnt (memfs umount $mnt to stop it)"
echo "memfs: the memfs command is $venv/bin/memfs"
