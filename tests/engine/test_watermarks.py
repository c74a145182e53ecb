"""engine/pmm/watermarks.py: min/low/high and protection follow the sysctls (§3.1).

Expected values are computed here from the zones' managed counts with the
formulas of linux-mm-interfaces.md §3.1, never by calling watermarks.py:
    pages_min = min_free_kbytes // 4
    lowmem    = managed of DMA + DMA32 + Normal (every node)
    min  = pages_min * managed // lowmem
    gap  = max(min // 4, managed * watermark_scale_factor // 10000)
    low  = min + gap, high = min + 2 * gap
    protection[j] of zone i = managed of the node's zones i+1..j // ratio[i]
                              (0 for j <= i, for ratio 0, and for an empty zone i)
    default min_free_kbytes = isqrt(16 * lowmem_kB), clamped to [128, 262144]
"""
import math

import pytest

from engine.pmm.watermarks import default_min_free_kbytes

RATIOS = (256, 256, 32, 0, 0)


def expected_marks(m, min_free_kbytes, wsf):
    lowmem = sum(z.managed for z in m.zoneinfo() if z.idx <= 2)
    out = {}
    for z in m.zoneinfo():
        share = (min_free_kbytes // 4) * z.managed // lowmem
        gap = max(share // 4, z.managed * wsf // 10000)
        out[(z.node, z.name)] = (share, share + gap, share + 2 * gap)
    return out


def got_marks(m):
    return {(z.node, z.name): (z.min, z.low, z.high) for z in m.zoneinfo()}


def expected_protection(m, ratios):
    out = {}
    nodes = sorted({z.node for z in m.zoneinfo()})
    for node in nodes:
        zones = sorted((z for z in m.zoneinfo() if z.node == node), key=lambda z: z.idx)
        for i, z in enumerate(zones):
            prot = []
            for j in range(len(zones)):
                upper = sum(zones[k].managed for k in range(i + 1, j + 1))
                prot.append(upper // ratios[i] if j > i and ratios[i] and z.managed else 0)
            out[(node, z.name)] = tuple(prot)
    return out


def got_protection(m):
    return {(z.node, z.name): tuple(z.protection) for z in m.zoneinfo()}


@pytest.mark.parametrize("machine", ["small", "default"])
def test_default_min_free_kbytes_is_isqrt_of_16_times_lowmem_kb(machine, request):
    m = request.getfixturevalue(machine)
    lowmem_kb = 4 * sum(z.managed for z in m.zoneinfo() if z.idx <= 2)
    expected = max(128, min(262144, math.isqrt(16 * lowmem_kb)))
    assert m.sysctl_read("min_free_kbytes") == f"{expected}\n", \
        f"expected {expected}, got {m.sysctl_read('min_free_kbytes')!r}"


def test_default_min_free_kbytes_of_the_shipped_machines_by_hand(small, default):
    # small: lowmem (3840 + 9985) * 4 = 55300 kB, isqrt(884800) = 940
    # default: (3840 + 503809 + 262112 + 253952) * 4 = 4094852 kB, isqrt(65517632) = 8094
    assert small.sysctl_read("min_free_kbytes") == "940\n"
    assert default.sysctl_read("min_free_kbytes") == "8094\n"


@pytest.mark.parametrize("lowmem_pages, expected", [
    (0, 128), (255, 128), (256, 128),          # 1024 kB -> isqrt(16384) = 128
    (257, 128), (300, 138),                     # 1200 kB -> isqrt(19200) = 138
    (1 << 30, 262144),                          # 4 TiB -> 262144 exactly
    (1 << 32, 262144),                          # clamped
])
def test_default_min_free_kbytes_is_clamped_to_128_and_262144(lowmem_pages, expected):
    assert default_min_free_kbytes(lowmem_pages) == expected


@pytest.mark.parametrize("machine", ["small", "default"])
def test_boot_watermarks_follow_the_formula(machine, request, invariants):
    m = request.getfixturevalue(machine)
    mfk = int(m.sysctl_read("min_free_kbytes"))
    expected = expected_marks(m, mfk, 10)
    assert got_marks(m) == expected, f"expected {expected}, got {got_marks(m)}"
    invariants(m)


@pytest.mark.parametrize("value", [0, 128, 1000, 4096, 65536, 262144])
def test_written_min_free_kbytes_sets_every_zone_watermark(default, invariants, value):
    default.sysctl_write("min_free_kbytes", f"{value}\n")
    assert default.sysctl_read("min_free_kbytes") == f"{value}\n"
    expected = expected_marks(default, value, 10)
    assert got_marks(default) == expected, f"min_free_kbytes={value}: expected {expected}, got {got_marks(default)}"
    invariants(default)


def test_watermarks_of_the_small_machine_by_hand(small):
    # pages_min = 940 // 4 = 235; lowmem = 13825
    # DMA:   235 * 3840 // 13825 = 65,  gap max(16, 3)  = 16 -> 65, 81, 97
    # DMA32: 235 * 9985 // 13825 = 169, gap max(42, 9)  = 42 -> 169, 211, 253
    assert got_marks(small) == {(0, "DMA"): (65, 81, 97), (0, "DMA32"): (169, 211, 253),
                                (0, "Normal"): (0, 0, 0), (0, "Movable"): (0, 0, 0),
                                (0, "Device"): (0, 0, 0)}


def test_watermark_scale_factor_moves_low_and_high_but_not_min(small, invariants):
    mins = {k: v[0] for k, v in got_marks(small).items()}
    small.sysctl_write("watermark_scale_factor", "1000")
    expected = expected_marks(small, 940, 1000)
    assert got_marks(small) == expected, f"expected {expected}, got {got_marks(small)}"
    # DMA32: gap = max(169 // 4, 9985 * 1000 // 10000) = 998
    assert got_marks(small)[(0, "DMA32")] == (169, 169 + 998, 169 + 2 * 998)
    assert {k: v[0] for k, v in got_marks(small).items()} == mins
    invariants(small)


@pytest.mark.parametrize("machine", ["small", "default"])
def test_boot_protection_follows_the_lowmem_reserve_formula(machine, request):
    m = request.getfixturevalue(machine)
    expected = expected_protection(m, RATIOS)
    assert got_protection(m) == expected, f"expected {expected}, got {got_protection(m)}"


def test_protection_of_the_default_machine_by_hand(default):
    prot = got_protection(default)
    # node 0: DMA protects against DMA32 (503809 // 256); DMA32 has no zone above it
    assert prot[(0, "DMA")] == (0, 1968, 1968, 1968, 1968)
    assert prot[(0, "DMA32")] == (0, 0, 0, 0, 0)
    # node 1: DMA32 protects against Normal (253952 // 256)
    assert prot[(1, "DMA32")] == (0, 0, 992, 992, 992)
    assert prot[(1, "Normal")] == (0, 0, 0, 0, 0)
    assert prot[(1, "DMA")] == (0, 0, 0, 0, 0), "node 1 has no DMA memory to protect"


def test_written_lowmem_reserve_ratio_recomputes_protection(default, invariants):
    default.sysctl_write("lowmem_reserve_ratio", "32 64 8 0 0")
    expected = expected_protection(default, (32, 64, 8, 0, 0))
    assert got_protection(default) == expected, f"expected {expected}, got {got_protection(default)}"
    assert got_protection(default)[(1, "DMA32")] == (0, 0) + (253952 // 64,) * 3
    assert got_protection(default)[(1, "DMA")] == (0,) * 5, "an empty zone protects nothing"
    invariants(default)


def test_lowmem_reserve_ratio_of_zero_removes_the_protection(small):
    small.sysctl_write("lowmem_reserve_ratio", "0")
    assert small.sysctl_read("lowmem_reserve_ratio") == "0\t256\t32\t0\t0\n"
    assert got_protection(small)[(0, "DMA")] == (0, 0, 0, 0, 0)


def test_higher_min_free_kbytes_makes_palloc_fail_sooner(small, invariants):
    small.sysctl_write("min_free_kbytes", "40000")
    dma32 = next(z for z in small.zoneinfo() if z.name == "DMA32")
    dma = next(z for z in small.zoneinfo() if z.name == "DMA")
    # pages_min 10000: DMA32 10000 * 9985 // 13825 = 7222, DMA 10000 * 3840 // 13825 = 2777
    assert (dma32.min, dma.min) == (7222, 2777)
    n = (9985 - 7222) + (3840 - 2777 - 39)
    small.palloc(count=n)
    with pytest.raises(Exception) as info:
        small.palloc(count=1)
    assert getattr(info.value, "errno", None) == 12, f"expected ENOMEM, got {info.value!r}"
    invariants(small)
