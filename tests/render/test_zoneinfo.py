"""/proc/zoneinfo, buddyinfo and pagetypeinfo against layouts worked out by hand.

small.yaml's one node: DMA spans pfn 1..4095 (present 158 + 3840 = 3998, managed
3840: pfn 256..4095, the first MiB being reserved); DMA32 spans pfn 4096..16383
(present 12288) minus the kernel image at 16M-24M (pfn 4096..6143) and the memmap's
255 pages, which memblock takes from the top of the node (pfn 16129..16383).
Every free block sits on a Movable list at boot, and every pageblock is Movable.
"""
import re

from memfs.proc.zoneinfo import capped_count, show_buddyinfo, show_pagetypeinfo, show_zoneinfo

ZONES = ("DMA", "DMA32", "Normal", "Movable", "Device")
# DMA: 256 + 512 + 3 * 1024 free from pfn 256; DMA32: pfn 6144..16128 = 9 * 1024 + 512 + 256,
# and pfn 16128 alone below the memmap.
SMALL_DMA_ORDERS = (0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 3)
SMALL_DMA32_ORDERS = (1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 9)


def zone_blocks(text: str) -> list[str]:
    """zoneinfo split into one chunk per `Node N, zone Z` header."""
    return re.split(r"(?m)^(?=Node )", text)[1:]


def block_of(text: str, node: int, zone: str) -> list[str]:
    for block in zone_blocks(text):
        if block.startswith(f"Node {node}, zone {zone:>8}\n"):
            return block.splitlines()
    raise AssertionError(f"no block for node {node} zone {zone}")


def value(lines: list[str], label: str) -> str:
    for line in lines:
        if line.strip().startswith(label + " ") or line.strip().startswith(label + ":"):
            return line.strip()[len(label):].lstrip(": ").strip()
    raise AssertionError(f"no {label!r} line")


# ---------------------------------------------------------------------------
# zoneinfo
# ---------------------------------------------------------------------------

def test_zoneinfo_lists_every_zone_with_8_column_names(shared_small, shared_default):
    headers = [line for line in show_zoneinfo(shared_small).splitlines() if line.startswith("Node")]
    assert headers == [f"Node 0, zone {z:>8}" for z in ZONES]
    assert headers[0] == "Node 0, zone      DMA"
    headers = [line for line in show_zoneinfo(shared_default).splitlines() if line.startswith("Node")]
    assert headers == [f"Node {n}, zone {z:>8}" for n in (0, 1) for z in ZONES]


def test_zoneinfo_has_no_blank_lines(shared_default):
    text = show_zoneinfo(shared_default)
    assert text.endswith("\n") and "\n\n" not in text


def test_per_node_stats_under_first_populated_zone_only(shared_default):
    text = show_zoneinfo(shared_default)
    assert text.count("  per-node stats\n") == 2
    assert block_of(text, 0, "DMA")[1] == "  per-node stats"
    # node 1 starts at 2G: its DMA zone is empty, so the stats go under its DMA32.
    assert "  per-node stats" not in block_of(text, 1, "DMA")
    assert block_of(text, 1, "DMA32")[1] == "  per-node stats"


def test_small_dma_watermark_block(shared_small):
    lines = block_of(show_zoneinfo(shared_small), 0, "DMA")
    start = lines.index("  pages free     3840")
    assert lines[start:start + 11] == [
        "  pages free     3840",
        "        boost    0",
        "        min      65",                 # 940 kB min_free_kbytes / 4 * 3840 / 13825
        "        low      81",
        "        high     97",
        "        promo    113",
        "        spanned  4095",
        "        present  3998",
        "        managed  3840",
        "        cma      0",
        "        protection: (0, 39, 39, 39, 39)",   # 9985 DMA32 pages / 256
    ]
    assert value(lines, "start_pfn") == "1"


def test_small_dma32_sizes(shared_small):
    lines = block_of(show_zoneinfo(shared_small), 0, "DMA32")
    assert (value(lines, "spanned"), value(lines, "present"), value(lines, "managed")) == \
        ("12288", "12288", "9985")
    assert value(lines, "start_pfn") == "4096"


def test_unpopulated_zone_stops_after_protection(shared_small):
    lines = block_of(show_zoneinfo(shared_small), 0, "Normal")
    assert lines[-1].startswith("        protection: (")
    assert lines[1] == "  pages free     0"
    assert len(lines) == 12


def test_empty_zone_has_no_protection(shared_default):
    # node 1 starts at 2G: its DMA zone is empty (setup_per_zone_lowmem_reserve: clear).
    lines = block_of(show_zoneinfo(shared_default), 1, "DMA")
    assert lines[-1] == "        protection: (0, 0, 0, 0, 0)"


def test_counter_lines_are_name_in_12_then_value(shared_small):
    lines = block_of(show_zoneinfo(shared_small), 0, "DMA")
    for line in lines:
        if line.startswith("      ") and not line.startswith("        "):
            name, number = line[6:].split()
            assert number.isdigit()
            assert line == f"      {name:<12} {number}", f"bad counter line {line!r}"
    assert "      nr_free_pages 3840" in lines
    assert "      nr_mlock     0" in lines
    assert "      numa_hit     0" in lines
    assert "      nr_mapped    0" in lines           # a node counter, under per-node stats


