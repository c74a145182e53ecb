"""engine/devices/iomem.py through Machine.place_bar: BAR placement in the PCI windows.

PCI windows (from the YAML): both machines have the legacy VGA window
0xa0000-0xc0000, filled by the Video RAM area, and the 32-bit hole
0xc0000000-0xfec00000 (1004 MiB); the default machine adds a 64-bit window
of 32G at 0x800000000.
"""
import errno

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Machine, load
from engine.errors import InvalidArgument, OutOfMemory
from engine.invariants import check_invariants
from memfs.machines import builtin

K, M, G = 1 << 10, 1 << 20, 1 << 30
LOW_WINDOW = (0xC0000000, 0xFEC00000)
HIGH_WINDOW = (0x800000000, 0x800000000 + 32 * G)


def resources(m):
    return [r for _, r in m.physmap_rows()]


def assert_bar_placed_well(m, bar, size):
    assert bar.end - bar.start == size, f"expected a {size:#x}-byte BAR, got {bar.start:#x}-{bar.end:#x}"
    assert bar.start % size == 0, f"BAR at {bar.start:#x} is not aligned to its size {size:#x}"
    windows = [r for r in resources(m) if r.kind == "pci"]
    assert any(w.start <= bar.start and bar.end <= w.end for w in windows), \
        f"BAR {bar.start:#x}-{bar.end:#x} is in no PCI window"
    for r in resources(m):
        if (r.start, r.end, r.name) == (bar.start, bar.end, bar.name):
            continue
        if r.start < bar.end and bar.start < r.end:
            assert r.kind == "pci" and r.start <= bar.start and bar.end <= r.end, \
                f"BAR {bar.name} {bar.start:#x}-{bar.end:#x} overlaps {r.name} {r.start:#x}-{r.end:#x}"


