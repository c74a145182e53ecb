"""Memory hot-plug and faulty RAM through the mount, on the small machine.

The small machine (config/small.yaml): 64 MiB of RAM on node 0, zones DMA and DMA32
only, memory blocks of 128 MiB, struct page 64 bytes, 128 MiB of swap. Figures worked
out by hand from Linux's definitions (mm/memory_hotplug.c, mm/page_alloc.c,
drivers/base/memory.c, mm/memory-failure.c):

  fresh       MemTotal = MemFree = 55300 kB: DMA managed 3840 pages, DMA32 9985.
              min_free_kbytes = int_sqrt(16 * 55300) = 940.
  block       128 MiB = 0x8000000 bytes = 32768 pages = 131072 kB; block_size_bytes reads
              "8000000\\n". 0x100000000 (4 GiB) / 0x8000000 = 32: memory32, phys_index
              "00000020", pfns 0x100000-0x107fff, iomem "100000000-107ffffff : System RAM".
  memmap      32768 struct pages * 64 bytes = 2 MiB = 512 pages, taken at probe from
              existing memory (DMA32: 9985 - 512 = 9473 free): MemFree 55300 -> 53252 kB,
              MemTotal unchanged, node0 MemUsed 2048 kB.
  online      +131072 kB: MemTotal 186372. MemFree 53252 + 131072 = 184324.
  Normal      (online_kernel) present = managed = spanned = 32768, start_pfn 1048576.
              The block is low memory: min_free_kbytes = int_sqrt(16 * 186372) = 1726,
              pages_min 431, shares DMA 431*3840/46593 = 35, DMA32 431*9985/46593 = 92,
              Normal 431*32768/46593 = 303; gap = max(share/4, managed*10/10000):
              DMA 8 (min/low/high 35/43/51), DMA32 23 (92/115/138), Normal 75 (303/378/453).
              protection DMA: DMA32 9985/256 = 39, Normal+ (9985+32768)/256 = 167;
              DMA32: 32768/256 = 128.
  Movable     (online_movable) not low memory: min_free_kbytes stays 940 (DMA 65/81/97,
              DMA32 169/211/253); Movable min = clamp(32768/1024, 32, 128) = 32, gap
              max(8, 32) = 32: 32/64/96. protection DMA (0, 39, 39, 167, 167), DMA32
              (0, 0, 0, 128, 128). totalreserve = (97+167) + (253+128) + 96 = 741 pages:
              MemAvailable = 184324 - 2964 = 181360.
  CommitLimit total RAM pages * 50 / 100 + 32767 swap pages: 13825*50//100 + 32767 = 39679
              pages = 158716 kB; online: 46593*50//100 + 32767 = 56063 pages = 224252 kB.
  a process   spawn takes PGD, PUD, PMD, the stack's PTE table and the stack page (20 kB);
              mmap 16M at 0x7ffff6fff000 spans the 2 MiB blocks 0x7ffff6e00000..0x7ffff7e00000:
              9 PTE tables (36 kB); fill writes 4096 pages: 16384 + 20 + 36 = 16440 kB.
              Processes take anonymous memory from the highest zone first: a new block's
              frames. Kernel allocations (page tables, palloc) never come from Movable.
  offline     every in-use page of the block moves elsewhere: MemTotal -131072 and MemFree
              -131072 exactly (the block's free frames leave the count, the moved pages
              take as many frames elsewhere); vmstat pgmigrate_success counts the moves.
"""
from __future__ import annotations

import errno
import os
import re
import stat

import pytest

D = "devices/system/memory"
NODE0 = "devices/system/node/node0/meminfo"
MEMTOTAL_KB = 55300
BLOCK = 0x8000000
BLOCK_PAGES = 32768
BLOCK_KB = 131072
MEMMAP_KB = 2048
PFN_MASK = (1 << 55) - 1
PRESENT = 1 << 63
KPF_HWPOISON = 1 << 19
KPF_NOPAGE = 1 << 20
FRESH_IOMEM_TAIL = "fffc0000-ffffffff : Reserved\n"


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def vmstat(m) -> dict[str, int]:
    return {k: int(v) for k, v in (ln.split() for ln in m.read("vmstat").splitlines())}


def zone(m, name: str) -> dict[str, object]:
    """One zone of zoneinfo: pages free, min, low, high, spanned, present, managed,
    start_pfn (when populated) and protection as a tuple."""
    text = m.read("zoneinfo")
    head = f"Node 0, zone {name:>8}\n"
    assert head in text, f"no zone {name} in zoneinfo"
    block = text.split(head, 1)[1].split("\nNode ", 1)[0]
    out: dict[str, object] = {}
    for key, val in re.findall(r"^  (?:      )?(pages free|min|low|high|spanned|present|managed)"
                               r" +(\d+)$", block, re.M):
        out[key] = int(val)
    prot = re.search(r"^        protection: \(([\d, ]+)\)$", block, re.M)
    out["protection"] = tuple(int(x) for x in prot.group(1).split(", "))
    start = re.search(r"^  start_pfn: +(\d+)$", block, re.M)
    if start:
        out["start_pfn"] = int(start.group(1))
    return out


def zones_free_kb(m) -> int:
    return 4 * sum(int(x) for x in re.findall(r"^  pages free +(\d+)$", m.read("zoneinfo"), re.M))


def node0(m) -> dict[str, int]:
    return {k.removeprefix("Node 0 "): v for k, v in m.kb(NODE0).items()}


def pfns(m, pid: int, va: int, pages: int) -> list[int]:
    """The frames backing [va, va + pages pages), read from pagemap (all must be present)."""
    out = []
    for first in range(0, pages, 4096):
        for e in m.pagemap(pid, va + first * 4096, min(4096, pages - first)):
            assert e & PRESENT, f"page {len(out)} is not present: {e:#018x}"
            out.append(e & PFN_MASK)
    return out


