"""check_invariants on virtual memory: holds on busy machines, catches each kind of corruption.

Each corruption is made by hand on a small machine running a program with
anonymous, file and shared memory in use (busy()), then the checker must
name what broke. It must also leave the machine exactly as it found it.
"""
from array import array

import numpy as np
import pytest

from engine.errors import InternalError
from engine.pmm.frames import PageType
from engine.stats import PageStat
from engine.vmm import pte as P
from engine.vmm.files import NO_FRAME
from engine.vmm.vma import VM_READ
from vmm_common import PAGE, RW


def broken(invariants, m, *words):
    """Assert that check_invariants fails and that its message contains every word."""
    with pytest.raises(InternalError) as info:
        invariants(m)
    msg = str(info.value)
    for w in words:
        assert w in msg, f"expected {w!r} in the message, got {msg!r}"


def busy(m):
    """A program with private, zero-page, file, shared and PROT_NONE memory, and a forked child."""
    m.tasks.create_file("/data", 8 * PAGE)
    pid = m.tasks.spawn("a")
    a = m.tasks.mmap(pid, 8 * PAGE, prot=RW)
    m.tasks.fill(pid, a, 4 * PAGE, seed=1)
    m.tasks.read(pid, a + 4 * PAGE)                      # the zero page
    f = m.tasks.mmap(pid, 8 * PAGE, prot=RW, shared=True, file="/data")
    m.tasks.write(pid, f, 5)
    m.tasks.read(pid, f + PAGE)
    s = m.tasks.mmap(pid, 2 * PAGE, prot=RW, shared=True)
    m.tasks.write(pid, s, 6)
    n = m.tasks.mmap(pid, PAGE, prot=RW)
    m.tasks.write(pid, n, 7)
    m.tasks.mprotect(pid, n, PAGE, 0)
    child = m.tasks.fork(pid)
    return dict(pid=pid, child=child, anon=a, file=f, shm=s, none=n)


def leaf(m, pid, va):
    """(table, index) of the PTE for va."""
    mm = m.tasks.procs[pid].mm
    return m.vmm.leaf(mm, va), (va >> 12) & 511


def pfn_at(m, pid, va):
    t, i = leaf(m, pid, va)
    return P.pfn_of(t[i])


def state(m):
    """Everything the checker reads, copied."""
    ft = m.ft
    return (bytes(ft.flags), bytes(ft.content), bytes(ft.mapcount), bytes(ft.rmap),
            {k: bytes(v) for k, v in m.vmm.tables.items()}, [bytes(g) for g in m.vmm.gauges],
            m.vmm.committed, [(p.pid, p.mm and (p.mm.rss, p.mm.pt_pages, p.mm.committed,
                                                [(v.start, v.end, v.flags) for v in p.mm.vmas]))
                              for p in m.tasks.procs.values()],
            [(f.ino, f.cache.tobytes(), f.nr_cached, f.nr_dirty, f.maps) for f in m.vmm.inodes.values()],
            [(z.free_pages, list(z.nr_free)) for z in m.zones])


# ---------------------------------------------------------------------------
# healthy machines pass, and the checker changes nothing
# ---------------------------------------------------------------------------

def test_busy_small_machine_passes_and_the_checker_is_read_only(small, invariants):
    busy(small)
    before = state(small)
    invariants(small)
    assert state(small) == before


def test_busy_two_node_machine_passes(default, invariants):
    pids = [default.tasks.spawn(f"p{k}") for k in range(4)]      # cpus 0 and 1: both nodes
    assert {default.tasks.procs[p].node for p in pids} == {0, 1}
    for p in pids:
        a = default.tasks.mmap(p, 4 << 20, prot=RW)
        default.tasks.fill(p, a, 4 << 20, seed=p)
        default.tasks.fork(p)
    invariants(default)
    for p in pids:
        default.tasks.exit(p)
    invariants(default)


# ---------------------------------------------------------------------------
# page tables
# ---------------------------------------------------------------------------

def test_leaked_page_table_frame_is_caught(small, invariants):
    busy(small)
    (pfn, _), = small.palloc(count=1)
    small.ft.flags[pfn] = PageType.PAGETABLE
    broken(invariants, small, f"{pfn:#x}", "PAGETABLE", "leaked")


def test_table_nobody_reaches_in_vmm_tables_is_caught(small, invariants):
    busy(small)
    (pfn, _), = small.palloc(count=1)
    small.vmm.tables[pfn] = array("Q", bytes(4096))
    broken(invariants, small, "vmm.tables", f"{pfn:#x}", "no process")


def test_table_shared_by_two_address_spaces_is_caught(small, invariants):
    b = busy(small)
    parent = small.tasks.procs[b["pid"]].mm
    child = small.tasks.procs[b["child"]].mm
    small.vmm.tables[child.pgd][255] = small.vmm.tables[parent.pgd][255]
    broken(invariants, small, "reached twice")


