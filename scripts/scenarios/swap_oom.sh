#!/usr/bin/env bash
# A machine driven into swap and then out of memory, shown with echo, cat and free.
#
#   scripts/scenarios/swap_oom.sh MOUNTPOINT        (best on the small machine:
#                                                    memfs mount MNT --config small)
#
# A process, db, writes a distinct value to every page of an area 8 MiB larger
# than RAM: the pages that do not fit go to swap (first compressed in zswap, the
# oldest of those on to the device), so `free` shows swap used and vmstat's
# pswpout counts the writes. The reclaim db waited for is a memory stall:
# pressure/memory's `some` line shows it once the clock has run past the next
# 2-second update. db reads every value back intact (pswpin: the swap-ins).
#
# db is then protected (oom_score_adj -1000) and a second process, leak, writes
# an area as large as swap: RAM and swap run out, reclaim cannot free a frame,
# and the OOM killer kills the process with the most points that it may kill:
# leak. kmsg shows the report Linux prints (the task table, "Out of memory:
# Killed process ..."), vmstat's oom_kill counts it, and db's data is intact.
#
# `free` runs through `memfs exec` (root only), which shows it the machine's
# /proc/meminfo; memfs is found on PATH, as $MEMFS, or in the checkout's .venv.
# The clock is paused while the scenario runs (and resumed afterwards if it was
# running). The key figures are checked; the script exits 1 if one is wrong, 2
# if the mount point is not a memfs machine.
set -euo pipefail

mnt=${1:?usage: swap_oom.sh MOUNTPOINT}
if [ ! -f "$mnt/meminfo" ] || [ ! -f "$mnt/ctl" ]; then
  echo "swap_oom: $mnt is not a mounted memfs machine" >&2
  exit 2
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
memfs=${MEMFS:-}
if [ -z "$memfs" ]; then
  if command -v memfs >/dev/null 2>&1; then
    memfs=memfs
  elif [ -x "$here/../../.venv/bin/memfs" ]; then
    memfs=$here/../../.venv/bin/memfs
  fi
fi

failed=0
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

show_free() {
  local out
  if [ -z "$memfs" ]; then
    echo "   (no memfs command found: free skipped)"
  elif out=$("$memfs" exec "$mnt" -- free 2>&1); then
    echo "   \$ memfs exec $mnt -- free"
    echo "$out" | indent
  else
    echo "   (memfs exec failed: $out)"
  fi
}

# swap_used: the Used column of the first area in swaps (kB)
swap_used() {
  local header name kind size used prio
  { read -r header; read -r name kind size used prio; } < "$mnt/swaps" || true
  echo "${used:-0}"
}

show_vmstat() {
  local key val out=""
  while read -r key val; do
    case $key in
      pswpin|pswpout|zswpin|zswpout|zswpwb|oom_kill) out+=" $key $val" ;;
    esac
  done < "$mnt/vmstat"
  echo "   vmstat:$out"
  echo "   meminfo: SwapCached $(value "$mnt/meminfo" SwapCached) kB, Zswap $(value "$mnt/meminfo" Zswap) kB" \
       "(the compressed pool), Zswapped $(value "$mnt/meminfo" Zswapped) kB (the pages in it)"
}

db=
leak=
clock_running=0
while read -r key val; do
  if [ "$key" = state ] && [ "$val" = running ]; then clock_running=1; fi
done < "$mnt/clock"
echo pause > "$mnt/clock"
cleanup() {
  # on an early exit, leave no process behind; always give the clock back as found
  for p in "$leak" "$db"; do
    if [ -n "$p" ] && [ -d "$mnt/$p" ]; then echo "kill $p" > "$mnt/ctl"; fi
  done
  if [ "$clock_running" = 1 ]; then echo resume > "$mnt/clock"; fi
}
trap cleanup EXIT

ram_kb=$(value "$mnt/meminfo" MemTotal)
swap_kb=$(value "$mnt/meminfo" SwapTotal)
db_mb=$(( (ram_kb + 1023) / 1024 + 8 ))          # 8 MiB more than RAM
leak_mb=$(( (swap_kb + 1023) / 1024 ))           # as large as swap: together, more than both
echo "swap_oom: $ram_kb kB of RAM, $swap_kb kB of swap"
echo "0. before anything runs"
show_free

exec 3<> "$mnt/ctl"
db=$(ask 3 "spawn db")
exec 4<> "$mnt/$db/ctl"
addr=$(ask 4 "mmap ${db_mb}M")
echo "1. spawn db (pid $db), mmap ${db_mb}M at $addr and write every page: more than RAM"
ask 4 "fill $addr ${db_mb}M seed=1" > /dev/null
show_free
cat "$mnt/swaps" | indent
show_vmstat
used=$(swap_used)
if [ "$used" -gt 0 ]; then
  echo "   ok: swap used = $used kB"
else
  echo "   WRONG: no swap used"
  failed=1
fi

echo "2. step 250 ticks (2.5 s): the memory stall shows in pressure/memory"
echo "step 250" > "$mnt/clock"
cat "$mnt/pressure/memory" | indent
read -r some avg10 avg60 avg300 total < "$mnt/pressure/memory"
if [ "${total#total=}" -gt 0 ]; then
  echo "   ok: some $total us"
else
  echo "   WRONG: no memory stall (some $total)"
  failed=1
fi

echo "3. db reads every page back"
check "pages that differ from what db wrote" "$(ask 4 "verify $addr ${db_mb}M seed=1")" 0
show_vmstat

echo "4. protect db: echo -1000 > $mnt/$db/oom_score_adj"
echo -1000 > "$mnt/$db/oom_score_adj"
echo "   db oom_score $(cat "$mnt/$db/oom_score") (-1000: never chosen)"

leak=$(ask 3 "spawn leak")
exec 5<> "$mnt/$leak/ctl"
laddr=$(ask 5 "mmap ${leak_mb}M")
echo "5. spawn leak (pid $leak), mmap ${leak_mb}M at $laddr and write every page: RAM and swap run out"
if msg=$( { echo "fill $laddr ${leak_mb}M seed=2" >&5; } 2>&1 ); then
  echo "   the fill completed"
else
  echo "   the write failed: ${msg##*: } (the writer itself was killed)"
fi
exec 5>&-
printing=0
while IFS= read -r line; do
  case $line in *"invoked oom-killer"*) printing=1 ;; esac
  if [ "$printing" = 1 ]; then echo "   $line"; fi
  case $line in *"Out of memory: Killed process"*) printing=0 ;; esac
done < "$mnt/kmsg"
show_vmstat
check "oom_kill" "$(value "$mnt/vmstat" oom_kill)" 1
if [ -d "$mnt/$leak" ]; then
  echo "   WRONG: leak ($leak) is still there"
  failed=1
else
  echo "   ok: leak ($leak) is gone"
  leak=
fi
killed=0
while IFS= read -r line; do
  case $line in *"Out of memory: Killed process $db "*) killed=1 ;; esac
done < "$mnt/kmsg"
check "db killed" "$killed" 0

echo "6. db's data after the kill"
check "pages that differ from what db wrote" "$(ask 4 "verify $addr ${db_mb}M seed=1")" 0
show_free
cat "$mnt/swaps" | indent

exec 4>&-
echo "7. kill $db"
echo "kill $db" >&3
exec 3>&-
db=

if [ "$failed" -ne 0 ]; then
  echo "swap_oom: some figures were wrong"
  exit 1
fi
echo "swap_oom: every figure as expected"
