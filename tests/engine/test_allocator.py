"""engine/pmm/allocator.py through Machine.palloc: constrained and contiguous requests,
watermarks with lowmem protection, all-or-nothing counts.

The small machine's zones, by hand (see test_boot.py):
  DMA   zone index 0, pfn 0x1-0x1000,    managed 3840
  DMA32 zone index 1, pfn 0x1000-0x4000, managed 9985
so DMA's protection against DMA32 and Normal requests is 9985 // 256 = 39
pages, and DMA32's is 0 (no Normal zone). A request with no zone may use
DMA32 then DMA; `zone=` pins one zone; `below=` drops zones that start at
or above it, and the highest zone left sets which protection applies.
"""
import errno

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Machine, load
from engine.errors import InvalidArgument, OutOfMemory
from engine.invariants import check_invariants
from engine.pmm.frames import TYPE_MASK, PageType
from memfs.machines import builtin

K, M = 1 << 10, 1 << 20
FREE, KERNEL = int(PageType.FREE), int(PageType.KERNEL)

# name: (zone index, first pfn, end pfn), in the fallback order of a request with no zone
SMALL_ZONES = {"DMA32": (1, 0x1000, 0x4000), "DMA": (0, 0x1, 0x1000)}
DMA_PROTECTION = 9985 // 256                    # 39


def fresh_small() -> Machine:
    return Machine(load(builtin("small")), paused=True)


def zone(m, name, node=0):
    return next(z for z in m.zones if z.name == name and z.node_id == node)


def snapshot(m):
    """Everything a rejected command must leave as it was."""
    return (m.meminfo(), m.zoneinfo(), bytes(m.ft.flags), bytes(m.ft.content), bytes(m.ft.pb_mt),
            tuple(tuple(z.free_blocks_by_order()) for z in m.zones))


def assert_unchanged(m, before, what):
    after = snapshot(m)
    names = ("meminfo", "zoneinfo", "frame flags", "frame content", "pageblock types", "buddy free counts")
    for name, a, b in zip(names, before, after):
        assert a == b, f"{what} changed the {name}"


def run_frames(runs):
    return np.concatenate([np.arange(s, s + n) for s, n in runs])


# ---------------------------------------------------------------------------
# an independent model of the constrained allocator, for the small machine
# ---------------------------------------------------------------------------

def protection(zone_idx: int, highest: int) -> int:
    return DMA_PROTECTION if zone_idx == 0 and highest > 0 else 0


def eligible(zone_name, below_pfn):
    """Zones (name, idx, start, end) a request may use, in order, and its highest zone index."""
    names = [zone_name] if zone_name else list(SMALL_ZONES)
    highest = SMALL_ZONES[zone_name][0] if zone_name else 2
    zones = [(n, *SMALL_ZONES[n]) for n in names]
    if below_pfn is not None:
        zones = [z for z in zones if z[2] < below_pfn]
        if zones:
            highest = max(z[1] for z in zones)
    return zones, highest


