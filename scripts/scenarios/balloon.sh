#!/usr/bin/env bash
# The virtio balloon: the host takes memory back from a busy guest, then returns it.
# Shown with nothing but echo and cat (and the shell's read, test and arithmetic).
#
#   scripts/scenarios/balloon.sh MOUNTPOINT          (best on the small machine:
#                                                     memfs mount MNT --config small)
#
# A process, hog, writes a distinct value to every page of an area three
# quarters the size of RAM. The host then asks for half of RAM back: it writes
# that many 4 KiB pages to devices/virtio/balloon/target. The guest's driver
# moves `actual` towards the target by at most 2048 pages a tick, taking the
# pages from the page allocator; with hog's pages in the way it has to reclaim
# (vmstat zswpout/pswpout: hog's pages go to zswap and swap), but it never
# kills anybody. MemTotal does not change (DEFLATE_ON_OOM: the balloon's pages
# count as used, meminfo's Balloon line shows them), MemFree stays low, and
# the balloon's stats file reports the guest's figures to the host. hog reads
# every value back intact. The host then lets go (target 0): the balloon
# deflates 2048 pages a tick, and MemFree ends at least where it was before
# the inflate (the pages reclaim pushed out stay out until hog touches them).
#
# The clock is paused while the scenario runs (and resumed afterwards if it
# was running); the balloon is left with target 0. The key figures are
# checked; the script exits 1 if one is wrong, 2 if the mount point is not a
# memfs machine.
set -euo pipefail

mnt=${1:?usage: balloon.sh MOUNTPOINT}
if [ ! -f "$mnt/meminfo" ] || [ ! -f "$mnt/ctl" ] || [ ! -d "$mnt/devices/virtio/balloon" ]; then
  echo "balloon: $mnt is not a mounted memfs machine" >&2
  exit 2
fi
B=$mnt/devices/virtio/balloon
RATE=2048

failed=0
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

show_meminfo() {
  echo "   meminfo: MemTotal $(value "$mnt/meminfo" MemTotal) kB, MemFree $(value "$mnt/meminfo" MemFree) kB," \
       "MemAvailable $(value "$mnt/meminfo" MemAvailable) kB, Balloon $(value "$mnt/meminfo" Balloon) kB," \
       "SwapFree $(value "$mnt/meminfo" SwapFree) kB, Zswapped $(value "$mnt/meminfo" Zswapped) kB"
}

show_vmstat() {
  local key val out=""
  while read -r key val; do
    case $key in
      nr_balloon_pages|balloon_inflate|balloon_deflate|pswpout|pswpin|zswpout|zswpin|pgsteal_direct|pgsteal_kswapd|oom_kill)
        out+=" $key $val" ;;
    esac
  done < "$mnt/vmstat"
  echo "   vmstat:$out"
}

# step_until WANT: step the clock one tick at a time, printing actual, until it is WANT
# (at most TICKS ticks); checks that each tick moves actual by min(2048, what is left)
step_until() {
  local want=$1 before now expect tick=0
  before=$(cat "$B/actual")
  while [ "$before" != "$want" ] && [ "$tick" -lt "$ticks" ]; do
    echo "step 1" > "$mnt/clock"
    tick=$((tick + 1))
    now=$(cat "$B/actual")
    if [ "$before" -lt "$want" ]; then
      expect=$((before + RATE < want ? before + RATE : want))
    else
      expect=$((before - RATE > want ? before - RATE : want))
    fi
    echo "   tick $tick: actual $now"
    if [ "$now" != "$expect" ]; then
      echo "   WRONG: actual = $now after tick $tick, expected $expect ($RATE pages a tick)"
      failed=1
    fi
    before=$now
  done
}

hog=
clock_running=0
while read -r key val; do
  if [ "$key" = state ] && [ "$val" = running ]; then clock_running=1; fi
done < "$mnt/clock"
echo pause > "$mnt/clock"
cleanup() {
  # on an early exit, leave no process behind and the balloon empty; always give the
  # clock back as found
  if [ -n "$hog" ] && [ -d "$mnt/$hog" ]; then echo "kill $hog" > "$mnt/ctl"; fi
  echo 0 > "$B/target" || true
  if [ "$clock_running" = 1 ]; then echo resume > "$mnt/clock"; fi
}
trap cleanup EXIT

ram_kb=$(value "$mnt/meminfo" MemTotal)
hog_mb=$(( ram_kb * 3 / 4 / 1024 ))                 # three quarters of RAM
target=$(( ram_kb / 4 / 2 ))                        # half of RAM, in 4 KiB pages
ticks=$(( (target + RATE - 1) / RATE ))
echo "balloon: $ram_kb kB of RAM; hog writes ${hog_mb} MiB, the host asks for $target pages" \
     "($(( target * 4 )) kB)"