def in_block(pfn: int, index: int) -> bool:
    return index * BLOCK_PAGES <= pfn < (index + 1) * BLOCK_PAGES


def memory_blocks(m) -> list[str]:
    return sorted((n for n in os.listdir(m / D) if n.startswith("memory")),
                  key=lambda n: int(n[6:]))


def kpageflags(m, pfn: int) -> int:
    return m.u64s("kpageflags", pfn)[0]


def filled_process(m, name: str, size: str, seed: int, pages: int) -> tuple[int, int]:
    pid = m.spawn(name)
    addr = m.mmap(pid, size)
    m.pctl(pid, f"fill {addr:#x} {size} seed={seed}")
    assert m.status(pid)["VmRSS"] == 4 * pages + 4
    return pid, addr


STACK_PAGE = 0x7FFFFFFFE000


# ---------------------------------------------------------------------------
# probe, online, the files
# ---------------------------------------------------------------------------

def test_probe_adds_an_offline_block_and_pays_for_its_memmap(small):
    iomem0 = small.read("iomem")
    assert iomem0.endswith(FRESH_IOMEM_TAIL) and "100000000-" not in iomem0
    assert memory_blocks(small) == ["memory0"]
    dma32 = zone(small, "DMA32")
    assert (dma32["pages free"], dma32["managed"]) == (9985, 9985)

    small.write(f"{D}/probe", "0x100000000\n")

    assert memory_blocks(small) == ["memory0", "memory32"]
    b = f"{D}/memory32"
    assert small.read(f"{b}/state") == "offline\n"
    assert small.read(f"{b}/online") == "0\n"
    assert small.read(f"{b}/phys_index") == "00000020\n"
    assert small.read(f"{b}/phys_device") == "0\n"
    assert small.read(f"{b}/removable") == "1\n"
    assert small.read(f"{b}/valid_zones") == "Normal Movable\n", "default (kernel zone) first"
    assert os.readlink(small / f"{b}/node0") == "../../node/node0"
    assert os.path.isfile(small / f"{b}/node0/meminfo"), "the link resolves to node0"

    mi = small.meminfo()
    assert (mi["MemTotal"], mi["MemFree"]) == (MEMTOTAL_KB, MEMTOTAL_KB - MEMMAP_KB) == (55300, 53252)
    assert zones_free_kb(small) == mi["MemFree"]
    n = node0(small)
    assert (n["MemTotal"], n["MemFree"], n["MemUsed"]) == (55300, 53252, 2048)
    assert zone(small, "DMA32")["pages free"] == 9985 - 512 == 9473, "the memmap's 512 pages"
    for z in ("Normal", "Movable"):
        zz = zone(small, z)
        assert (zz["present"], zz["managed"], zz["spanned"]) == (0, 0, 0), "offline: in no zone"
    assert small.read("iomem") == iomem0 + "100000000-107ffffff : System RAM\n"
    assert small.kmsg_tail(1)[0].endswith(
        "memory: probe [mem 0x0000000100000000-0x0000000107ffffff] node 0")


def test_memory_block_files_have_the_sysfs_formats_and_modes(small):
    mode = lambda rel: stat.S_IMODE(os.stat(small / rel).st_mode)     # noqa: E731
    assert small.read(f"{D}/block_size_bytes") == "8000000\n" == f"{BLOCK:x}\n"
    assert small.read(f"{D}/auto_online_blocks") == "offline\n"
    assert (mode(f"{D}/block_size_bytes"), mode(f"{D}/auto_online_blocks")) == (0o444, 0o644)
    for f in ("probe", "hard_offline_page", "soft_offline_page"):
        assert mode(f"{D}/{f}") == 0o200, f
    with pytest.raises(PermissionError):
        small.write(f"{D}/block_size_bytes", "4000000\n")

    # the boot block: online, spanning DMA and DMA32, so in no single zone
    b0 = f"{D}/memory0"
    assert [small.read(f"{b0}/{f}") for f in
            ("state", "online", "phys_index", "phys_device", "removable", "valid_zones")] == \
        ["online\n", "1\n", "00000000\n", "0\n", "1\n", "none\n"]
    assert os.readlink(small / f"{b0}/node0") == "../../node/node0"
    for f, want in (("state", 0o644), ("online", 0o644), ("phys_index", 0o444),
                    ("phys_device", 0o444), ("removable", 0o444), ("valid_zones", 0o444)):
        assert mode(f"{b0}/{f}") == want, f

    small.write(f"{D}/probe", "0x100000000\n")
    small.write(f"{D}/memory32/online", "1\n")               # online: the default zone
    assert small.read(f"{D}/memory32/state") == "online\n"
    assert small.read(f"{D}/memory32/online") == "1\n"
    assert small.read(f"{D}/memory32/valid_zones") == "Normal\n"
    small.write(f"{D}/memory32/online", "0\n")
    small.write(f"{D}/memory32/state", "online_movable\n")
    assert small.read(f"{D}/memory32/valid_zones") == "Movable\n"