def lowest_run(types, start, end, count, align, boundary):
    """The lowest start in [start, end) of count free frames, aligned, not crossing boundary."""
    s = -(-start // align) * align
    while s + count <= end:
        if (boundary is None or s // boundary == (s + count - 1) // boundary) \
                and (types[s:s + count] == FREE).all():
            return s
        s += align
    return None


def expected_outcome(m, count, zone_name, below, align, boundary, node=None):
    """('EINVAL', None) / ('ENOMEM', None) / ('ok', (zone name, first pfn))."""
    if boundary is not None and count * 4 * K > boundary or node not in (None, 0):
        return "EINVAL", None
    below_pfn = None if below is None else below // (4 * K)
    zones, highest = eligible(zone_name, below_pfn)
    if not zones:
        return "EINVAL", None
    types = m.ft.flags_np() & TYPE_MASK
    align_pages = (align or 4 * K) // (4 * K)
    boundary_pages = None if boundary is None else boundary // (4 * K)
    for name, idx, start, end in zones:
        z = zone(m, name)
        if z.free_pages - count < z.wmark_min + protection(idx, highest):
            continue
        hi = end if below_pfn is None else min(end, below_pfn)
        s = lowest_run(types, start, hi, count, align_pages, boundary_pages)
        if s is not None:
            return "ok", (name, s)
    return "ENOMEM", None


def check_granted(m, runs, types_before, zone_name, count, below, align, boundary):
    assert len(runs) == 1 and runs[0][1] == count, f"expected one run of {count}, got {runs}"
    start = runs[0][0]
    pfns = np.arange(start, start + count)
    assert (types_before[pfns] == FREE).all(), f"run {start:#x}+{count} was not all free before"
    if below is not None:
        assert (start + count) * 4 * K <= below, f"run {start:#x}+{count} is not below {below:#x}"
    if align is not None:
        assert (start * 4 * K) % align == 0, f"run start {start:#x} is not {align:#x}-aligned"
    if boundary is not None:
        first, last = start * 4 * K // boundary, ((start + count) * 4 * K - 1) // boundary
        assert first == last, f"run {start:#x}+{count} crosses a {boundary:#x} boundary"
    if zone_name is not None:
        _, lo, hi = SMALL_ZONES[zone_name]
        assert lo <= start and start + count <= hi, f"run {start:#x}+{count} is outside {zone_name}"
    flags = m.ft.flags_np()[pfns]
    assert (flags == KERNEL).all(), f"expected every frame KERNEL, got flags {np.unique(flags)}"
    content = m.ft.content_np()[pfns]
    assert not content.any(), f"expected content 0, got {content[content != 0][:4]}"


# ---------------------------------------------------------------------------
# the property test
# ---------------------------------------------------------------------------

pow2_bytes = lambda lo, hi: st.integers(lo, hi).map(lambda k: 1 << k)   # noqa: E731

requests = st.fixed_dictionaries({
    "count": st.one_of(st.integers(1, 64), st.sampled_from([255, 512, 1024, 3000, 9000])),
    "zone": st.sampled_from([None, "DMA", "DMA32"]),
    "below": st.one_of(st.none(), st.sampled_from([16 * M, 24 * M, 40 * M, 64 * M, 1 << 32]),
                       st.integers(4 * K, 70 * M)),
    "align": st.one_of(st.none(), pow2_bytes(12, 23)),
    "boundary": st.one_of(st.none(), pow2_bytes(12, 24)),
    "node": st.sampled_from([None, None, 0, 1]),          # the small machine has node 0 only
})

histories = st.lists(st.tuples(st.sampled_from(["pages", "contig", "below"]), st.integers(1, 700),
                               st.booleans()), max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories, min_free_kbytes=st.sampled_from([None, 128, 20000, 45000]), req=requests)
def test_constrained_palloc_honours_every_constraint_or_fails_cleanly(history, min_free_kbytes, req):
    m = fresh_small()
    if min_free_kbytes is not None:
        m.sysctl_write("min_free_kbytes", str(min_free_kbytes))
    for kind, n, keep in history:                 # fragment the machine a little first
        try:
            runs = {"pages": lambda: m.palloc(count=n),
                    "contig": lambda: m.palloc(count=n, contiguous=True),
                    "below": lambda: m.palloc(count=n, below=16 * M)}[kind]()
        except OutOfMemory:
            continue
        if not keep:
            m.pfree(runs[::2])
    check_invariants(m)

    want, where = expected_outcome(m, req["count"], req["zone"], req["below"], req["align"], req["boundary"],
                                   req["node"])
    before = snapshot(m)
    types_before = (m.ft.flags_np() & TYPE_MASK).copy()
    free_before = {n: zone(m, n).free_pages for n in SMALL_ZONES}
    try:
        runs = m.palloc(contiguous=True, **req)
    except InvalidArgument as e:
        assert want == "EINVAL", f"expected {want} {where}, got EINVAL: {e}"
        assert e.errno == errno.EINVAL
        assert_unchanged(m, before, "a rejected palloc")
        return
    except OutOfMemory as e:
        assert want == "ENOMEM", f"expected {want} {where}, got ENOMEM: {e}"
        assert e.errno == errno.ENOMEM
        assert_unchanged(m, before, "a failed palloc")
        return
    assert want == "ok", f"expected {want}, got the run {runs}"
    check_granted(m, runs, types_before, req["zone"], req["count"], req["below"], req["align"], req["boundary"])
    name, start = where
    assert runs[0][0] == start, f"expected the lowest fitting run, at {start:#x} in {name}, got {runs[0][0]:#x}"
    got_free = {n: zone(m, n).free_pages for n in SMALL_ZONES}
    expected_free = dict(free_before, **{name: free_before[name] - req["count"]})
    assert got_free == expected_free, f"expected free pages {expected_free}, got {got_free}"
    check_invariants(m)


# ---------------------------------------------------------------------------
# named cases
# ---------------------------------------------------------------------------

def test_isa_worst_case_16_contiguous_below_16m_within_64k_succeeds(small, invariants):
    types_before = (small.ft.flags_np() & TYPE_MASK).copy()
    runs = small.palloc(count=16, contiguous=True, below=16 * M, boundary=64 * K)
    check_granted(small, runs, types_before, "DMA", 16, 16 * M, None, 64 * K)
    start = runs[0][0]
    assert start % 16 == 0, f"a 64K buffer inside one 64K window starts on it: got {start:#x}"
    invariants(small)


def test_isa_worst_case_on_the_default_machine(default, invariants):
    types_before = (default.ft.flags_np() & TYPE_MASK).copy()
    runs = default.palloc(count=16, contiguous=True, below=16 * M, boundary=64 * K, align=64 * K)
    start = runs[0][0]
    assert (types_before[start:start + 16] == FREE).all() and start + 16 <= 0x1000 and start % 16 == 0, \
        f"expected an aligned free 64K run below 16M, got {start:#x}"
    invariants(default)


def test_palloc_below_16m_never_returns_a_frame_above_it(small, invariants):
    runs = small.palloc(count=500, below=16 * M)
    pfns = run_frames(runs)
    assert pfns.size == 500 and pfns.max() < 0x1000, f"expected 500 frames below pfn 0x1000, got max {pfns.max():#x}"
    assert (small.ft.flags_np()[pfns] == KERNEL).all()
    invariants(small)


def test_palloc_below_an_unaligned_address_keeps_whole_frames_below_it(small, invariants):
    below = 0x101000 + 0x80                      # frame 0x100 lies wholly below, frame 0x101 does not
    before = snapshot(small)
    with pytest.raises(OutOfMemory):
        small.palloc(count=2, contiguous=True, below=below)
    assert_unchanged(small, before, "palloc count=2 below=0x101080")
    runs = small.palloc(count=1, below=below)
    assert runs == [(0x100, 1)], f"expected the lowest free frame 0x100 alone, got {runs}"
    invariants(small)


def test_boundary_smaller_than_the_buffer_is_einval_and_changes_nothing(small, invariants):
    before = snapshot(small)
    with pytest.raises(InvalidArgument) as info:
        small.palloc(count=17, contiguous=True, boundary=64 * K)
    assert info.value.errno == errno.EINVAL
    assert_unchanged(small, before, "palloc count=17 boundary=64K")
    invariants(small)


def test_count_beyond_free_memory_is_enomem_and_changes_nothing(small, invariants):
    small.palloc(count=10)
    before = snapshot(small)
    total = small.meminfo().free
    for kwargs in ({"count": total + 1}, {"count": total, "contiguous": True},
                   {"count": total + 1, "below": 64 * M}, {"count": 4000, "zone": "DMA"}):
        with pytest.raises(OutOfMemory) as info:
            small.palloc(**kwargs)
        assert info.value.errno == errno.ENOMEM, f"{kwargs}: expected ENOMEM, got {info.value.errno}"
        assert_unchanged(small, before, f"palloc {kwargs}")
    invariants(small)


@pytest.mark.parametrize("kwargs, why", [
    ({"count": 0}, "count below 1"),
    ({"count": 2, "align": 8 * K}, "align without contiguous"),
    ({"count": 2, "boundary": 64 * K}, "boundary without contiguous"),
    ({"align": 3 * K, "contiguous": True}, "align not a power of two"),
    ({"align": 2 * K, "contiguous": True}, "align below a page"),
    ({"boundary": 96 * K, "contiguous": True}, "boundary not a power of two"),
    ({"below": 100}, "below leaves no frame"),
    ({"zone": "HighMem"}, "unknown zone"),
    ({"node": 1}, "no such node"),
    ({"zone": "Normal"}, "a zone this machine lacks"),
    ({"zone": "DMA32", "below": 16 * M}, "no DMA32 frame lies below 16M"),
])
def test_impossible_palloc_is_einval_and_changes_nothing(small, invariants, kwargs, why):
    before = snapshot(small)
    with pytest.raises(InvalidArgument) as info:
        small.palloc(**kwargs)
    assert info.value.errno == errno.EINVAL, f"{why}: expected EINVAL, got {info.value.errno}"
    assert_unchanged(small, before, f"palloc {kwargs} ({why})")
    invariants(small)


def test_contiguous_run_honours_alignment_of_4m(small, invariants):
    runs = small.palloc(count=3, contiguous=True, align=4 * M)
    assert (runs[0][0] * 4 * K) % (4 * M) == 0, f"expected a 4M-aligned start, got {runs[0][0]:#x}"
    invariants(small)


def test_contiguous_run_in_a_zone_stays_in_that_zone(small, invariants):
    for name, (_, lo, hi) in SMALL_ZONES.items():
        (start, n), = small.palloc(count=700, contiguous=True, zone=name)
        assert lo <= start and start + n <= hi, f"expected {name} frames, got {start:#x}+{n}"
    invariants(small)


# ---------------------------------------------------------------------------
# watermarks and protection
# ---------------------------------------------------------------------------

def available(m, names, highest):
    """Pages the zones give before reaching min + protection, by the zoneinfo formula."""
    return sum(max(0, zone(m, n).free_pages - zone(m, n).wmark_min - protection(SMALL_ZONES[n][0], highest))
               for n in names)


def test_palloc_takes_exactly_down_to_min_plus_protection_then_fails(small, invariants):
    dma, dma32 = zone(small, "DMA"), zone(small, "DMA32")
    n = available(small, ["DMA", "DMA32"], 2)
    small.palloc(count=n)
    assert dma32.free_pages == dma32.wmark_min, f"expected DMA32 at min {dma32.wmark_min}, got {dma32.free_pages}"
    assert dma.free_pages == dma.wmark_min + DMA_PROTECTION, \
        f"expected DMA at min + protection = {dma.wmark_min + DMA_PROTECTION}, got {dma.free_pages}"
    before = snapshot(small)
    with pytest.raises(OutOfMemory):
        small.palloc(count=1)
    with pytest.raises(OutOfMemory):
        small.palloc(count=1, contiguous=True)
    assert_unchanged(small, before, "palloc past min + protection")
    invariants(small)


def test_protection_does_not_apply_to_requests_for_the_dma_zone_itself(small, invariants):
    dma = zone(small, "DMA")
    small.palloc(count=available(small, ["DMA", "DMA32"], 2))
    small.palloc(count=DMA_PROTECTION, zone="DMA")          # below the Normal protection, above min
    assert dma.free_pages == dma.wmark_min, f"expected DMA at min {dma.wmark_min}, got {dma.free_pages}"
    with pytest.raises(OutOfMemory):
        small.palloc(count=1, zone="DMA")
    invariants(small)


def test_palloc_count_is_all_or_nothing(small, invariants):
    n = available(small, ["DMA", "DMA32"], 2)
    before = snapshot(small)
    with pytest.raises(OutOfMemory):
        small.palloc(count=n + 1)
    assert_unchanged(small, before, f"palloc count={n + 1}")
    runs = small.palloc(count=n)
    assert run_frames(runs).size == n
    invariants(small)


def test_palloc_can_take_every_available_page_after_frees_parked_on_per_cpu_stacks(small, invariants):
    # Freed frames wait on the per-cpu stack of their pageblock's migrate type;
    # an allocation that runs the buddy lists dry must still reach them.
    runs = small.palloc(count=200, contiguous=True)
    small.pfree(runs)
    n = available(small, ["DMA", "DMA32"], 2)
    runs = small.palloc(count=n)
    assert run_frames(runs).size == n, f"expected {n} frames"
    assert zone(small, "DMA32").free_pages == zone(small, "DMA32").wmark_min
    invariants(small)


def test_palloc_below_counts_only_frames_above_the_watermarks(small, invariants):
    dma = zone(small, "DMA")
    n = dma.free_pages - dma.wmark_min              # below=16M leaves DMA alone: protection 0
    before = snapshot(small)
    with pytest.raises(OutOfMemory):
        small.palloc(count=n + 1, below=16 * M)
    assert_unchanged(small, before, "palloc below=16M past min")
    pfns = run_frames(small.palloc(count=n, below=16 * M))
    assert pfns.size == n and pfns.max() < 0x1000
    assert dma.free_pages == dma.wmark_min
    invariants(small)


def test_request_spills_to_the_other_node_before_dipping_below_low(machine_from_yaml, builtin_yaml, invariants):
    text = builtin_yaml("small").replace("cpus: 1", "cpus: 2").replace(
        "    - {id: 0, start: 0, end: 64M, cpus: [0]}",
        "    - {id: 0, start: 0, end: 32M, cpus: [0]}\n    - {id: 1, start: 32M, end: 64M, cpus: [1]}")
    m = machine_from_yaml(text)
    # The first pass keeps every zone of every node above its low watermark, so the
    # request spills to node 1 as soon as node 0 is down to low (+ protection).
    n0 = sum(max(0, z.free_pages - z.wmark_low - z.lowmem_reserve[2]) for z in m.node_zones[0])
    pfns = run_frames(m.palloc(count=n0 + 10))
    on_node1 = int(np.count_nonzero(pfns >= 0x2000))
    assert on_node1 == 10, f"expected the last 10 frames from node 1 (pfn >= 0x2000), got {on_node1}"
    low0 = [(z.free_pages, z.wmark_low + z.lowmem_reserve[2]) for z in m.node_zones[0] if z.managed_pages]
    assert all(free == mark for free, mark in low0), f"expected node 0 zones at low + protection, got {low0}"
    pinned = run_frames(m.palloc(count=5, node=1))
    assert (pinned >= 0x2000).all(), f"expected node 1 frames, got {pinned}"
    invariants(m)