def free_hole_exists(m, size, windows):
    """Is there a size-aligned hole of size bytes in one of windows that no other resource uses?"""
    for ws, we in windows:
        first = -(-ws // size)
        count = (we // size) - first
        if count <= 0:
            continue
        starts = (np.arange(count, dtype=np.uint64) + np.uint64(first)) * np.uint64(size)
        ok = starts + np.uint64(size) <= np.uint64(we)
        for r in resources(m):
            if r.kind == "pci" and r.start <= ws and we <= r.end:
                continue                                  # the window itself
            ok &= ~((starts < np.uint64(r.end)) & (np.uint64(r.start) < starts + np.uint64(size)))
        if ok.any():
            return True
    return False


@pytest.mark.parametrize("size", [4 * K, 64 * K, 1 * M, 16 * M, 256 * M])
def test_bar_is_naturally_aligned_in_a_window_and_overlaps_nothing(small, size, invariants):
    bar = small.place_bar(size)
    assert_bar_placed_well(small, bar, size)
    assert LOW_WINDOW[0] <= bar.start and bar.end <= LOW_WINDOW[1], f"expected the 32-bit window, got {bar.start:#x}"
    invariants(small)


def test_many_bars_of_mixed_sizes_never_overlap(default, invariants):
    bars = [default.place_bar(size) for size in (4 * K, 1 * M, 8 * K, 64 * M, 4 * K, 2 * M, 128 * M, 16 * K)]
    for size, bar in zip((4 * K, 1 * M, 8 * K, 64 * M, 4 * K, 2 * M, 128 * M, 16 * K), bars):
        assert_bar_placed_well(default, bar, size)
    invariants(default)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests=st.lists(st.tuples(st.integers(12, 30).map(lambda k: 1 << k), st.booleans()),
                         min_size=1, max_size=12))
def test_bar_sequence_places_or_refuses_exactly_when_a_hole_exists(requests):
    m = Machine(load(builtin("small")), paused=True)
    for size, wide in requests:
        hole = free_hole_exists(m, size, [LOW_WINDOW])
        before = m.iomem()
        try:
            bar = m.place_bar(size, wide=wide)
        except OutOfMemory as e:
            assert not hole, f"expected a {size:#x} BAR to fit, got ENOMEM: {e}"
            assert e.errno == errno.ENOMEM
            assert m.iomem() == before, "a refused BAR changed the map"
            continue
        assert hole, f"no {size:#x}-aligned hole existed, yet the BAR went to {bar.start:#x}"
        assert_bar_placed_well(m, bar, size)
    check_invariants(m)


@pytest.mark.parametrize("size", [0, 2 * K, 3 * M, 4097, 12 * K, 100 * M])
def test_bar_size_that_is_not_a_power_of_two_of_at_least_4k_is_einval(small, size, invariants):
    before = small.iomem()
    with pytest.raises(InvalidArgument) as info:
        small.place_bar(size)
    assert info.value.errno == errno.EINVAL
    assert small.iomem() == before, f"a rejected BAR of {size} bytes changed the map"
    invariants(small)


def test_exhausting_the_32bit_window_gives_enomem(small, invariants):
    per_window = (LOW_WINDOW[1] - LOW_WINDOW[0]) // (4 * M)          # 251
    bars = [small.place_bar(4 * M) for _ in range(per_window)]
    assert len({b.start for b in bars}) == per_window
    before = small.iomem()
    for size in (4 * M, 4 * K):
        with pytest.raises(OutOfMemory) as info:
            small.place_bar(size)
        assert info.value.errno == errno.ENOMEM
    assert small.iomem() == before, "a refused BAR changed the map"
    invariants(small)


def test_greedy_largest_first_fills_the_32bit_window_exactly(small, invariants):
    # 512M + 256M + 128M + 64M + 32M + 8M + 4M = 1004M; 16M no longer fits after 32M
    starts = {size: small.place_bar(size).start for size in (512 * M, 256 * M, 128 * M, 64 * M, 32 * M)}
    assert starts == {512 * M: 0xC0000000, 256 * M: 0xE0000000, 128 * M: 0xF0000000,
                      64 * M: 0xF8000000, 32 * M: 0xFC000000}, f"got {({hex(k): hex(v) for k, v in starts.items()})}"
    with pytest.raises(OutOfMemory):
        small.place_bar(16 * M)
    assert small.place_bar(8 * M).start == 0xFE000000
    assert small.place_bar(4 * M).start == 0xFE800000
    with pytest.raises(OutOfMemory):
        small.place_bar(4 * K)
    invariants(small)


def test_bar_larger_than_every_window_is_enomem(small, default, invariants):
    with pytest.raises(OutOfMemory):
        small.place_bar(2 * G)
    with pytest.raises(OutOfMemory):
        default.place_bar(64 * G, wide=True)
    invariants(small)
    invariants(default)


def test_64bit_bar_lands_above_4g_on_the_default_machine(default, invariants):
    for size in (4 * K, 1 * G, 16 * G):
        bar = default.place_bar(size, wide=True)
        assert bar.start >= 4 * G, f"expected a 64-bit BAR above 4G, got {bar.start:#x}"
        assert HIGH_WINDOW[0] <= bar.start and bar.end <= HIGH_WINDOW[1]
        assert "64bit" in bar.flags
        assert_bar_placed_well(default, bar, size)
    invariants(default)


def test_32bit_bar_stays_below_4g_on_the_default_machine(default, invariants):
    bar = default.place_bar(1 * G // 2)
    assert bar.end <= 4 * G, f"expected a 32-bit BAR below 4G, got {bar.start:#x}-{bar.end:#x}"
    assert_bar_placed_well(default, bar, G // 2)
    invariants(default)


def test_64bit_bar_falls_back_below_4g_when_the_high_window_is_full(default, invariants):
    default.place_bar(32 * G, wide=True)
    bar = default.place_bar(1 * M, wide=True)
    assert LOW_WINDOW[0] <= bar.start and bar.end <= LOW_WINDOW[1], f"expected the 32-bit window, got {bar.start:#x}"
    assert_bar_placed_well(default, bar, M)
    invariants(default)


def test_64bit_bar_on_a_machine_without_a_high_window_goes_below_4g(small, invariants):
    bar = small.place_bar(64 * M, wide=True)
    assert bar.end <= 4 * G
    assert_bar_placed_well(small, bar, 64 * M)
    invariants(small)


def test_bars_appear_in_iomem_under_their_window_named_by_slot(small, invariants):
    a = small.place_bar(1 * M)
    b = small.place_bar(1 * M, name="nvme0")
    c = small.place_bar(1 * M)
    assert (a.name, b.name, c.name) == ("0000:00:03.0", "nvme0", "0000:00:04.0")
    rows = small.iomem()
    window = next(i for i, (d, s, e, n) in enumerate(rows) if (s, e + 1) == LOW_WINDOW)
    depth = rows[window][0]
    for bar in (a, b, c):
        row = (depth + 1, bar.start, bar.end - 1, bar.name)
        assert row in rows, f"expected iomem row {row}, got {rows}"
    starts = [s for d, s, e, n in rows if d == depth + 1 and LOW_WINDOW[0] <= s < LOW_WINDOW[1]]
    assert starts == sorted(starts), "BARs are listed in address order"
    invariants(small)


def test_prefetchable_bar_is_write_combining(small, invariants):
    bar = small.place_bar(1 * M, prefetch=True)
    assert bar.cache == "wc" and "prefetch" in bar.flags
    assert small.place_bar(1 * M).cache == "uc"
    invariants(small)


def test_placed_bar_is_logged_in_kmsg(small, invariants):
    bar = small.place_bar(1 * M, name="gpu")
    last = small.kmsg_lines()[-1]
    assert f"pci gpu: BAR 0 [mem {bar.start:#018x}-{bar.end - 1:#018x}]: assigned" in last, \
        f"expected the assignment in kmsg, got {last!r}"
    invariants(small)


def test_legacy_vga_window_is_never_used(small, invariants):
    bar = small.place_bar(4 * K)
    assert bar.start >= LOW_WINDOW[0], f"expected the VGA window (held by Video RAM) skipped, got {bar.start:#x}"
    invariants(small)