def test_pagesets_one_block_per_cpu_with_threshold(shared_default):
    lines = block_of(show_zoneinfo(shared_default), 1, "Normal")
    at = lines.index("  pagesets")
    cpu_blocks = [lines[at + 1 + 7 * k: at + 1 + 7 * (k + 1)] for k in range(2)]
    for cpu, block in enumerate(cpu_blocks):
        assert block[0] == f"    cpu: {cpu}"
        assert all(line.startswith(" " * 14) for line in block[1:6])
        assert [line[14:24] for line in block[1:6]] == \
            ["count:    ", "high:     ", "batch:    ", "high_min: ", "high_max: "]
        assert all(line[24:].isdigit() for line in block[1:6])
        assert re.fullmatch(r"  vm stats threshold: \d+", block[6])
    assert lines[at + 15:] == [
        "  node_unreclaimable:  0",
        "  start_pfn:           1048576",            # 4G / 4K
        "  reserved_highatomic: 0",
        "  free_highatomic:     0",
    ]


def test_low_watermarks_sum_as_psutil_reads_them(shared_small):
    # psutil's MemAvailable fallback adds every line starting with "low".
    lows = [int(line.split()[1]) for line in show_zoneinfo(shared_small).splitlines()
            if line.strip().startswith("low")]
    assert sum(lows) == 81 + 211          # DMA32: min 235*9985//13825 = 169, gap 42


def test_palloc_shows_in_free_pages(small):
    small.palloc(count=16, contiguous=True)
    text = show_zoneinfo(small)
    free = [int(value(block_of(text, 0, z), "pages free")) for z in ("DMA", "DMA32")]
    assert sum(free) == 13825 - 16


# ---------------------------------------------------------------------------
# buddyinfo
# ---------------------------------------------------------------------------

def test_buddyinfo_small_by_hand(shared_small):
    assert show_buddyinfo(shared_small) == (
        "Node 0, zone      DMA      0      0      0      0      0      0      0      0      1      1      3 \n"
        "Node 0, zone    DMA32      1      0      0      0      0      0      0      0      1      1      9 \n")


def test_buddyinfo_lists_populated_zones_only(shared_default):
    lines = show_buddyinfo(shared_default).splitlines()
    assert [line[:21] for line in lines] == [
        "Node 0, zone      DMA", "Node 0, zone    DMA32", "Node 1, zone    DMA32",
        "Node 1, zone   Normal"]
    for line in lines:
        assert line.endswith(" ")
        assert len(line) == 22 + 11 * 7
        assert len(line.split()) == 4 + 11


def test_buddyinfo_times_block_sizes_is_free_pages(shared_default):
    total = sum(int(n) << order for line in show_buddyinfo(shared_default).splitlines()
                for order, n in enumerate(line.split()[4:]))
    # node 0: 3998 + 520192 present - 158 - 8192 (32M image) - 8191 memmap;
    # node 1: 262112 + 262144 present - 8192 memmap.
    assert total == 507649 + 516064


# ---------------------------------------------------------------------------
# pagetypeinfo
# ---------------------------------------------------------------------------

def pagetype_rows(node: int, zone: str, movable_counts) -> str:
    types = ("Unmovable", "Movable", "Reclaimable", "HighAtomic", "CMA", "Isolate")
    return "".join(
        f"Node {node:4d}, zone {zone:>8}, type {t:>12} "
        + "".join(f"{(n if t == 'Movable' else 0):6d} " for n in movable_counts) + "\n"
        for t in types)


def test_pagetypeinfo_small_by_hand(shared_small):
    expected = (
        "Page block order: 9\n"
        "Pages per block:  512\n"
        "\n"
        "Free pages count per migrate type at order       0      1      2      3      4      5"
        "      6      7      8      9     10 \n"
        + pagetype_rows(0, "DMA", SMALL_DMA_ORDERS)
        + pagetype_rows(0, "DMA32", SMALL_DMA32_ORDERS)
        + "\n"
        "Number of blocks type     Unmovable      Movable  Reclaimable   HighAtomic          CMA"
        "      Isolate \n"
        # pfn 0..4095 is 8 pageblocks; pfn 4096..16383 is 24.
        "Node 0, zone      DMA            0            8            0            0            0"
        "            0 \n"
        "Node 0, zone    DMA32            0           24            0            0            0"
        "            0 \n")
    assert show_pagetypeinfo(shared_small) == expected


def test_pagetypeinfo_row_layout(shared_small):
    for line in show_pagetypeinfo(shared_small).splitlines():
        if ", type " in line:
            assert re.fullmatch(r"Node {4}0, zone [ A-Za-z0-9]{8}, type [ A-Za-z]{12} ( *\d+ ){11}", line)
            assert len(line) == len("Node    0, zone      DMA, type    Unmovable ") + 11 * 7


def test_pagetypeinfo_one_section_per_node(shared_default):
    text = show_pagetypeinfo(shared_default)
    assert text.count("Page block order: 9\n") == 2
    node1 = text[text.rindex("Page block order: 9\n"):]
    assert "Node    1, zone    DMA32, type      Movable " in node1
    assert "Node    1, zone      DMA" not in text         # node 1's DMA zone is empty
    assert "Node 1, zone   Normal            0          512 " in node1   # 1G / 2M


def test_pagetypeinfo_caps_counts_at_100000():
    assert capped_count(99999) == " 99999 "
    assert capped_count(100000) == ">100000 "
    assert capped_count(250000) == ">100000 "
    assert capped_count(0) == "     0 "