def test_onlining_into_normal_adds_exactly_one_block_and_new_pages_land_in_it(small):
    small.write(f"{D}/probe", "0x100000000\n")
    small.write(f"{D}/memory32/state", "online_kernel\n")

    assert small.read(f"{D}/memory32/state") == "online\n"
    mi = small.meminfo()
    assert mi["MemTotal"] == MEMTOTAL_KB + BLOCK_KB == 186372
    assert mi["MemFree"] == 53252 + BLOCK_KB == 184324
    assert mi["CommitLimit"] == 224252
    assert zones_free_kb(small) == mi["MemFree"]
    n = node0(small)
    assert (n["MemTotal"], n["MemFree"], n["MemUsed"]) == (186372, 184324, 2048)
    normal = zone(small, "Normal")
    assert normal == {"pages free": 32768, "min": 303, "low": 378, "high": 453,
                      "spanned": 32768, "present": 32768, "managed": 32768,
                      "protection": (0, 0, 0, 0, 0), "start_pfn": 1048576}
    dma, dma32 = zone(small, "DMA"), zone(small, "DMA32")
    assert (dma["min"], dma["low"], dma["high"], dma["protection"]) == (35, 43, 51, (0, 39, 167, 167, 167))
    assert (dma32["min"], dma32["low"], dma32["high"], dma32["protection"]) == \
        (92, 115, 138, (0, 0, 128, 128, 128))
    assert small.read("sys/vm/min_free_kbytes") == "1726\n"
    assert "Node 0, zone   Normal" + "      0" * 10 + "     32 \n" in small.read("buddyinfo"), \
        "32 free blocks of order 10"

    pid, a = filled_process(small, "app", "16M", 3, 4096)
    frames = pfns(small, pid, a, 4096)
    assert all(in_block(p, 32) for p in frames), "every new page is in the new block"
    assert len(set(frames)) == 4096
    assert small.meminfo()["MemFree"] == 184324 - 16440 == 167884
    # 4096 data pages, the stack page and 13 page-table pages (PGD, PUD, PMD, 10 PTE)
    assert zone(small, "Normal")["pages free"] == 32768 - 4096 - 1 - 13
    assert node0(small)["MemFree"] == 167884
    assert small.pctl(pid, f"verify {a:#x} 16M seed=3") == "0"


def test_auto_online_blocks_online_movable_brings_a_probe_up_in_movable(small):
    assert small.read(f"{D}/auto_online_blocks") == "offline\n"
    assert small.write_errno(f"{D}/auto_online_blocks", "sideways\n") == errno.EINVAL
    for policy in ("online", "online_kernel", "offline", "online_movable"):
        small.write(f"{D}/auto_online_blocks", policy + "\n")
        assert small.read(f"{D}/auto_online_blocks") == policy + "\n"

    small.write(f"{D}/probe", "0x100000000\n")

    b = f"{D}/memory32"
    assert (small.read(f"{b}/state"), small.read(f"{b}/valid_zones")) == ("online\n", "Movable\n")
    mi = small.meminfo()
    assert (mi["MemTotal"], mi["MemFree"], mi["MemAvailable"]) == (186372, 184324, 181360)
    assert mi["CommitLimit"] == 224252
    movable = zone(small, "Movable")
    assert movable == {"pages free": 32768, "min": 32, "low": 64, "high": 96, "spanned": 32768,
                       "present": 32768, "managed": 32768, "protection": (0, 0, 0, 0, 0),
                       "start_pfn": 1048576}
    assert zone(small, "Normal")["present"] == 0
    dma, dma32 = zone(small, "DMA"), zone(small, "DMA32")
    assert (dma["min"], dma["low"], dma["high"], dma["protection"]) == (65, 81, 97, (0, 39, 39, 167, 167))
    assert (dma32["min"], dma32["low"], dma32["high"], dma32["protection"]) == \
        (169, 211, 253, (0, 0, 0, 128, 128))
    assert small.read("sys/vm/min_free_kbytes") == "940\n", "Movable is not low memory"
    assert node0(small)["MemTotal"] == 186372

    pid = small.spawn("app")
    tables = [pfn for level, pfn in small.pte_dump(pid)[0]]
    assert len(tables) == 4 and not any(in_block(p, 32) for p in tables), \
        "page tables are unmovable: never in Movable"
    a = small.mmap(pid, "16M")
    small.pctl(pid, f"fill {a:#x} 16M seed=1")
    assert all(in_block(p, 32) for p in pfns(small, pid, a, 4096))


def test_bad_writes_fail_with_the_linux_errnos_and_change_nothing(small):
    probe = f"{D}/probe"
    assert small.write_errno(probe, "0x100001000\n") == errno.EINVAL, "not block-aligned"
    assert small.write_errno(probe, "0x104000000\n") == errno.EINVAL, "64M into a block"
    assert small.write_errno(probe, f"{0x104000000}\n") == errno.EINVAL, "decimal, misaligned"
    assert small.write_errno(probe, "0x4000000\n") == errno.EINVAL
    assert small.write_errno(probe, "four gig\n") == errno.EINVAL
    assert small.kmsg_tail(1)[0].endswith("probe: 'four gig' is not a physical address "
                                          "(0x hex or decimal)")
    assert small.write_errno(probe, "0x100000000\n") == 0
    assert small.write_errno(probe, "0x100000000\n") == errno.EEXIST, "already present"
    assert small.write_errno(probe, f"{4 << 30}\n") == errno.EEXIST, "the same, in decimal"
    assert small.write_errno(probe, "0\n") == errno.EEXIST, "memory0"
    assert small.write_errno(probe, "0xc0000000\n") == errno.EEXIST, "the PCI window in iomem"
    assert small.write_errno(probe, "0xf8000000\n") == errno.EEXIST, "IOAPIC, APIC, ROM"
    assert memory_blocks(small) == ["memory0", "memory32"]
    assert small.meminfo()["MemFree"] == MEMTOTAL_KB - MEMMAP_KB, "one memmap, paid once"
    assert small.read("iomem").count("System RAM") == 3

    b = f"{D}/memory32"
    assert small.write_errno(f"{b}/state", "sideways\n") == errno.EINVAL
    assert small.write_errno(f"{b}/state", "Online\n") == errno.EINVAL
    assert small.write_errno(f"{b}/state", "offline\n") == errno.EINVAL, "already offline"
    assert small.kmsg_tail(1)[0].endswith("memory32: already offline")
    assert small.write_errno(f"{b}/online", "0\n") == 0, "online: the current state succeeds"
    assert small.write_errno(f"{b}/online", "2\n") == errno.EINVAL
    assert small.read(f"{b}/state") == "offline\n"
    assert small.meminfo()["MemTotal"] == MEMTOTAL_KB

    assert small.write_errno(f"{b}/state", "online\n") == 0
    assert small.write_errno(f"{b}/state", "online\n") == errno.EINVAL, "already online"
    assert small.write_errno(f"{b}/state", "online_movable\n") == errno.EINVAL
    assert small.write_errno(f"{b}/online", "1\n") == 0
    assert small.read(f"{b}/valid_zones") == "Normal\n"
    assert small.meminfo()["MemTotal"] == MEMTOTAL_KB + BLOCK_KB

    # the boot block spans DMA and DMA32 (valid_zones none): it cannot go offline
    assert small.write_errno(f"{D}/memory0/state", "offline\n") == errno.EINVAL
    assert small.write_errno(f"{D}/memory0/online", "1\n") == 0
    assert small.read(f"{D}/memory0/state") == "online\n"


