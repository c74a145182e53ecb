"""<pid>/heap: the process's allocator as its own malloc_stats would show it.

Per pool: its segments, bytes in use and free, the top (the wilderness),
what scavenge could hand back, external fragmentation (1 - largest free area
/ free bytes: 0 when all free space is one piece), and its free lists by size
class. Then the large blocks with their own mappings, glibc's mallinfo2
figures, the stack pointer, and every live allocation.
"""
from __future__ import annotations

from engine.heap.heap import MMAP_THRESHOLD, TOP_PAD, TRIM_THRESHOLD


def _frag(free: int, largest: int) -> str:
    return f"{1 - largest / free:.2f}" if free else "0.00"


def show_heap(m, pid: int) -> str:
    v = m.heap_view(pid)
    out = [f"heap of {pid} ({v['comm']}): guard checks {'on' if v['guard'] else 'off'}\n"]
    h = v["heap"]
    if not v["mm"]:
        out.append("no address space: a kernel thread has no heap\n")
    elif h is None:
        out.append("no heap yet (the process has not called malloc)\n")
    else:
        out.append(f"malloc {h['nmalloc']} free {h['nfree']} errors {h['errors']} "
                   f"scavenged {h['scavenged_pages']} pages\n")
        out.append(f"mmap_threshold {MMAP_THRESHOLD} trim_threshold {TRIM_THRESHOLD} "
                   f"top_pad {TOP_PAD}\n")
        all_free = all_largest = 0
        for p in h["pools"]:
            out.append(f"\npool {p['id']} ({p['name']}, {p['kind']}): {len(p['segments'])} "
                       f"segment{'s' * (len(p['segments']) != 1)}, mapped {p['mapped']} bytes\n")
            for s, e in p["segments"]:
                out.append(f"  segment {s:#x}-{e:#x}\n")
            out.append(f"  in use      {p['used']} bytes in {p['chunks']} chunks\n")
            out.append(f"  free        {p['free']} bytes in {p['free_chunks']} chunks + top "
                       f"{p['top']}, largest {p['largest_free']}\n")
            out.append(f"  fragmentation {_frag(p['free'], p['largest_free'])}\n")
            out.append(f"  grows {p['grows']} trims {p['trims']}\n")
            if p["bins"]:
                out.append("  free lists:  class   size>=  chunks       bytes\n")
                for c, floor, n, nbytes in p["bins"]:
                    out.append(f"              {c:5d} {floor:8d} {n:7d} {nbytes:11d}\n")
            all_free += p["free"]
            all_largest = max(all_largest, p["largest_free"])
        out.append(f"\nown mappings (>= {MMAP_THRESHOLD // 1024}K): {h['mmapped_count']} blocks, "
                   f"{h['mmapped']} bytes\n")
        out.append(f"releasable {h['releasable']} bytes (whole pages inside free areas: what "
                   f"scavenge gives back)\n")
        out.append(f"fragmentation {_frag(all_free, all_largest)} (1 - largest free area / "
                   f"free bytes)\n")
        pools = h["pools"]
        main = pools[0]
        out.append(f"mallinfo: arena {sum(p['mapped'] for p in pools)} "
                   f"ordblks {sum(p['free_chunks'] + (1 if p['top'] else 0) for p in pools)} "
                   f"hblks {h['mmapped_count']} hblkhd {h['mmapped']} "
                   f"uordblks {sum(p['used'] for p in pools)} fordblks {all_free} "
                   f"keepcost {main['top']}\n")
    if v["mm"]:
        st = v.get("stack")
        if st:
            top = st[1]
            out.append(f"\nstack: [stack] {st[0]:#x}-{st[1]:#x}, sp {v['sp']:#x}, depth "
                       f"{top - v['sp']} bytes; {max(0, (v['sp'] - 128) // 4096 * 4096 - st[0])} "
                       f"bytes of it below sp (scavenge gives back those pages that are resident)\n")
        else:
            out.append("\nstack: none (no [stack] mapping)\n")
    if h is not None:
        live = h["live"]
        req = sum(a[0] for _, a in live)
        chunks = sum(a[1] for _, a in live)
        out.append(f"\nlive allocations: {len(live)} ({req} bytes requested, {chunks} bytes in "
                   f"chunks)\n")
        if live:
            out.append(f"  {'address':<18} {'size':>10} {'chunk':>10} {'pool':>5} {'hint':<5} "
                       f"{'tick':>8}\n")
            for ptr, (n, csz, pool, hint, tick) in live:
                out.append(f"  {ptr:#018x} {n:10d} {csz:10d} {pool if pool >= 0 else 'mmap':>5} "
                           f"{hint:<5} {tick:8d}\n")
    return "".join(out)
