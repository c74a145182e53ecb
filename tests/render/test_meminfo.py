"""/proc/meminfo: field order, column layout, values worked out from config/small.yaml.

Worked by hand from small.yaml (4 KiB pages):
  RAM      (0x9f000 - 0x1000) / 4096 = 158 pages + (0x4000000 - 0x100000) / 4096 = 16128
           = 16286 present pages
  reserved 158 low pages (the first MiB) + 2048 kernel image (8M)
           + memmap ceil(16286 * 64 / 4096) = 255 pages
  MemTotal 16286 - 158 - 2048 - 255 = 13825 pages = 55300 kB; MemFree the same at boot.
  zones    DMA managed 3840 (pfn 256..4095), DMA32 managed 13825 - 3840 = 9985.
  swap     128M / 4K - 1 header page = 32767 pages = 131068 kB.
"""
import re
import warnings

import psutil
import pytest

from memfs.proc.meminfo import show_meminfo
from memfs.proc.vmstat import show_vmstat

KB = 4
MEM_TOTAL_PAGES = 13825
DMA_MANAGED, DMA32_MANAGED = 3840, 9985
SWAP_PAGES = 32767

# Linux 6.x x86-64 order, as in the reference's example block (DirectMap1G only when used).
FIELDS = """
MemTotal MemFree MemAvailable Buffers Cached SwapCached Active Inactive Active(anon)
Inactive(anon) Active(file) Inactive(file) Unevictable Mlocked SwapTotal SwapFree Zswap Zswapped
Dirty Writeback AnonPages Mapped Shmem KReclaimable Slab SReclaimable SUnreclaim KernelStack
PageTables SecPageTables NFS_Unstable Bounce WritebackTmp CommitLimit Committed_AS VmallocTotal
VmallocUsed VmallocChunk Percpu HardwareCorrupted AnonHugePages ShmemHugePages ShmemPmdMapped
FileHugePages FilePmdMapped Balloon HugePages_Total HugePages_Free HugePages_Rsvd HugePages_Surp
Hugepagesize Hugetlb DirectMap4k DirectMap2M
""".split()
LINE = re.compile(r"^[A-Za-z0-9_()]+:\s+\d+( kB)?$")


def small_available_pages() -> int:
    """si_mem_available on the fresh small machine, from the config alone.

    min_free_kbytes = int_sqrt(16 * 55300) = 940 -> 235 pages, shared by managed size:
    DMA min 235*3840//13825 = 65, gap max(65//4, 3840*10//10000) = 16 -> high 97;
    DMA32 min 235*9985//13825 = 169, gap max(42, 9) = 42 -> high 253.
    DMA's protection against DMA32 allocations: 9985 // 256 = 39.
    totalreserve = (97 + 39) + (253 + 0); nothing in the page cache or slab yet.
    """
    min_pages = int((16 * MEM_TOTAL_PAGES * KB) ** 0.5) // KB
    total_reserve = 0
    for managed, protection in ((DMA_MANAGED, DMA32_MANAGED // 256), (DMA32_MANAGED, 0)):
        wmark_min = min_pages * managed // MEM_TOTAL_PAGES
        gap = max(wmark_min // 4, managed * 10 // 10000)
        total_reserve += min(managed, wmark_min + 2 * gap + protection)
    return MEM_TOTAL_PAGES - total_reserve


def fields(text: str) -> dict[str, int]:
    return {line.split(":")[0]: int(line.split(":")[1].split()[0]) for line in text.splitlines()}


def test_fields_in_linux_order(shared_small):
    keys = [line.split(":")[0] for line in show_meminfo(shared_small).splitlines()]
    assert keys == FIELDS


def test_every_line_is_label_value_and_optional_kb(shared_small):
    text = show_meminfo(shared_small)
    assert text.endswith("\n") and "\n\n" not in text
    for line in text.splitlines():
        assert LINE.match(line), f"bad line {line!r}"


def test_values_end_at_column_24(shared_small):
    for line in show_meminfo(shared_small).splitlines():
        key = line.split(":")[0]
        if key == "VmallocTotal":
            continue                   # 11 digits: wider than the 8 columns, as on Linux
        value_end = line.index(" kB") if line.endswith(" kB") else len(line)
        assert value_end == 24, f"{line!r}: value ends at {value_end}, expected 24"


def test_special_width_lines(shared_small):
    lines = show_meminfo(shared_small).splitlines()
    assert "HardwareCorrupted:     0 kB" in lines
    assert "VmallocTotal:   34359738367 kB" in lines
    for key in ("HugePages_Total", "HugePages_Free", "HugePages_Rsvd", "HugePages_Surp"):
        assert f"{key + ':':<19}    0" in lines
    assert "Hugepagesize:       2048 kB" in lines


def test_small_machine_values(shared_small):
    f = fields(show_meminfo(shared_small))
    assert f["MemTotal"] == MEM_TOTAL_PAGES * KB == 55300
    assert f["MemFree"] == 55300
    assert f["MemAvailable"] == small_available_pages() * KB == 53744
    assert f["SwapTotal"] == f["SwapFree"] == SWAP_PAGES * KB == 131068
    assert f["CommitLimit"] == (MEM_TOTAL_PAGES * 50 // 100 + SWAP_PAGES) * KB
    assert f["Active"] == f["Active(anon)"] + f["Active(file)"]
    assert f["Inactive"] == f["Inactive(anon)"] + f["Inactive(file)"]
    assert f["Slab"] == f["SReclaimable"] + f["SUnreclaim"]


def test_direct_map_split_by_alignment(shared_small, shared_default):
    # small: 0x1000-0x9f000 and 0x100000-0x200000 are not 2M aligned: 632K + 1024K in 4K pages;
    # 0x200000-0x4000000 in 2M pages; nothing is 1G aligned, so no DirectMap1G line.
    f = fields(show_meminfo(shared_small))
    assert (f["DirectMap4k"], f["DirectMap2M"]) == (632 + 1024, 62 * 1024)
    assert "DirectMap1G" not in f
    # default: 1G-2G and 4G-5G are whole gigabyte pages.
    assert fields(show_meminfo(shared_default))["DirectMap1G"] == 2 * 1024 * 1024


def test_palloc_of_16_frames_takes_64_kb(small):
    before = fields(show_meminfo(small))
    small.palloc(count=16, contiguous=True)
    after = fields(show_meminfo(small))
    assert before["MemFree"] - after["MemFree"] == 64
    assert after["MemTotal"] == before["MemTotal"]


def test_fits_one_procps_read(shared_default):
    assert len(show_meminfo(shared_default).encode()) < 8191


@pytest.fixture
def procfs(tmp_path, monkeypatch):
    """psutil reading files from tmp_path instead of /proc."""
    monkeypatch.setattr(psutil, "PROCFS_PATH", str(tmp_path))
    return tmp_path


def test_psutil_parses_meminfo_and_vmstat(shared_small, procfs):
    (procfs / "meminfo").write_text(show_meminfo(shared_small))
    (procfs / "vmstat").write_text(show_vmstat(shared_small))
    with warnings.catch_warnings():
        warnings.simplefilter("error")         # psutil warns about fields it had to guess
        vm = psutil.virtual_memory()
        swap = psutil.swap_memory()
    assert vm.total == vm.free == 55300 * 1024
    assert vm.available == 53744 * 1024
    assert (swap.total, swap.used, swap.free) == (131068 * 1024, 0, 131068 * 1024)
    assert (swap.sin, swap.sout) == (0, 0)