def test_upper_entry_with_wrong_bits_is_caught(small, invariants):
    b = busy(small)
    pgd = small.vmm.tables[small.tasks.procs[b["pid"]].mm.pgd]
    pgd[255] &= ~P.RW
    broken(invariants, small, "PGD", "entry 255", "table pointer")


def test_pt_pages_that_disagrees_with_the_tables_is_caught(small, invariants):
    b = busy(small)
    small.tasks.procs[b["pid"]].mm.pt_pages += 1
    broken(invariants, small, f"pid {b['pid']}", "pt_pages says")


# ---------------------------------------------------------------------------
# entries against VMAs and frames
# ---------------------------------------------------------------------------

def test_entry_outside_every_vma_is_caught(small, invariants):
    b = busy(small)
    mm = small.tasks.procs[b["pid"]].mm
    mm.remove(mm.find(b["none"]))                    # the area goes, its entry stays
    broken(invariants, small, f"va {b['none']:#x}", "outside every VMA")


def test_zero_page_mapped_writable_is_caught(small, invariants):
    b = busy(small)
    t, i = leaf(small, b["pid"], b["anon"] + 4 * PAGE)
    t[i] |= P.RW
    broken(invariants, small, "zero page writable")


def test_zero_page_without_special_is_caught(small, invariants):
    b = busy(small)
    t, i = leaf(small, b["pid"], b["anon"] + 4 * PAGE)
    t[i] &= ~P.SPECIAL
    broken(invariants, small, "zero page without SPECIAL")


def test_writable_page_still_shared_after_fork_is_caught(small, invariants):
    b = busy(small)
    t, i = leaf(small, b["child"], b["anon"])
    t[i] |= P.RW
    broken(invariants, small, "copy-on-write broken")


def test_writable_entry_in_a_read_only_vma_is_caught(small, invariants):
    b = busy(small)
    small.tasks.mprotect(b["pid"], b["file"], PAGE, VM_READ)
    t, i = leaf(small, b["pid"], b["file"])
    t[i] |= P.RW
    broken(invariants, small, "writable in a VMA without VM_WRITE")


def test_protnone_entry_in_an_accessible_vma_is_caught(small, invariants):
    b = busy(small)
    small.tasks.procs[b["pid"]].mm.find(b["none"]).flags |= VM_READ
    broken(invariants, small, f"va {b['none']:#x}", "PROT_NONE entry in an accessible VMA")


def test_entry_mapping_a_kernel_frame_is_caught(small, invariants):
    b = busy(small)
    (pfn, _), = small.palloc(count=1)
    t, i = leaf(small, b["pid"], b["anon"] + 5 * PAGE)
    t[i] = (pfn << 12) | P.P | P.US | P.NX
    broken(invariants, small, f"{pfn:#x}", "KERNEL", "not a user page")


def test_file_entry_mapping_the_wrong_cache_page_is_caught(small, invariants):
    b = busy(small)
    t, i = leaf(small, b["pid"], b["file"])
    other = pfn_at(small, b["pid"], b["file"] + PAGE)
    t[i] = (t[i] & ~P.PFN_MASK) | (other << 12)
    broken(invariants, small, "page 0 of /data is cached in")


def test_anon_frame_with_a_wrong_owner_is_caught(small, invariants):
    b = busy(small)
    pfn = pfn_at(small, b["pid"], b["anon"])
    small.ft.rmap[pfn] += 1
    broken(invariants, small, f"ANON pfn {pfn:#x}", "rmap")


def test_rss_that_disagrees_with_the_entries_is_caught(small, invariants):
    b = busy(small)
    small.tasks.procs[b["child"]].mm.rss_shmem -= 1
    broken(invariants, small, f"pid {b['child']}", "rss_shmem says")


def test_mapcount_that_disagrees_with_the_entries_is_caught(small, invariants):
    b = busy(small)
    pfn = pfn_at(small, b["pid"], b["anon"] + PAGE)
    small.ft.mapcount[pfn] += 1
    broken(invariants, small, f"pfn {pfn:#x}", "mapcount 3", "2 PTEs")


def test_anon_frame_nobody_maps_is_caught(small, invariants):
    busy(small)
    (pfn, _), = small.palloc(count=1)
    small.ft.flags[pfn] = PageType.ANON
    broken(invariants, small, f"{pfn:#x}", "leaked")


# ---------------------------------------------------------------------------
# page cache
# ---------------------------------------------------------------------------