echo "0. the balloon device"
for f in features target actual reported_pages; do
  echo "   $f: $(cat "$B/$f")"
done
check "actual" "$(cat "$B/actual")" 0
show_meminfo

exec 3<> "$mnt/ctl"
hog=$(ask 3 "spawn hog")
exec 4<> "$mnt/$hog/ctl"
addr=$(ask 4 "mmap ${hog_mb}M")
echo "1. spawn hog (pid $hog), mmap ${hog_mb}M at $addr and write every page"
ask 4 "fill $addr ${hog_mb}M seed=1" > /dev/null
show_meminfo
show_vmstat
free0=$(value "$mnt/meminfo" MemFree)
out0=$(( $(value "$mnt/vmstat" pswpout) + $(value "$mnt/vmstat" zswpout) ))
inflated0=$(value "$mnt/vmstat" balloon_inflate)
deflated0=$(value "$mnt/vmstat" balloon_deflate)

echo "2. the host asks for $target pages: echo $target > $B/target"
echo "$target" > "$B/target"
while IFS= read -r line; do last=$line; done < "$mnt/kmsg"
echo "   kmsg: $last"
case $last in
  *"virtio_balloon virtio0: target $target pages ($(( target * 4 )) kB), actual 0") echo "   ok: kmsg line" ;;
  *) echo "   WRONG: kmsg's last line is not the target's"; failed=1 ;;
esac
check "actual before any tick" "$(cat "$B/actual")" 0

echo "3. step the clock: the balloon inflates, $RATE pages a tick, reclaiming as it goes"
step_until "$target"
check "actual" "$(cat "$B/actual")" "$target"
show_meminfo
show_vmstat
check "MemTotal (the balloon's pages stay in it)" "$(value "$mnt/meminfo" MemTotal)" "$ram_kb"
check "Balloon" "$(value "$mnt/meminfo" Balloon)" "$(( target * 4 ))"
check "nr_balloon_pages" "$(value "$mnt/vmstat" nr_balloon_pages)" "$target"
check "balloon_inflate" "$(( $(value "$mnt/vmstat" balloon_inflate) - inflated0 ))" "$target"
out1=$(( $(value "$mnt/vmstat" pswpout) + $(value "$mnt/vmstat" zswpout) ))
check_that "the guest was pushed into reclaim: pswpout+zswpout $out0 -> $out1" "$out1" -gt "$out0"
check "oom_kill" "$(value "$mnt/vmstat" oom_kill)" 0
echo "   stats (what the guest tells the host):"
cat "$B/stats" | indent
check "stats swap-out (bytes)" "$(value "$B/stats" swap-out)" "$(( $(value "$mnt/vmstat" pswpout) * 4096 ))"
check "stats total-memory (bytes)" "$(value "$B/stats" total-memory)" "$(( ram_kb * 1024 ))"
check "stats free-memory (bytes)" "$(value "$B/stats" free-memory)" "$(( $(value "$mnt/meminfo" MemFree) * 1024 ))"

echo "4. hog reads every page back"
check "pages that differ from what hog wrote" "$(ask 4 "verify $addr ${hog_mb}M seed=1")" 0
show_vmstat

echo "5. the host lets go: echo 0 > $B/target"
free1=$(value "$mnt/meminfo" MemFree)
echo 0 > "$B/target"
step_until 0
check "actual" "$(cat "$B/actual")" 0
show_meminfo
show_vmstat
free2=$(value "$mnt/meminfo" MemFree)
check "Balloon" "$(value "$mnt/meminfo" Balloon)" 0
check "MemTotal" "$(value "$mnt/meminfo" MemTotal)" "$ram_kb"
check "balloon_deflate" "$(( $(value "$mnt/vmstat" balloon_deflate) - deflated0 ))" "$target"
check_that "MemFree back: $free1 -> $free2 kB, at least the $(( target * 4 )) kB of the balloon" \
  "$(( free2 - free1 ))" -ge "$(( target * 4 ))"
check_that "MemFree $free2 kB is at least the $free0 kB before the inflate" "$free2" -ge "$free0"

echo "6. hog's values after the deflate"
check "pages that differ from what hog wrote" "$(ask 4 "verify $addr ${hog_mb}M seed=1")" 0
exec 4>&-
echo "7. kill $hog"
echo "kill $hog" >&3
exec 3>&-
hog=

if [ "$failed" -ne 0 ]; then
  echo "balloon: some figures were wrong"
  exit 1
fi
echo "balloon: every figure as expected"
