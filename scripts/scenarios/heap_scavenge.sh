#!/usr/bin/env bash
# A heap that grows, is freed and scavenged, on a mounted memfs machine, shown with
# nothing but echo, cat and grep.
#
#   scripts/scenarios/heap_scavenge.sh MOUNTPOINT
#
# A new process mallocs 100 objects of 1016 bytes (1 KiB chunks, one after the
# other from the start of the heap) and writes each one: VmRSS grows page by page
# while [heap] was grown once by brk. Then it mallocs one small block that it keeps:
# it sits between the objects and the top of the heap, so freeing the objects
# cannot shrink the break. Freeing all 100 objects gives nothing back (VmRSS stays;
# the freed chunks merge into one free area). scavenge (malloc_trim) hands the
# whole pages inside that area back to the kernel: VmRSS falls by them, while the
# heap's mapped size and the [heap] mapping stay as they were.
#
# The clock is paused while the scenario runs (and resumed afterwards if it was
# running), so nothing else moves the numbers. Every figure is checked; the
# script exits 1 if one is wrong, 2 if the mount point is not a memfs machine.
set -euo pipefail

mnt=${1:?usage: heap_scavenge.sh MOUNTPOINT}
if [ ! -f "$mnt/meminfo" ] || [ ! -f "$mnt/ctl" ]; then
  echo "heap_scavenge: $mnt is not a mounted memfs machine" >&2
  exit 2
fi

failed=0

# number FILE KEY: the number on FILE's "KEY:" line
number() {
  local line
  line=$(grep -m1 "^$2:" "$1")
  line=${line#*:}
  echo "${line//[!0-9]/}"
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

rss() { number "$mnt/$pid/status" VmRSS; }
# the main pool's mapped bytes, from the "pool 0 (main, brk): ..., mapped N bytes" line
mapped() {
  local line
  line=$(grep -m1 -o 'mapped [0-9]* bytes' "$mnt/$pid/heap")
  echo "${line//[!0-9]/}"
}
heap_vma() { grep '\[heap\]' "$mnt/$pid/maps" || echo "no [heap] mapping"; }

pid=
clock_running=0
if grep -q '^state running' "$mnt/clock"; then clock_running=1; fi
echo pause > "$mnt/clock"
cleanup() {
  # on an early exit, leave no process behind; always give the clock back as found
  if [ -n "$pid" ] && [ -d "$mnt/$pid" ]; then echo "kill $pid" > "$mnt/ctl"; fi
  if [ "$clock_running" = 1 ]; then echo resume > "$mnt/clock"; fi
}
trap cleanup EXIT

# A transaction file: write the command and read its answer on the same open file.
exec 3<> "$mnt/ctl"
echo "spawn heapdemo" >&3
pid=$(cat <&3)
exec 3>&-
echo "0. spawn heapdemo -> pid $pid"
rss0=$(rss)
echo "   VmRSS $rss0 kB"

exec 4<> "$mnt/$pid/ctl"

echo "brk" >&4
start=$(cat <&4)
echo "1. malloc and write 100 objects of 1016 bytes (the break is at $start)"
declare -a obj
n=0
for round in 1 2 3 4; do
  for i in {1..25}; do
    n=$((n + 1))
    echo "malloc 1016" >&4
    obj[n]=$(cat <&4)
    echo "memset ${obj[n]} 1016" >&4
  done
  echo "   $n objects: VmRSS $(rss) kB"
done
echo "malloc 16" >&4
pinned=$(cat <&4)
echo "   kept: 16 bytes at $pinned, allocated last"
rss1=$(rss)
mapped1=$(mapped)
vma1=$(heap_vma)
echo "   VmRSS $rss1 kB, heap mapped $mapped1 bytes"
echo "   $vma1"
check "first object, past its 16-byte header" $(( obj[1] - start )) 16
check "object spacing (1 KiB chunks)" $(( obj[100] - obj[1] )) $(( 99 * 1024 ))
check "kept block right after the objects" $(( pinned - obj[100] )) 1024
if [ "$rss1" -le "$rss0" ]; then
  echo "   WRONG: VmRSS did not grow"
  failed=1
fi

echo "2. free the 100 objects"
for i in {1..100}; do
  echo "free ${obj[i]}" >&4
done
rss2=$(rss)
echo "   VmRSS $rss1 -> $rss2 kB"
line=$(grep -m1 '^  free ' "$mnt/$pid/heap")
echo "   heap: ${line#  }"
check "VmRSS after free (nothing given back)" "$rss2" "$rss1"

echo "3. scavenge: give back the whole pages inside the free area"
# The free area runs from the first object's chunk to the kept block's chunk; a free
# chunk keeps its first 48 bytes (header and list links).
lo=$(( (obj[1] - 16 + 48 + 4095) / 4096 * 4096 ))
hi=$(( (pinned - 16) / 4096 * 4096 ))
want=$(( (hi - lo) / 1024 ))
echo "scavenge" >&4
rss3=$(rss)
mapped3=$(mapped)
vma3=$(heap_vma)
echo "   VmRSS $rss2 -> $rss3 kB (-$((rss2 - rss3)))"
echo "   heap mapped $mapped1 -> $mapped3 bytes"
echo "   $vma3"
check "VmRSS fall (whole free pages)" $((rss2 - rss3)) "$want"
check "heap mapped size" "$mapped3" "$mapped1"
check "[heap] mapping" "$vma3" "$vma1"
if [ "$rss3" -ge "$rss2" ]; then
  echo "   WRONG: VmRSS did not fall"
  failed=1
fi

exec 4>&-
echo "4. kill $pid"
echo "kill $pid" > "$mnt/ctl"
pid=

if [ "$failed" -ne 0 ]; then
  echo "heap_scavenge: some figures were wrong"
  exit 1
fi
echo "heap_scavenge: every figure as expected"