def test_cached_frame_in_no_file_is_caught(small, invariants):
    b = busy(small)
    small.tasks.munmap(b["pid"], b["file"] + PAGE, PAGE)      # page 1: cached, mapped by no one
    f = small.vmm.files["/data"]
    pfn = int(f.cache[1])
    assert pfn != NO_FRAME
    f.cache[1] = NO_FRAME
    f.nr_cached -= 1
    broken(invariants, small, f"pfn {pfn:#x} is typed FILE", "leaked")


def test_mapped_file_page_missing_from_the_cache_is_caught(small, invariants):
    b = busy(small)
    f = small.vmm.files["/data"]
    f.cache[1] = NO_FRAME
    f.nr_cached -= 1
    broken(invariants, small, f"va {b['file'] + PAGE:#x}", "page 1 of /data is cached in no frame")


def test_nr_dirty_that_disagrees_with_the_frames_is_caught(small, invariants):
    busy(small)
    small.vmm.files["/data"].nr_dirty += 1
    broken(invariants, small, "/data", "nr_dirty says 2")


def test_maps_that_disagrees_with_the_vmas_is_caught(small, invariants):
    busy(small)
    small.vmm.files["/data"].maps += 1
    broken(invariants, small, "/data", "maps says 3", "2 VMAs")


def test_cache_slot_holding_an_anon_frame_is_caught(small, invariants):
    b = busy(small)
    f = small.vmm.files["/data"]
    f.cache[7] = pfn_at(small, b["pid"], b["anon"])
    f.nr_cached += 1
    broken(invariants, small, "/data", "page 7", "ANON", "expected FILE")


# ---------------------------------------------------------------------------
# counters: gauges, commit, owners
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("stat,words", [
    (PageStat.ANON, ("nr_anon_pages",)), (PageStat.FILE, ("nr_file_pages",)),
    (PageStat.SHMEM, ("nr_shmem",)), (PageStat.FILE_MAPPED, ("nr_mapped",)),
    (PageStat.PAGETABLE, ("nr_page_table_pages",)), (PageStat.FILE_DIRTY, ("nr_dirty",)),
    (PageStat.ACTIVE_ANON, ("anon LRU",)), (PageStat.INACTIVE_FILE, ("file LRU",)),
])
def test_gauge_that_disagrees_with_the_frames_is_caught(small, invariants, stat, words):
    busy(small)
    zid = next(z.zid for z in small.zones if z.name == "DMA32")
    small.vmm.gauges[zid][stat] += 1
    broken(invariants, small, "DMA32", *words)


def test_committed_as_that_disagrees_with_the_areas_is_caught(small, invariants):
    busy(small)
    small.vmm.committed += 1
    broken(invariants, small, "Committed_AS is")


def test_mm_committed_that_disagrees_with_its_areas_is_caught(small, invariants):
    b = busy(small)
    small.tasks.procs[b["pid"]].mm.committed -= 1
    small.vmm.committed -= 1
    broken(invariants, small, f"pid {b['pid']}", "VM_ACCOUNT")


def test_zero_page_that_is_not_a_kernel_frame_is_caught(small, invariants):
    (pfn, _), = small.palloc(count=1)
    small.vmm.zero_pfn = pfn
    broken(invariants, small, f"zero page {pfn:#x}", "RESERVED")


def test_reserved_frame_outside_the_boot_reservations_is_caught(small, invariants):
    (pfn, _), = small.palloc(count=1)
    small.ft.flags[pfn] = PageType.RESERVED
    broken(invariants, small, f"{pfn:#x}", "RESERVED", "no boot reservation")


def test_managed_pages_that_disagree_with_the_reservations_are_caught(small, invariants):
    next(z for z in small.zones if z.name == "DMA").managed_pages += 1
    broken(invariants, small, "DMA", "managed_pages")


def test_shared_memory_object_without_mappings_is_caught(small, invariants):
    b = busy(small)
    f = small.tasks.procs[b["pid"]].mm.find(b["shm"]).file
    for pid in (b["pid"], b["child"]):
        mm = small.tasks.procs[pid].mm
        v = mm.find(b["shm"])
        small.vmm.zap(mm, v.start, v.end)
        mm.remove(v)
    f.maps = 0
    broken(invariants, small, "/dev/zero", "outlived its last mapping")


def test_gauges_sum_per_zone_on_both_nodes(default, invariants):
    pid = default.tasks.spawn("a")
    other = default.tasks.spawn("b")
    for p in (pid, other):
        a = default.tasks.mmap(p, 64 * PAGE, prot=RW)
        default.tasks.fill(p, a, 64 * PAGE, seed=0)
    zones = [z for z in default.zones if default.vmm.gauges[z.zid][PageStat.ANON]]
    assert {z.node_id for z in zones} == {0, 1}
    invariants(default)
    anon = np.array([default.vmm.gauges[z.zid][PageStat.ANON] for z in default.zones])
    assert int(anon.sum()) == default.meminfo().anon_pages == 2 * 65