# ---------------------------------------------------------------------------
# offlining
# ---------------------------------------------------------------------------

def test_offlining_a_block_full_of_a_process_pages_keeps_every_value(small):
    """Two Movable blocks; `big` writes 160 MiB (40960 pages): memory33 fills up, the rest
    goes to memory32. Offlining memory33 moves its pages to memory32 and DMA32."""
    small.write(f"{D}/auto_online_blocks", "online_movable\n")
    small.write(f"{D}/probe", "0x100000000\n")
    small.write(f"{D}/probe", "0x108000000\n")
    assert small.meminfo()["MemTotal"] == MEMTOTAL_KB + 2 * BLOCK_KB == 317444
    pid, a = filled_process(small, "big", "160M", 5, 40960)
    frames = pfns(small, pid, a, 40960)
    stack = small.pagemap(pid, STACK_PAGE)[0] & PFN_MASK
    mine = sum(in_block(p, 33) for p in frames + [stack])
    assert mine >= BLOCK_PAGES - 1, f"memory33 is full of big's pages ({mine})"
    mi0, v0 = small.meminfo(), vmstat(small)
    st0 = small.status(pid)

    small.write(f"{D}/memory33/state", "offline\n")

    assert small.read(f"{D}/memory33/state") == "offline\n"
    assert small.read(f"{D}/memory33/online") == "0\n"
    assert small.read(f"{D}/memory33/valid_zones") == "Normal Movable\n"
    assert small.kmsg_tail(1)[0].endswith("Offlined Pages 32768")
    assert vmstat(small)["pgmigrate_success"] - v0["pgmigrate_success"] == mine
    mi = small.meminfo()
    assert mi["MemTotal"] == mi0["MemTotal"] - BLOCK_KB == 186372
    assert mi["MemFree"] == mi0["MemFree"] - BLOCK_KB
    assert zones_free_kb(small) == mi["MemFree"]
    assert node0(small)["MemTotal"] == 186372 and node0(small)["MemFree"] == mi["MemFree"]
    movable = zone(small, "Movable")
    assert (movable["present"], movable["managed"], movable["spanned"]) == (32768, 32768, 32768)
    assert "108000000-10fffffff : System RAM\n" in small.read("iomem"), "offline but present"

    after = pfns(small, pid, a, 40960)
    assert not any(in_block(p, 33) for p in after), "nothing left in the offline block"
    assert len(set(after)) == 40960
    assert all(new == old for old, new in zip(frames, after) if not in_block(old, 33)), \
        "pages outside the block stay put"
    assert small.status(pid)["VmRSS"] == st0["VmRSS"] and small.status(pid)["VmSwap"] == 0
    assert small.pctl(pid, f"verify {a:#x} 160M seed=5") == "0"
    assert small.pctl(pid, f"verify {a:#x} 160M seed=6") == "40960"


def test_offlining_moves_shared_and_file_pages_and_updates_every_mapping(small):
    """parent's 1 MiB is shared copy-on-write with child; parent also maps a 256K file
    shared. All of it, and both stacks (shared too), sit in the Movable block."""
    small.write(f"{D}/auto_online_blocks", "online_movable\n")
    small.write(f"{D}/probe", "0x100000000\n")
    parent, a = filled_process(small, "parent", "1M", 1, 256)
    child = int(small.pctl(parent, "fork"))
    small.ctl("file data 256K")
    f = small.mmap(parent, "256K file=data shared")
    small.pctl(parent, f"fill {f:#x} 256K seed=3")
    anon, file_ = pfns(small, parent, a, 256), pfns(small, parent, f, 64)
    assert anon == pfns(small, child, a, 256) and all(in_block(p, 32) for p in anon + file_)
    assert small.kpagecount(anon[0]) == [2]
    cached = small.meminfo()["Cached"]
    v0 = vmstat(small)["pgmigrate_success"]

    small.write(f"{D}/memory32/online", "0\n")

    assert vmstat(small)["pgmigrate_success"] - v0 == 256 + 64 + 1
    anon2, file2 = pfns(small, parent, a, 256), pfns(small, parent, f, 64)
    assert anon2 == pfns(small, child, a, 256), "both page tables point at the new frames"
    assert not any(in_block(p, 32) for p in anon2 + file2)
    assert small.kpagecount(anon2[0]) == [2]
    assert small.meminfo()["Cached"] == cached
    assert small.pctl(parent, f"verify {a:#x} 1M seed=1") == "0"
    assert small.pctl(child, f"verify {a:#x} 1M seed=1") == "0"
    assert small.pctl(parent, f"verify {f:#x} 256K seed=3") == "0"


