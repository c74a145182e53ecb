#!/usr/bin/env bash
# Installs everything memfs needs on a Debian/Ubuntu machine, then memfs itself
# into a virtualenv (.venv beside this checkout, or $MEMFS_VENV):
#   - system packages, only those missing: libfuse2 (fusepy's library), fuse3
#     (fusermount), procps (free, vmstat), a Python >= 3.11 with venv;
#   - the virtualenv with memfs (editable) and its test tools.
# Safe to run again; it prints the venv's path on its last line.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${MEMFS_VENV:-$root/.venv}

say() { printf 'install: %s\n' "$*" >&2; }

find_python() {
  for py in python3.13 python3.12 python3.11 python3; do
    if command -v "$py" >/dev/null 2>&1 &&
       "$py" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$py"; return 0
    fi
  done
  return 1
}

missing=()
ldconfig -p 2>/dev/null | grep -q 'libfuse\.so\.2' || missing+=(libfuse2)
command -v fusermount >/dev/null 2>&1 || command -v fusermount3 >/dev/null 2>&1 || missing+=(fuse3)
{ command -v free && command -v vmstat; } >/dev/null 2>&1 || missing+=(procps)
python=$(find_python || true)
if [ -z "$python" ]; then
  if command -v python3 >/dev/null 2>&1 &&
     python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    missing+=(python3-venv)           # the right Python, without its venv module
  else
    missing+=(python3 python3-venv)
  fi
fi

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    say "these system packages are missing: ${missing[*]}; run this script as root (or install them)"
    exit 1
  fi
  say "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  python=${python:-$(find_python || true)}
  if [ -z "$python" ]; then
    say "no Python 3.11 or newer with venv after installing; memfs needs Python >= 3.11"
    exit 1
  fi
fi

if [ ! -e /dev/fuse ]; then
  modprobe fuse 2>/dev/null || true
  [ -e /dev/fuse ] || say "warning: /dev/fuse does not exist: this machine (or container) cannot mount FUSE filesystems"
fi

if [ ! -x "$venv/bin/python" ]; then
  say "creating virtualenv $venv with $python"
  "$python" -m venv "$venv"
fi
stamp="$venv/.memfs-installed"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  say "installing memfs and its test tools into $venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$root[test]"
  touch "$stamp"
fi
# As root, put the command on PATH (unless another memfs is already there).
if [ "$(id -u)" = 0 ] && [ -d /usr/local/bin ]; then
  current=$(readlink -f /usr/local/bin/memfs 2>/dev/null || true)
  if [ ! -e /usr/local/bin/memfs ] || [ "$current" = "$(readlink -f "$venv/bin/memfs")" ] \
      || [ ! -e "$current" ]; then
    ln -sfn "$venv/bin/memfs" /usr/local/bin/memfs
  else
    say "note: /usr/local/bin/memfs is another memfs ($current); this one is $venv/bin/memfs"
  fi
fi
echo "$venv"
