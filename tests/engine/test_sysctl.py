"""engine/sysctl.py through Machine.sysctl_read/sysctl_write: formats, bounds, rejected writes.

Values and ranges follow linux-mm-interfaces.md §4.4: one integer and a
newline per knob, array knobs tab-separated; a bad write is EINVAL and
changes nothing.
"""
import errno

import pytest

from engine.errors import InvalidArgument

KNOBS = ("min_free_kbytes", "watermark_scale_factor", "lowmem_reserve_ratio",
         "percpu_pagelist_high_fraction", "overcommit_ratio", "overcommit_kbytes")


def state(m):
    return ({k: m.sysctl_read(k) for k in KNOBS}, m.zoneinfo(), m.meminfo())


def test_knobs_read_as_linux_prints_them(small):
    got = {k: small.sysctl_read(k) for k in KNOBS}
    expected = {"min_free_kbytes": "940\n", "watermark_scale_factor": "10\n",
                "lowmem_reserve_ratio": "256\t256\t32\t0\t0\n", "percpu_pagelist_high_fraction": "0\n",
                "overcommit_ratio": "50\n", "overcommit_kbytes": "0\n"}
    assert got == expected, f"expected {expected}, got {got}"


@pytest.mark.parametrize("name, text, why", [
    ("min_free_kbytes", "lots", "not a number"),
    ("min_free_kbytes", "12.5", "not an integer"),
    ("min_free_kbytes", "-1", "below 0"),
    ("min_free_kbytes", "", "empty"),
    ("min_free_kbytes", "100 200", "two values for a single knob"),
    ("watermark_scale_factor", "0", "below 1"),
    ("watermark_scale_factor", "3001", "above 3000"),
    ("watermark_scale_factor", "ten", "not a number"),
    ("lowmem_reserve_ratio", "1 2 3 4 5 6", "six values for five zones"),
    ("lowmem_reserve_ratio", "", "no value"),
    ("lowmem_reserve_ratio", "256 x 32", "a word among the numbers"),
    ("lowmem_reserve_ratio", "256 -1", "a negative ratio"),
    ("percpu_pagelist_high_fraction", "4", "neither 0 nor at least 8"),
    ("overcommit_ratio", "-5", "below 0"),
])
def test_bad_sysctl_write_is_einval_and_changes_nothing(small, invariants, name, text, why):
    small.sysctl_write("watermark_scale_factor", "20")      # start from a non-default state
    small.sysctl_write("lowmem_reserve_ratio", "128 64 16 0 0")
    before = state(small)
    with pytest.raises(InvalidArgument) as info:
        small.sysctl_write(name, text)
    assert info.value.errno == errno.EINVAL, f"{why}: expected EINVAL, got {info.value.errno}"
    assert state(small) == before, f"writing {text!r} to {name} ({why}) changed the machine"
    invariants(small)


def test_write_accepts_a_trailing_newline_and_spaces(small, invariants):
    small.sysctl_write("watermark_scale_factor", " 200 \n")
    assert small.sysctl_read("watermark_scale_factor") == "200\n"
    invariants(small)


def test_bounds_are_inclusive(small, invariants):
    for name, value in (("watermark_scale_factor", 1), ("watermark_scale_factor", 3000),
                        ("min_free_kbytes", 0), ("percpu_pagelist_high_fraction", 8),
                        ("percpu_pagelist_high_fraction", 0)):
        small.sysctl_write(name, str(value))
        assert small.sysctl_read(name) == f"{value}\n", f"{name}: expected {value}, got {small.sysctl_read(name)!r}"
        invariants(small)


def test_short_lowmem_reserve_ratio_write_keeps_the_remaining_values(small, invariants):
    small.sysctl_write("lowmem_reserve_ratio", "64 128")
    assert small.sysctl_read("lowmem_reserve_ratio") == "64\t128\t32\t0\t0\n"
    invariants(small)


def test_writing_overcommit_ratio_zeroes_overcommit_kbytes_and_back(small, invariants):
    small.sysctl_write("overcommit_kbytes", "1048576")
    assert (small.sysctl_read("overcommit_kbytes"), small.sysctl_read("overcommit_ratio")) == ("1048576\n", "0\n")
    small.sysctl_write("overcommit_ratio", "80")
    assert (small.sysctl_read("overcommit_kbytes"), small.sysctl_read("overcommit_ratio")) == ("0\n", "80\n")
    invariants(small)


def test_commit_limit_follows_overcommit_ratio_and_kbytes(small, invariants):
    # MemTotal 13825 pages, swap 128M - one header page = 32767 pages
    small.sysctl_write("overcommit_ratio", "50")
    assert small.meminfo().commit_limit == 13825 * 50 // 100 + 32767
    small.sysctl_write("overcommit_kbytes", "4096")
    assert small.meminfo().commit_limit == 4096 // 4 + 32767
    invariants(small)


def test_percpu_pagelist_high_fraction_caps_the_stacks(small, invariants):
    runs = small.palloc(count=400)
    small.pfree(runs)
    small.sysctl_write("percpu_pagelist_high_fraction", "1000")
    for z in small.zones:
        if z.managed_pages:
            pcp = z.pcp[0]
            assert pcp.count <= pcp.high, f"{z.name}: expected at most {pcp.high} stacked, got {pcp.count}"
    invariants(small)


def test_every_accepted_write_is_logged_in_kmsg(small, invariants):
    small.sysctl_write("min_free_kbytes", "2048")
    last = small.kmsg_lines()[-1]
    assert last.endswith("sysctl: vm.min_free_kbytes = 2048"), f"expected the write in kmsg, got {last!r}"
    invariants(small)


def test_rejected_write_logs_nothing(small):
    before = small.kmsg_lines()
    with pytest.raises(InvalidArgument):
        small.sysctl_write("min_free_kbytes", "nope")
    assert small.kmsg_lines() == before
