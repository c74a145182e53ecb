#!/usr/bin/env bash
# Demand paging on a mounted memfs machine, shown with nothing but echo and cat.
#
#   scripts/scenarios/demand_paging.sh MOUNTPOINT
#
# A new process maps 16 MiB. mmap only reserves address space: VmSize grows,
# VmRSS and MemFree do not. Reading the first 4 MiB maps the shared zero page:
# still no frame for data, only the page tables the faults needed (VmPTE).
# Writing the first 8 MiB takes one frame per page on its first touch: VmRSS
# grows by exactly 8 MiB and MemFree falls by that plus the new page tables.
# When the process is killed, every frame comes back.
#
# The clock is paused while the scenario runs (and resumed afterwards if it was
# running), so nothing else moves the numbers. Every figure is checked; the
# script exits 1 if one is wrong, 2 if the mount point is not a memfs machine.
set -euo pipefail

mnt=${1:?usage: demand_paging.sh MOUNTPOINT}
if [ ! -f "$mnt/meminfo" ] || [ ! -f "$mnt/ctl" ]; then
  echo "demand_paging: $mnt is not a mounted memfs machine" >&2
  exit 2
fi

failed=0

# value FILE KEY: the number after "KEY:" in a /proc-style file
value() { awk -v key="$2:" '$1 == key { print $2 }' "$1"; }

# show NAME BEFORE AFTER: one line with the change
show() {
  local delta=$(($3 - $2))
  if [ "$delta" -ge 0 ]; then delta="+$delta"; fi
  echo "   $1 $2 -> $3 kB ($delta)"
}

# check WHAT GOT WANT
check() {
  if [ "$2" = "$3" ]; then
    echo "   ok: $1 = $2"
  else
    echo "   WRONG: $1 = $2, expected $3"
    failed=1
  fi
}

snapshot() {
  rss=$(value "$mnt/$pid/status" VmRSS)
  size=$(value "$mnt/$pid/status" VmSize)
  pte=$(value "$mnt/$pid/status" VmPTE)
  free=$(value "$mnt/meminfo" MemFree)
}

pid=
clock_state=$(awk '$1 == "state" { print $2 }' "$mnt/clock")
echo pause > "$mnt/clock"
cleanup() {
  # on an early exit, leave no process behind; always give the clock back as found
  if [ -n "$pid" ] && [ -d "$mnt/$pid" ]; then echo "kill $pid" > "$mnt/ctl"; fi
  if [ "$clock_state" = running ]; then echo resume > "$mnt/clock"; fi
}
trap cleanup EXIT

free_at_start=$(value "$mnt/meminfo" MemFree)

# A transaction file: write the command and read its answer on the same open file.
exec 3<> "$mnt/ctl"
echo "spawn demo" >&3
pid=$(cat <&3)
exec 3>&-
echo "0. spawn demo -> pid $pid (exec wrote one stack page)"
snapshot
echo "   VmRSS $rss kB, VmSize $size kB, VmPTE $pte kB, MemFree $free kB"

exec 4<> "$mnt/$pid/ctl"

echo "1. mmap 16M: reserve address space"
rss0=$rss size0=$size pte0=$pte free0=$free
echo "mmap 16M" >&4
addr=$(cat <&4)
echo "   mapped at $addr"
snapshot
show VmSize "$size0" "$size"
show VmRSS "$rss0" "$rss"
show MemFree "$free0" "$free"
check "VmSize growth" $((size - size0)) 16384
check "VmRSS growth" $((rss - rss0)) 0
check "MemFree change" $((free - free0)) 0

echo "2. touch $addr 4M: read 4 MiB never written"
rss0=$rss pte0=$pte free0=$free
echo "touch $addr 4M" >&4
cat <&4 > /dev/null
snapshot
show VmRSS "$rss0" "$rss"
show VmPTE "$pte0" "$pte"
show MemFree "$free0" "$free"
check "VmRSS growth (reads map the zero page)" $((rss - rss0)) 0
check "MemFree fall (page tables only)" $((free0 - free)) $((pte - pte0))

echo "3. touch $addr 8M write: write 8 MiB"
rss0=$rss pte0=$pte free0=$free
echo "touch $addr 8M write" >&4
cat <&4 > /dev/null
snapshot
show VmRSS "$rss0" "$rss"
show VmPTE "$pte0" "$pte"
show MemFree "$free0" "$free"
check "VmRSS growth (one frame per written page)" $((rss - rss0)) 8192
check "MemFree fall (frames + page tables)" $((free0 - free)) $((8192 + pte - pte0))

echo "4. read $addr: touch stored nothing, so the new page reads 0"
echo "read $addr" >&4
check "value" "$(cat <&4)" 0

exec 4>&-
echo "5. kill $pid: its frames and page tables go back"
echo "kill $pid" > "$mnt/ctl"
free=$(value "$mnt/meminfo" MemFree)
show MemFree "$free_at_start" "$free"
check "MemFree after kill" "$free" "$free_at_start"

if [ "$failed" -ne 0 ]; then
  echo "demand_paging: some figures were wrong"
  exit 1
fi
echo "demand_paging: every figure as expected"