def test_a_palloc_frame_in_the_block_makes_offlining_fail_and_nothing_changes(small):
    """app's page tables are made before the block exists (touch: read faults build the
    PTE tables), so only its data and the palloc'd frame are in the Normal block."""
    pid = small.spawn("app")
    a = small.mmap(pid, "16M")
    small.pctl(pid, f"touch {a:#x} 16M")
    assert small.meminfo()["MemFree"] == MEMTOTAL_KB - 20 - 36
    small.write(f"{D}/probe", "0x100000000\n")
    small.write(f"{D}/memory32/state", "online_kernel\n")
    assert small.meminfo()["MemFree"] == 55244 - MEMMAP_KB + BLOCK_KB == 184268
    small.pctl(pid, f"fill {a:#x} 16M seed=9")
    frames = pfns(small, pid, a, 4096)
    assert all(in_block(p, 32) for p in frames)
    k = int(small.ctl("palloc zone=Normal count=1"), 16)
    assert in_block(k, 32)
    before = (small.read("meminfo"), small.read(NODE0), small.read("vmstat"), small.read("iomem"))

    for rel, text in (("state", "offline\n"), ("online", "0\n")):
        assert small.write_errno(f"{D}/memory32/{rel}", text) == errno.EBUSY
        assert small.kmsg_tail(1)[0].endswith(
            f"memory offlining [mem 0x0000000100000000-0x0000000107ffffff] failed: pfn {k:#x} "
            "cannot be migrated (KERNEL: an unmovable kernel allocation)")
        assert small.read(f"{D}/memory32/state") == "online\n"
        assert small.read(f"{D}/memory32/online") == "1\n"
        assert (small.read("meminfo"), small.read(NODE0), small.read("vmstat"),
                small.read("iomem")) == before
        assert pfns(small, pid, a, 4096) == frames, "no page moved"
        assert small.meminfo()["MemTotal"] == 186372 and small.meminfo()["MemFree"] == 184268 - 16384 - 4
    assert small.pctl(pid, f"verify {a:#x} 16M seed=9") == "0"

    small.ctl(f"pfree {k:#x}")
    small.write(f"{D}/memory32/state", "offline\n")
    mi = small.meminfo()
    assert (mi["MemTotal"], mi["MemFree"]) == (55300, 55244 - MEMMAP_KB - 16384) == (55300, 36812)
    assert vmstat(small)["pgmigrate_success"] == 4096
    assert not any(in_block(p, 32) for p in pfns(small, pid, a, 4096))
    assert small.pctl(pid, f"verify {a:#x} 16M seed=9") == "0"


def test_page_tables_in_a_normal_block_pin_it_until_their_process_goes(small):
    small.write(f"{D}/probe", "0x100000000\n")
    small.write(f"{D}/memory32/state", "online_kernel\n")
    pid, a = filled_process(small, "app", "16M", 3, 4096)
    tables = [pfn for _, pfn in small.pte_dump(pid)[0]]
    assert len(tables) == 13 and all(in_block(p, 32) for p in tables)
    assert small.write_errno(f"{D}/memory32/state", "offline\n") == errno.EBUSY
    assert "(PAGETABLE: a page table)" in small.kmsg_tail(1)[0]
    assert small.meminfo()["MemTotal"] == 186372
    assert small.pctl(pid, f"verify {a:#x} 16M seed=3") == "0"
    small.ctl(f"kill {pid}")
    small.write(f"{D}/memory32/state", "offline\n")
    assert small.meminfo()["MemTotal"] == 55300
    assert small.meminfo()["MemFree"] == 55300 - MEMMAP_KB


def test_offlining_fails_when_the_rest_of_ram_cannot_take_the_pages(small):
    """hog writes 100 MiB (25600 pages) into the Movable block; about 53 MiB of RAM is
    left elsewhere: the pages have nowhere to go."""
    small.write(f"{D}/auto_online_blocks", "online_movable\n")
    small.write(f"{D}/probe", "0x100000000\n")
    pid, a = filled_process(small, "hog", "100M", 4, 25600)
    assert small.status(pid)["VmSwap"] == 0
    before = (small.read("meminfo"), small.read("vmstat"), small.read(NODE0))
    assert small.write_errno(f"{D}/memory32/state", "offline\n") == errno.EBUSY
    assert "25601 pages to migrate" in small.kmsg_tail(1)[0]
    assert small.read(f"{D}/memory32/state") == "online\n"
    assert (small.read("meminfo"), small.read("vmstat"), small.read(NODE0)) == before
    assert small.pctl(pid, f"verify {a:#x} 100M seed=4") == "0"


# ---------------------------------------------------------------------------
# DIMMs
# ---------------------------------------------------------------------------

def test_dimm_add_and_remove_round_trip(small):
    iomem0 = small.read("iomem")
    assert small.ctl("dimm add 256M") == "0"
    assert small.kmsg_tail(1)[0].endswith(
        "memory: dimm0 hot-added [mem 0x0000000100000000-0x000000010fffffff] node 0, "
        "memory32-memory33")
    assert small.read("iomem") == iomem0 + "100000000-10fffffff : System RAM\n"
    assert memory_blocks(small) == ["memory0", "memory32", "memory33"]
    assert [small.read(f"{D}/memory{i}/state") for i in (32, 33)] == ["offline\n"] * 2, \
        "auto_online_blocks is offline"
    assert small.read(f"{D}/memory33/phys_index") == "00000021\n"
    mi = small.meminfo()
    assert (mi["MemTotal"], mi["MemFree"]) == (55300, 55300 - 2 * MEMMAP_KB)

    assert small.ctl("dimm add 128M online=online_movable") == "1"
    assert small.read("iomem") == iomem0 + ("100000000-10fffffff : System RAM\n"
                                            "110000000-117ffffff : System RAM\n")
    assert small.read(f"{D}/memory34/valid_zones") == "Movable\n"
    mi = small.meminfo()
    assert (mi["MemTotal"], mi["MemFree"]) == (186372, 55300 - 3 * MEMMAP_KB + BLOCK_KB)
    assert node0(small)["MemTotal"] == 186372

    pid, a = filled_process(small, "app", "32M", 2, 8192)
    frames = pfns(small, pid, a, 8192)
    assert all(in_block(p, 34) for p in frames)
    stack_in = in_block(small.pagemap(pid, STACK_PAGE)[0] & PFN_MASK, 34)
    free_before = small.meminfo()["MemFree"]
    assert small.ctl("dimm remove 1") == str(8192 + stack_in)
    assert small.kmsg_tail(1)[0].endswith(
        f"memory: dimm1 removed (memory34-memory34, {8192 + stack_in} pages migrated)")
    assert memory_blocks(small) == ["memory0", "memory32", "memory33"]
    assert small.read("iomem") == iomem0 + "100000000-10fffffff : System RAM\n"
    mi = small.meminfo()
    assert mi["MemTotal"] == 55300
    assert mi["MemFree"] == free_before - BLOCK_KB + MEMMAP_KB, "the memmap comes back"
    assert node0(small)["MemTotal"] == 55300
    assert zone(small, "Movable")["present"] == 0
    assert small.pctl(pid, f"verify {a:#x} 32M seed=2") == "0"

    assert small.ctl("dimm remove 0") == "0"
    assert small.read("iomem") == iomem0
    assert memory_blocks(small) == ["memory0"]
    assert small.meminfo()["MemFree"] == free_before - BLOCK_KB + 3 * MEMMAP_KB
    assert small.rejected("dimm remove 0")[0] == errno.EINVAL
    assert small.rejected("dimm add 100M")[0] == errno.EINVAL, "not whole blocks"
    assert small.rejected("dimm add 128M node=1")[0] == errno.EINVAL, "one node"
    assert small.rejected("dimm add 128M online=sideways")[0] == errno.EINVAL
    assert small.read("iomem") == iomem0


