"""/proc/vmstat: `name value`, one space, kernel order; values from config/small.yaml."""
import re

from memfs.proc.vmstat import show_vmstat

LINE = re.compile(r"^[a-z0-9_]+ \d+$")
# The kernel's block order (reference §2.2): zone gauges, NUMA events, node gauges.
HEAD = ("nr_free_pages nr_zone_inactive_anon nr_zone_active_anon nr_zone_inactive_file "
        "nr_zone_active_file nr_zone_unevictable nr_zone_write_pending nr_mlock nr_zspages "
        "nr_free_cma numa_hit numa_miss numa_foreign numa_interleave numa_local numa_other "
        "nr_inactive_anon").split()
SMALL_FREE_PAGES = 13825          # see test_meminfo: 16286 present - 158 - 2048 - 255


def pairs(text: str) -> list[tuple[str, int]]:
    return [(line.split(" ")[0], int(line.split(" ")[1])) for line in text.splitlines()]


def test_every_line_is_name_space_value(shared_small):
    text = show_vmstat(shared_small)
    assert text.endswith("\n") and "\n\n" not in text
    for line in text.splitlines():
        assert LINE.match(line), f"bad line {line!r}"


def test_kernel_order_and_unique_names(shared_small):
    names = [n for n, _ in pairs(show_vmstat(shared_small))]
    assert names[:len(HEAD)] == HEAD
    assert len(names) == len(set(names))
    assert names[-1] == "nr_unstable"
    for key in ("pgpgin", "pgpgout", "pswpin", "pswpout", "pgalloc_dma", "pgalloc_dma32",
                "pgalloc_normal", "pgalloc_movable", "allocstall_dma", "pgskip_normal", "pgfault",
                "pgmajfault", "oom_kill", "nr_dirty_threshold", "nr_memmap_boot_pages"):
        assert key in names, f"{key} missing"
    assert names.index("pswpout") < names.index("pgalloc_dma") < names.index("pgfree")


def test_small_values(shared_small):
    values = dict(pairs(show_vmstat(shared_small)))
    assert values["nr_free_pages"] == SMALL_FREE_PAGES
    assert values["nr_memmap_boot_pages"] == 255          # ceil(16286 * 64 / 4096)
    assert values["nr_unstable"] == 0
    assert values["pgalloc_dma32"] == 0


def test_palloc_moves_free_pages_and_pgalloc(small):
    small.palloc(count=16, contiguous=True)
    values = dict(pairs(show_vmstat(small)))
    assert values["nr_free_pages"] == SMALL_FREE_PAGES - 16
    assert sum(values[f"pgalloc_{z}"] for z in ("dma", "dma32", "normal", "movable")) == 16


def test_fits_one_procps_read(shared_default):
    assert len(show_vmstat(shared_default).encode()) < 8191
