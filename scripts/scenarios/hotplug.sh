#!/usr/bin/env bash
# Memory hot-plug shown with echo and cat: add a memory block, online it, fill it,
# take it offline again with every value intact.
#
#   scripts/scenarios/hotplug.sh MOUNTPOINT         (best on the small machine:
#                                                     memfs mount MNT --config small)
#
# 1. `echo ADDR > devices/system/memory/probe` adds the first free block from 4 GiB
#    up. It comes up offline: iomem lists a new "System RAM" range, MemTotal does
#    not change, and MemFree falls by the block's memmap (64 bytes of struct page
#    for every 4 KiB frame: 2048 kB for a 128 MiB block).
# 2. `echo online_movable > memoryN/state` puts it in ZONE_MOVABLE: MemTotal (and
#    its node's, in devices/system/node/nodeM/meminfo) grows by exactly the block.
# 3. A process, app, writes a distinct value to every page of 16 MiB: processes take
#    memory from the highest zone first, so its pte file shows every page in the block.
# 4. `echo offline > memoryN/state` migrates every page out (vmstat pgmigrate_success
#    counts them, kmsg says "Offlined Pages N"): MemTotal is back, app reads every
#    value back, and no page of it is in the block any more.
# 5. Onlined into Normal instead, the block takes kernel allocations: a frame a
#    driver holds (palloc zone=Normal) cannot move, so offlining fails with
#    "Device or resource busy" and nothing changes; once it is freed, it works.
# 6. kill app: everything comes back but the memmap of the block, which stays
#    present (offline) in the machine.
#
# Only echo and cat (and shell built-ins) touch the machine. The clock is paused
# while the scenario runs (and resumed afterwards if it was running). The key
# figures are checked; the script exits 1 if one is wrong, 2 if the mount point is
# not a memfs machine.
set -euo pipefail

mnt=${1:?usage: hotplug.sh MOUNTPOINT}
sys=$mnt/devices/system/memory
if [ ! -f "$mnt/meminfo" ] || [ ! -f "$mnt/ctl" ] || [ ! -e "$sys/probe" ]; then
  echo "hotplug: $mnt is not a mounted memfs machine" >&2
  exit 2
fi

failed=0
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# change WHAT BEFORE AFTER: print "WHAT BEFORE -> AFTER kB (+/-DIFF)"
change() {
  local d=$(( $3 - $2 ))
  if [ "$d" -ge 0 ]; then d="+$d"; fi
  echo "   $1 $2 -> $3 kB ($d)"
}

# last_kmsg: the last kernel log line
last_kmsg() {
  local line last=
  while IFS= read -r line; do last=$line; done < "$mnt/kmsg"
  echo "$last"
}

