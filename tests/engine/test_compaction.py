"""Compaction on the small machine (zones DMA 0-16 MiB and DMA32 16-64 MiB, one node).

A process writes 40 MiB and gives every other page back (MADV_DONTNEED):
free memory is then mostly single pages between pages in use, and DMA32 has
no free block of 2 MiB (order 9) or more. Compaction moves the pages in use
towards the top of each zone and leaves their old frames free at the bottom,
where they merge: afterwards DMA32 has free blocks of order 9 and up, MemFree
is what it was (pages move, none is freed or taken), and every page the
process kept reads its value.
"""
from __future__ import annotations

import pytest

from engine.reclaim.compaction import fragmentation_score, node_score
from vmm_common import MIB, PAGE, RW

AREA = 40 * MIB


def zone(m, name):
    return next(z for z in m.zones if z.name == name and z.managed_pages)


def big_free(z) -> int:
    """Free blocks of order 9 and 10 in the zone."""
    return sum(z.free_blocks_by_order()[9:])


@pytest.fixture
def fragmented(small):
    m = small
    m.sysctl_write("compaction_proactiveness", "0")      # kcompactd off: we compact by hand
    pid = m.tasks.spawn("holes")
    a = m.tasks.mmap(pid, AREA, prot=RW)
    m.tasks.fill(pid, a, AREA, seed=9)
    for k in range(0, AREA // PAGE, 2):
        m.tasks.madvise(pid, a + k * PAGE, PAGE, "dontneed")
    return m, pid, a


def kept_intact(m, pid, a) -> bool:
    """Every odd page still holds its fill value (even pages were given back: zero)."""
    from engine.vmm.vmm import fill_values
    want = fill_values(a, AREA // PAGE, 9)
    return all(m.tasks.read(pid, a + k * PAGE) == int(want[k]) for k in range(1, AREA // PAGE, 2))


def test_compact_memory_builds_free_2mib_blocks_and_loses_nothing(fragmented, invariants):
    m, pid, a = fragmented
    dma32 = zone(m, "DMA32")
    assert big_free(dma32) == 0, "fragmented: no free 2 MiB block in DMA32"
    free_before = m.meminfo().free
    m.sysctl_write("compact_memory", "1")
    assert big_free(dma32) >= 1
    assert m.meminfo().free == free_before
    ev = {k: v for k, v in m.vmstat()}
    assert ev["pgmigrate_success"] > 0 and ev["compact_success"] >= 1
    assert ev["compact_migrate_scanned"] > 0 and ev["compact_free_scanned"] > 0
    assert ev["compact_isolated"] >= 2 * ev["pgmigrate_success"], \
        "each page moved was isolated by the migrate scanner and its target by the free scanner"
    assert "compact_memory:" in m.kmsg_lines()[-1]
    invariants(m)
    assert kept_intact(m, pid, a)


def test_compaction_lowers_the_fragmentation_score(fragmented):
    m, pid, a = fragmented
    dma32 = zone(m, "DMA32")
    before = fragmentation_score(dma32)
    assert before >= 90, "almost all free memory in small blocks"
    m.sysctl_write("compact_memory", "1")
    assert fragmentation_score(dma32) < before


def test_kcompactd_compacts_a_node_above_its_proactiveness_mark(fragmented, invariants):
    """With compaction_proactiveness 100 the marks are 0 (low) and 10 (high): kcompactd, every
    500 ms (50 ticks), compacts a node scoring above 10, at most 4096 pages a run."""
    m, pid, a = fragmented
    zones = [z for z in m.node_zones[0] if z.managed_pages]
    assert node_score(zones) > 10
    m.sysctl_write("compaction_proactiveness", "100")
    m.step(100)
    ev = dict(m.vmstat())
    assert ev["compact_daemon_wake"] >= 1
    assert ev["compact_daemon_migrate_scanned"] > 0
    assert big_free(zone(m, "DMA32")) >= 1
    invariants(m)
    assert kept_intact(m, pid, a)


def test_proactiveness_0_leaves_kcompactd_asleep(fragmented):
    m, pid, a = fragmented
    m.step(200)
    assert dict(m.vmstat())["compact_daemon_wake"] == 0
    assert big_free(zone(m, "DMA32")) == 0


def test_compact_memory_takes_only_1(small):
    from engine.errors import InvalidArgument
    for bad in ("0", "2", "x"):
        with pytest.raises(InvalidArgument):
            small.sysctl_write("compact_memory", bad)
    assert dict(small.vmstat())["compact_success"] == 0