def test_dimm_remove_is_all_or_nothing(small):
    """A two-block DIMM onlined into Normal; a palloc'd frame in one block: removing the
    DIMM fails and leaves both blocks online, the process's pages where they were."""
    assert small.ctl("dimm add 256M online=online_kernel") == "0"
    assert small.meminfo()["MemTotal"] == 55300 + 2 * BLOCK_KB
    pid, a = filled_process(small, "app", "8M", 1, 2048)
    k = int(small.ctl("palloc zone=Normal count=1"), 16)
    assert in_block(k, 32) or in_block(k, 33)
    frames = pfns(small, pid, a, 2048)
    before = (small.read("meminfo"), small.read("iomem"), small.read("vmstat"), small.read(NODE0))
    code, why = small.rejected("dimm remove 0")
    assert code == errno.EBUSY
    assert why.startswith("error: dimm remove: dimm0 stays: memory offlining") and f"pfn {k:#x}" in why
    assert [small.read(f"{D}/memory{i}/state") for i in (32, 33)] == ["online\n"] * 2
    assert (small.read("meminfo"), small.read("iomem"), small.read("vmstat"),
            small.read(NODE0)) == before
    assert pfns(small, pid, a, 2048) == frames
    assert small.pctl(pid, f"verify {a:#x} 8M seed=1") == "0"


def test_a_dimm_goes_to_the_lowest_free_address_from_4_gib(small):
    small.write(f"{D}/probe", "0x108000000\n")
    assert small.ctl("dimm add 128M") == "0"
    assert small.kmsg_tail(1)[0].endswith(
        "memory: dimm0 hot-added [mem 0x0000000100000000-0x0000000107ffffff] node 0, "
        "memory32-memory32")
    assert memory_blocks(small) == ["memory0", "memory32", "memory33"]


# ---------------------------------------------------------------------------
# faulty RAM
# ---------------------------------------------------------------------------

def test_a_hard_offlined_page_kills_its_process_only(small):
    """victim and bystander write 1 MiB each: 20 + 1024 + 4 (one PTE table) = 1048 kB apiece."""
    victim, a = filled_process(small, "victim", "1M", 1, 256)
    bystander, b = filled_process(small, "bystander", "1M", 2, 256)
    assert small.meminfo()["MemFree"] == 55300 - 2 * 1048
    pfn = pfns(small, victim, a + 5 * 4096, 1)[0]

    small.write(f"{D}/hard_offline_page", f"{(pfn << 12) + 0x7c0:#x}\n")   # an address, not a pfn

    assert small.kmsg_tail(2) == [
        f"[    0.000000] Memory failure: {pfn:#x}: Sending SIGBUS to victim:{victim} due to "
        "hardware memory corruption",
        f"[    0.000000] Memory failure: {pfn:#x}: recovery action for dirty LRU page: Recovered"]
    assert small.pids() == {5000001, bystander}
    mi = small.meminfo()
    assert mi["HardwareCorrupted"] == 4
    assert mi["MemFree"] == 55300 - 1048 - 4, "the victim's memory back, but the bad frame"
    assert zones_free_kb(small) == mi["MemFree"]
    assert small.pctl(bystander, f"verify {b:#x} 1M seed=2") == "0"

    free = int(small.ctl("palloc count=1"), 16)
    small.ctl(f"pfree {free:#x}")
    small.write(f"{D}/hard_offline_page", f"{free << 12:#x}\n")
    assert small.kmsg_tail(1)[0].endswith(
        f"Memory failure: {free:#x}: recovery action for free buddy page: Recovered")
    mi = small.meminfo()
    assert (mi["HardwareCorrupted"], mi["MemFree"]) == (8, 55300 - 1048 - 8)
    assert small.pids() == {5000001, bystander}

    kernel = int(small.ctl("palloc count=1"), 16)
    assert small.write_errno(f"{D}/hard_offline_page", f"{kernel << 12:#x}\n") == errno.EBUSY
    assert small.write_errno(f"{D}/hard_offline_page", "bad\n") == errno.EINVAL
    assert small.pids() == {5000001, bystander}
    assert small.pctl(bystander, f"verify {b:#x} 1M seed=2") == "0"