# in_block PID [FROM TO]: how many present pages of PID (those at FROM <= va < TO, if
# given) have their frame in the block, from the pid's pte file
in_block() {
  local n=0 va raw state pfn rest
  while read -r va raw state pfn rest; do
    if [ "$state" = present ] && [ "$pfn" = pfn ]; then
      read -r pfn rest <<< "$rest"
      pfn=$(( pfn ))
      va=$(( 16#$va ))
      if [ "$pfn" -ge "$first_pfn" ] && [ "$pfn" -lt "$end_pfn" ] \
         && { [ $# -lt 3 ] || { [ "$va" -ge "$2" ] && [ "$va" -lt "$3" ]; }; }; then
        n=$(( n + 1 ))
      fi
    fi
  done < "$mnt/$1/pte"
  echo "$n"
}

app=
clock_running=0
while read -r key val; do
  if [ "$key" = state ] && [ "$val" = running ]; then clock_running=1; fi
done < "$mnt/clock"
echo pause > "$mnt/clock"
cleanup() {
  # on an early exit, leave no process behind; always give the clock back as found
  if [ -n "$app" ] && [ -d "$mnt/$app" ]; then echo "kill $app" > "$mnt/ctl"; fi
  if [ "$clock_running" = 1 ]; then echo resume > "$mnt/clock"; fi
}
trap cleanup EXIT

block_hex=$(cat "$sys/block_size_bytes")
block=$(( 16#$block_hex ))
block_kb=$(( block / 1024 ))
block_pages=$(( block / 4096 ))
memmap_kb=$(( block_pages * 64 / 1024 ))
total0=$(value "$mnt/meminfo" MemTotal)
free0=$(value "$mnt/meminfo" MemFree)
echo "hotplug: $total0 kB of RAM, memory blocks of $block_kb kB (block_size_bytes $block_hex)"

# 1. probe the first block from 4 GiB up that is neither present nor in iomem's way
n=$(( (4 << 30) / block ))
while :; do
  addr=$(printf '%#x' $(( n * block )))
  if [ ! -d "$sys/memory$n" ] && { echo "$addr" > "$sys/probe"; } 2>/dev/null; then
    break
  fi
  n=$(( n + 1 ))
  if [ "$n" -gt $(( (4 << 30) / block + 64 )) ]; then
    echo "hotplug: no free block to probe"
    exit 1
  fi
done
blk=$sys/memory$n
first_pfn=$(( n * block_pages ))
end_pfn=$(( first_pfn + block_pages ))
range=$(printf '%x-%x : System RAM' $(( n * block )) $(( (n + 1) * block - 1 )))
echo "1. echo $addr > $sys/probe: memory$n appears"
for f in state online phys_index valid_zones; do
  echo "   memory$n/$f: $(cat "$blk/$f")"
done
check "memory$n state" "$(cat "$blk/state")" offline
if grep -qx "$range" "$mnt/iomem"; then
  echo "   ok: iomem has $range"
else
  echo "   WRONG: iomem has no line $range"
  failed=1
fi
total1=$(value "$mnt/meminfo" MemTotal)
free1=$(value "$mnt/meminfo" MemFree)
change MemTotal "$total0" "$total1"
change MemFree "$free0" "$free1"
check "MemTotal change" $(( total1 - total0 )) 0
check "memmap taken from MemFree (kB)" $(( free0 - free1 )) "$memmap_kb"

# 2. online it into ZONE_MOVABLE
node=node0
for link in "$blk"/node*; do node=${link##*/}; done      # memoryN/nodeM -> ../../node/nodeM
node_meminfo=$mnt/devices/system/node/$node/meminfo
node_total1=$(value "$node_meminfo" MemTotal)
echo "2. echo online_movable > $blk/state (memory$n is on $node)"
echo online_movable > "$blk/state"
check "memory$n state" "$(cat "$blk/state")" online
check "memory$n valid_zones" "$(cat "$blk/valid_zones")" Movable
total2=$(value "$mnt/meminfo" MemTotal)
free2=$(value "$mnt/meminfo" MemFree)
change MemTotal "$total1" "$total2"
check "MemTotal growth (kB)" $(( total2 - total1 )) "$block_kb"
check "MemFree growth (kB)" $(( free2 - free1 )) "$block_kb"
node_total2=$(value "$node_meminfo" MemTotal)
change "$node MemTotal" "$node_total1" "$node_total2"
check "$node MemTotal growth (kB)" $(( node_total2 - node_total1 )) "$block_kb"

# 3. a process writes 16 MiB: its pages land in the new block
exec 3<> "$mnt/ctl"
app=$(ask 3 "spawn app")
exec 4<> "$mnt/$app/ctl"
addr_app=$(ask 4 "mmap 16M")
ask 4 "fill $addr_app 16M seed=7" > /dev/null
echo "3. spawn app (pid $app), mmap 16M at $addr_app and write every page"
end_app=$(( addr_app + (16 << 20) ))
check "app's 16M pages in memory$n" "$(in_block "$app" $(( addr_app )) "$end_app")" 4096
moving=$(in_block "$app")
echo "   app has $moving pages in memory$n (the 4096 and its stack)"
free3=$(value "$mnt/meminfo" MemFree)
migrated0=$(value "$mnt/vmstat" pgmigrate_success)

# 4. offline: every page moves out
echo "4. echo offline > $blk/state"
echo offline > "$blk/state"
check "memory$n state" "$(cat "$blk/state")" offline
echo "   kmsg: $(last_kmsg)"
case $(last_kmsg) in
  *"] Offlined Pages $block_pages") echo "   ok: kmsg says Offlined Pages $block_pages" ;;
  *) echo "   WRONG: kmsg does not say Offlined Pages $block_pages"; failed=1 ;;
esac
total4=$(value "$mnt/meminfo" MemTotal)
free4=$(value "$mnt/meminfo" MemFree)
change MemTotal "$total2" "$total4"
change MemFree "$free3" "$free4"
check "MemTotal" "$total4" "$total0"
check "MemFree fall (kB)" $(( free3 - free4 )) "$block_kb"
check "pages migrated (pgmigrate_success)" $(( $(value "$mnt/vmstat" pgmigrate_success) - migrated0 )) "$moving"
check "app's pages left in memory$n" "$(in_block "$app")" 0
check "pages that differ from what app wrote" "$(ask 4 "verify $addr_app 16M seed=7")" 0

# 5. a kernel frame in a Normal block pins it
echo "5. echo online_kernel > $blk/state; a driver takes a frame there (palloc zone=Normal)"
echo online_kernel > "$blk/state"
check "memory$n valid_zones" "$(cat "$blk/valid_zones")" Normal
frame=$(ask 3 "palloc zone=Normal count=1")
echo "   palloc -> frame $frame"
total5=$(value "$mnt/meminfo" MemTotal)
free5=$(value "$mnt/meminfo" MemFree)
if msg=$( { echo offline > "$blk/state"; } 2>&1 ); then
  echo "   WRONG: offlining a block with a kernel frame in it succeeded"
  failed=1
else
  echo "   echo offline > $blk/state: ${msg##*: }"
  echo "   kmsg: $(last_kmsg)"
  check "error" "${msg##*: }" "Device or resource busy"
fi
check "memory$n state" "$(cat "$blk/state")" online
check "MemTotal" "$(value "$mnt/meminfo" MemTotal)" "$total5"
check "MemFree" "$(value "$mnt/meminfo" MemFree)" "$free5"
check "pages that differ from what app wrote" "$(ask 4 "verify $addr_app 16M seed=7")" 0
echo "pfree $frame" >&3
echo offline > "$blk/state"
echo "   pfree $frame; echo offline > $blk/state"
check "memory$n state" "$(cat "$blk/state")" offline
check "MemTotal" "$(value "$mnt/meminfo" MemTotal)" "$total0"

# 6. kill app
exec 4>&-
echo "6. kill $app"
echo "kill $app" >&3
exec 3>&-
app=
free6=$(value "$mnt/meminfo" MemFree)
change MemFree "$free0" "$free6"
check "MemFree (all but the offline block's memmap)" "$free6" $(( free0 - memmap_kb ))
if grep -qx "$range" "$mnt/iomem"; then
  echo "   ok: memory$n stays present (offline): iomem still has $range"
else
  echo "   WRONG: iomem lost $range"
  failed=1
fi

if [ "$failed" -ne 0 ]; then
  echo "hotplug: some figures were wrong"
  exit 1
fi
echo "hotplug: every figure as expected"
