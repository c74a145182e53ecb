"""/proc/iomem (Linux layout) and physmap (memfs's columns), from the machine descriptions."""
import re

import pytest

from memfs.proc.iomem import show_iomem, show_physmap

# config/small.yaml by hand: ranges as start-last byte; the PCI windows are
# parents of the MMIO inside them; the 8M kernel image at 16M splits 1/2 code,
# 1/4 rodata, 1/8 data, rest bss, under the RAM that holds it.
SMALL_IOMEM = """\
00000000-00000fff : Reserved
00001000-0009efff : System RAM
0009f000-0009ffff : Reserved
000a0000-000bffff : PCI Bus 0000:00
  000a0000-000bffff : Video RAM area
000f0000-000fffff : System ROM
00100000-03ffffff : System RAM
  01000000-013fffff : Kernel code
  01400000-015fffff : Kernel rodata
  01600000-016fffff : Kernel data
  01700000-017fffff : Kernel bss
c0000000-febfffff : PCI Bus 0000:00
fec00000-fec003ff : IOAPIC 0
fee00000-fee00fff : Local APIC
fffc0000-ffffffff : Reserved
"""
IOMEM_LINE = re.compile(r"^(  )*[0-9a-f]{8,}-[0-9a-f]{8,} : \S.*$")
PHYSMAP_LINE = re.compile(r"^(?P<indent> *)(?P<start>[0-9a-f]{16})-(?P<last>[0-9a-f]{16}) +"
                          r"(?P<kind>\S+) +(?P<cache>\S+) +(?P<flags>\S+) +(?P<name>\S.*)$")
CACHE_NAMES = {"write-back", "uncached", "write-combining", "write-through", "write-protect"}


def test_small_iomem_by_hand(shared_small):
    assert show_iomem(shared_small) == SMALL_IOMEM


def test_every_iomem_line_has_linux_shape(shared_default):
    for line in show_iomem(shared_default).splitlines():
        assert IOMEM_LINE.match(line), f"bad line {line!r}"


def test_iomem_addresses_above_4g_widen_past_8_digits(shared_default):
    lines = show_iomem(shared_default).splitlines()
    assert "100000000-13fffffff : System RAM" in lines           # 4G + 1G of RAM
    assert "800000000-fffffffff : PCI Bus 0000:00" in lines      # the 32G window at 32G
    assert "bffe0000-bffeffff : ACPI Tables" in lines
    assert "  01000000-01ffffff : Kernel code" in lines          # half of the 32M image


def test_bar_nests_under_its_pci_window(default):
    default.place_bar(1 << 20, wide=True, prefetch=True)
    lines = show_iomem(default).splitlines()
    at = lines.index("800000000-fffffffff : PCI Bus 0000:00")
    assert lines[at + 1] == "  800000000-8000fffff : 0000:00:03.0"


def physmap_rows(text: str) -> list[dict]:
    rows = []
    for line in text.splitlines()[1:]:
        match = PHYSMAP_LINE.match(line)
        assert match, f"bad physmap line {line!r}"
        rows.append(match.groupdict())
    return rows


def test_physmap_header_names_the_columns(shared_small):
    header = show_physmap(shared_small).splitlines()[0]
    assert header.split() == ["start-end", "kind", "cache", "flags", "name"]


def test_physmap_has_one_row_per_iomem_line_same_indent(shared_small, shared_default):
    for m in (shared_small, shared_default):
        iomem = show_iomem(m).splitlines()
        rows = physmap_rows(show_physmap(m))
        assert len(rows) == len(iomem)
        for row, line in zip(rows, iomem):
            indent = len(line) - len(line.lstrip(" "))
            assert len(row["indent"]) == indent
            start, last = line.strip().split(" : ")[0].split("-")
            assert (int(row["start"], 16), int(row["last"], 16)) == (int(start, 16), int(last, 16))
            assert row["name"] == line.split(" : ", 1)[1]
            assert row["cache"] in CACHE_NAMES


def test_physmap_columns_line_up(shared_default):
    lines = show_physmap(shared_default).splitlines()
    kind_column = lines[0].index("kind")
    for line in lines[1:]:
        assert line[kind_column - 1] == " " and line[kind_column] != " ", f"{line!r}"


@pytest.mark.parametrize("name, kind, cache", [
    ("System RAM", "ram", "write-back"), ("Video RAM area", "mmio", "write-combining"),
    ("System ROM", "rom", "write-protect"), ("IOAPIC 0", "mmio", "uncached"),
    ("Kernel code", "kernel", "write-back"), ("PCI Bus 0000:00", "pci", "uncached"),
])
def test_physmap_kind_and_cacheability_from_config(shared_small, name, kind, cache):
    row = next(r for r in physmap_rows(show_physmap(shared_small)) if r["name"] == name)
    assert (row["kind"], row["cache"], row["flags"]) == (kind, cache, "-")


def test_physmap_lists_bar_flags(default):
    default.place_bar(1 << 20, wide=True, prefetch=True)
    row = next(r for r in physmap_rows(show_physmap(default)) if r["kind"] == "bar")
    assert (row["start"], row["last"]) == ("0000000800000000", "00000008000fffff")
    assert (row["cache"], row["flags"], row["name"]) == ("write-combining", "64bit,prefetch",
                                                         "0000:00:03.0")
    assert len(row["indent"]) == 2