def test_a_hard_offlined_shared_page_kills_every_process_mapping_it(small):
    parent, a = filled_process(small, "parent", "64K", 1, 16)
    child = int(small.pctl(parent, "fork"))
    other, b = filled_process(small, "other", "64K", 2, 16)
    pfn = pfns(small, parent, a, 1)[0]
    assert pfns(small, child, a, 1) == [pfn]
    small.write(f"{D}/hard_offline_page", f"{pfn << 12:#x}\n")
    tail = small.kmsg_tail(3)
    assert sorted(tail[:2]) == sorted(
        f"[    0.000000] Memory failure: {pfn:#x}: Sending SIGBUS to parent:{p} due to hardware "
        "memory corruption" for p in (parent, child))
    assert small.pids() == {5000001, other}
    assert small.meminfo()["HardwareCorrupted"] == 4
    assert small.pctl(other, f"verify {b:#x} 64K seed=2") == "0"


def test_a_hard_offlined_clean_file_page_is_dropped_and_nobody_dies(small):
    small.ctl("file data 64K")
    pid = small.spawn("reader")
    a = small.mmap(pid, "64K file=data prot=r")
    small.pctl(pid, f"touch {a:#x} 64K")
    pfn = pfns(small, pid, a, 1)[0]
    mi0 = small.meminfo()
    assert mi0["Cached"] == 64

    small.write(f"{D}/hard_offline_page", f"{pfn << 12:#x}\n")

    assert small.kmsg_tail(1)[0].endswith(
        f"Memory failure: {pfn:#x}: recovery action for clean page cache: Recovered")
    assert pid in small.pids()
    mi = small.meminfo()
    assert mi["Cached"] == 60 and mi["HardwareCorrupted"] == 4
    assert mi["MemFree"] == mi0["MemFree"], "the page is gone, not freed"
    assert not small.pagemap(pid, a)[0] & PRESENT, "unmapped"
    assert small.pagemap(pid, a + 4096)[0] & PRESENT, "its neighbours stay"
    small.pctl(pid, f"touch {a:#x} 4K")               # read again: from the file, elsewhere
    again = pfns(small, pid, a, 1)[0]
    assert again != pfn
    assert small.meminfo()["Cached"] == 64


def test_a_soft_offlined_page_moves_with_its_content_and_its_process_lives(small):
    pid, a = filled_process(small, "app", "1M", 1, 256)
    child = int(small.pctl(pid, "fork"))
    va = a + 7 * 4096
    old = pfns(small, pid, va, 1)[0]
    mi0, v0 = small.meminfo(), vmstat(small)

    small.write(f"{D}/soft_offline_page", f"{(old << 12) + 0x123:#x}\n")

    new = pfns(small, pid, va, 1)[0]
    assert new != old and pfns(small, child, va, 1) == [new], "both mappings moved"
    assert small.kpagecount(new) == [2] and small.kpagecount(old) == [0]
    assert small.kmsg_tail(1)[0].endswith(f"soft offline: {old:#x}: page migrated to {new:#x}")
    assert small.pids() == {5000001, pid, child}
    assert small.pctl(pid, f"verify {a:#x} 1M seed=1") == "0"
    assert small.pctl(child, f"verify {a:#x} 1M seed=1") == "0"
    mi = small.meminfo()
    assert mi["HardwareCorrupted"] == 4
    assert mi["MemFree"] == mi0["MemFree"] - 4, "a new frame taken, the old one never given back"
    assert vmstat(small)["pgmigrate_success"] == v0["pgmigrate_success"] + 1

    assert small.write_errno(f"{D}/soft_offline_page", f"{old << 12:#x}\n") == 0, \
        "already poisoned: nothing to do"
    assert small.meminfo()["HardwareCorrupted"] == 4
    kernel = int(small.ctl("palloc count=1"), 16)
    assert small.write_errno(f"{D}/soft_offline_page", f"{kernel << 12:#x}\n") == errno.EBUSY
    assert small.meminfo()["HardwareCorrupted"] == 4


def test_hwpoison_rate_injects_failures_as_the_clock_runs(small):
    """rate=5: 5 frames a simulated second (100 ticks); each one logs one "recovery action"
    line, and every one not Ignored (a reserved or kernel frame) adds 4 kB."""
    pid, a = filled_process(small, "app", "32M", 9, 8192)
    assert small.ctl("hwpoison rate=5") == ""
    assert small.kmsg_tail(1)[0].endswith("hwpoison: injecting hard failures at 5 frames a second")
    n0 = len(small.read("kmsg").splitlines())
    small.step(100)
    new = small.read("kmsg").splitlines()[n0:]
    actions = [ln for ln in new if "recovery action for" in ln]
    assert len(actions) == 5, new
    bad = [ln for ln in actions if ln.endswith(": Recovered")]
    assert small.meminfo()["HardwareCorrupted"] == 4 * len(bad)
    for ln in new:
        g = re.search(r"Sending SIGBUS to (\S+):(\d+) ", ln)
        if g:
            assert int(g.group(2)) not in small.pids()
    assert small.ctl("hwpoison rate=0") == ""
    assert small.kmsg_tail(1)[0].endswith("hwpoison: injection stopped")
    hc = small.meminfo()["HardwareCorrupted"]
    n1 = len(small.read("kmsg").splitlines())
    small.step(200)
    assert small.read("kmsg").splitlines()[n1:] == [] and small.meminfo()["HardwareCorrupted"] == hc

    assert small.rejected("hwpoison rate=-1")[0] == errno.EINVAL
    assert small.rejected("hwpoison rate=x")[0] == errno.EINVAL
    assert pid not in small.pids() or small.pctl(pid, f"verify {a:#x} 32M seed=9") == "0", \
        "a process no failure hit has every value"

    keeper, b = filled_process(small, "keeper", "32M", 4, 8192)
    small.ctl("hwpoison rate=3 soft")
    assert small.kmsg_tail(1)[0].endswith("hwpoison: injecting soft failures at 3 frames a second")
    pids, hc = small.pids(), small.meminfo()["HardwareCorrupted"]
    n2 = len(small.read("kmsg").splitlines())
    small.step(100)
    soft = [ln for ln in small.read("kmsg").splitlines()[n2:] if "soft offline: " in ln]
    assert len(soft) == 3, soft
    assert small.pids() == pids, "soft offlining kills nobody"
    assert small.pctl(keeper, f"verify {b:#x} 32M seed=4") == "0", "migrated pages keep their values"
    poisoned = [ln for ln in soft if re.search(r": (page migrated to 0x[0-9a-f]+|free page isolated)$", ln)]
    assert small.meminfo()["HardwareCorrupted"] == hc + 4 * len(poisoned)
    small.ctl("hwpoison rate=0")


def test_kpageflags_marks_poisoned_frames_hwpoison(small):
    pid, a = filled_process(small, "app", "64K", 1, 16)
    soft = pfns(small, pid, a, 1)[0]
    small.write(f"{D}/soft_offline_page", f"{soft << 12:#x}\n")
    free = int(small.ctl("palloc count=1"), 16)
    small.ctl(f"pfree {free:#x}")
    small.write(f"{D}/hard_offline_page", f"{free << 12:#x}\n")
    assert small.meminfo()["HardwareCorrupted"] == 8
    assert kpageflags(small, soft) & KPF_HWPOISON
    assert kpageflags(small, free) & KPF_HWPOISON


# ---------------------------------------------------------------------------
# iomem, zoneinfo and node meminfo through a whole life
# ---------------------------------------------------------------------------

def test_iomem_zoneinfo_and_node_meminfo_follow_every_change(small):
    ram = "100000000-107ffffff : System RAM\n"

    def check(total, free, iomem_has, normal, movable):
        mi, n = small.meminfo(), node0(small)
        assert (mi["MemTotal"], mi["MemFree"]) == (total, free)
        assert (n["MemTotal"], n["MemFree"], n["MemUsed"]) == (total, free, total - free)
        assert zones_free_kb(small) == free
        assert (ram in small.read("iomem")) == iomem_has
        for z, want in (("Normal", normal), ("Movable", movable)):
            zz = zone(small, z)
            assert (zz["present"], zz["managed"], zz["spanned"]) == (want, want, want), z
        lines = small.read("buddyinfo")
        assert ("zone   Normal" in lines) == bool(normal)
        assert ("zone  Movable" in lines) == bool(movable)

    check(55300, 55300, False, 0, 0)
    small.write(f"{D}/probe", "0x100000000\n")
    check(55300, 53252, True, 0, 0)
    small.write(f"{D}/memory32/state", "online_movable\n")
    check(186372, 184324, True, 0, 32768)
    small.write(f"{D}/memory32/state", "offline\n")
    check(55300, 53252, True, 0, 0)
    small.write(f"{D}/memory32/state", "online_kernel\n")
    check(186372, 184324, True, 32768, 0)
    small.write(f"{D}/memory32/online", "0\n")
    check(55300, 53252, True, 0, 0)
    assert small.ctl("dimm add 128M online=online_movable") == "0"
    assert "108000000-10fffffff : System RAM\n" in small.read("iomem")
    check(186372, 53252 - 2048 + 131072, True, 0, 32768)
    assert small.ctl("dimm remove 0") == "0"
    assert "108000000-" not in small.read("iomem")
    check(55300, 53252, True, 0, 0)
    assert small.read("sys/vm/min_free_kbytes") == "940\n"


# ---------------------------------------------------------------------------
# where memfs once differed from Linux
# ---------------------------------------------------------------------------

def test_a_probe_past_the_physical_address_space_is_refused_and_changes_nothing(small):
    """x86-64 with 4-level paging addresses 2^46 bytes (MAX_PHYSMEM_BITS 46): Linux's
    mhp_range_allowed refuses [64 TiB, +128M) with E2BIG."""
    mi0 = small.meminfo()
    assert small.write_errno(f"{D}/probe", "0x400000000000\n") == errno.E2BIG
    assert small.meminfo() == mi0
    assert memory_blocks(small) == ["memory0"]


def test_kpageflags_reports_nopage_for_an_offline_block(small):
    small.write(f"{D}/probe", "0x100000000\n")
    assert kpageflags(small, 0x4000) == KPF_NOPAGE, "a hole between boot RAM and the block"
    assert kpageflags(small, 0x100000) == KPF_NOPAGE
    assert kpageflags(small, 0x107FFF) == KPF_NOPAGE


def test_no_unmovable_frame_is_ever_taken_from_movable(small):
    small.write(f"{D}/auto_online_blocks", "online_movable\n")
    small.write(f"{D}/probe", "0x100000000\n")
    code, _ = small.rejected("palloc zone=Movable count=1")
    assert code in (errno.EINVAL, errno.ENOMEM)
    small.write(f"{D}/memory32/state", "offline\n")
    assert small.meminfo()["MemTotal"] == MEMTOTAL_KB


def test_the_node_directory_links_its_memory_blocks(small):
    small.write(f"{D}/probe", "0x100000000\n")
    node = small / "devices/system/node/node0"
    assert os.readlink(node / "memory0") == "../../memory/memory0"
    assert os.readlink(node / "memory32") == "../../memory/memory32"


def test_offlining_a_page_that_is_not_online_ram_gives_the_linux_errnos(small):
    small.write(f"{D}/probe", "0x100000000\n")
    assert small.write_errno(f"{D}/hard_offline_page", "0xc0000000\n") == errno.ENXIO
    assert small.write_errno(f"{D}/hard_offline_page", "0x100000000\n") == errno.ENXIO
    assert small.write_errno(f"{D}/soft_offline_page", "0xc0000000\n") == errno.ENXIO
    assert small.write_errno(f"{D}/soft_offline_page", "0x100000000\n") == errno.EIO
    assert small.meminfo()["HardwareCorrupted"] == 0
