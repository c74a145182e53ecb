"""The tree through a real mount: names, modes, formats and values of the small machine.

Expected values are worked out by hand from config/small.yaml:
  RAM: (0x9f000-0x1000)/4K = 158 pages + (0x4000000-0x100000)/4K = 16128 pages = 16286 present;
  the kernel keeps the first MiB (158 present pages), its 8 MiB image (2048 pages) and the
  memmap, ceil(16286 * 64 / 4096) = 255 pages, at the top of RAM;
  so MemTotal = 16286 - 158 - 2048 - 255 = 13825 pages = 55300 kB.
  Swap: 128 MiB = 32768 pages, less the header page = 32767 pages = 131068 kB.
"""
import errno
import os
import stat
import subprocess

import pytest

MEMTOTAL_KB = 55300
SWAP_KB = 131068

ROOT_FILES = {"README", "ctl", "clock", "kmsg", "meminfo", "vmstat", "zoneinfo", "buddyinfo",
              "pagetypeinfo", "iomem", "physmap", "swaps", "stat", "sys", "devices"}


def test_root_lists_every_file(small):
    assert ROOT_FILES <= set(os.listdir(small.path)), sorted(os.listdir(small.path))


@pytest.mark.parametrize("name,mode", [("meminfo", 0o444), ("ctl", 0o644), ("clock", 0o644),
                                       ("pagetypeinfo", 0o400), ("sys/vm/min_free_kbytes", 0o644)])
def test_file_modes_follow_linux(small, name, mode):
    got = stat.S_IMODE(os.stat(small / name).st_mode)
    assert got == mode, f"{name}: expected {mode:o}, got {got:o}"


def test_write_to_read_only_file_fails_with_eacces_and_says_why(small):
    with pytest.raises(PermissionError) as e:
        with open(small / "meminfo", "w") as f:
            f.write("MemTotal: 1 kB\n")
    assert e.value.errno == errno.EACCES
    assert "meminfo" in small.kmsg_tail()[0]


def test_meminfo_values_of_a_fresh_small_machine(small):
    mi = small.meminfo()
    assert mi["MemTotal"] == MEMTOTAL_KB
    assert mi["MemFree"] == MEMTOTAL_KB, "nothing runs on a fresh paused machine"
    assert mi["SwapTotal"] == SWAP_KB and mi["SwapFree"] == SWAP_KB
    # CommitLimit = MemTotal pages * overcommit_ratio 50% (pages, rounded down) + swap pages
    assert mi["CommitLimit"] == (13825 * 50 // 100) * 4 + SWAP_KB
    assert mi["SwapCached"] == 0 and mi["Committed_AS"] == 0


def test_meminfo_lines_are_linux_shaped(small):
    for line in small.read("meminfo").splitlines():
        key, colon, rest = line.partition(":")
        assert colon, line
        if line.startswith("HugePages_"):
            assert not line.endswith("kB"), line
        else:
            assert line.endswith(" kB"), line
            assert len(line) == 27 or len(line.split()[1]) > 8, f"value must end at column 24: {line!r}"


def test_buddyinfo_of_a_fresh_small_machine(small):
    # DMA: frames 256..4095 free (the first MiB is the kernel's): one order-8 block at 256,
    # one order-9 at 512, three order-10 at 1024, 2048, 3072.
    # DMA32: [6144, 16129) free (image below, memmap above): nine order-10 blocks from 6144,
    # then 512 + 256 + 1 frames from 15360.
    lines = small.read("buddyinfo").splitlines(keepends=True)
    counts = lambda *c: "".join(f"{n:6d} " for n in c) + "\n"
    assert lines == ["Node 0, zone      DMA " + counts(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 3),
                     "Node 0, zone    DMA32 " + counts(1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 9)]


def test_palloc_shows_in_meminfo_zoneinfo_and_buddyinfo(small):
    before = small.meminfo()["MemFree"]
    first = int(small.ctl("palloc count=16 contiguous zone=DMA"), 16)
    assert 256 <= first and first + 16 <= 4096, f"DMA frames only, got {first:#x}"
    assert small.meminfo()["MemFree"] == before - 64
    zi = small.read("zoneinfo")
    dma = zi[zi.index("zone      DMA"):zi.index("zone    DMA32")]
    assert "pages free     3824\n" in dma, dma[:400]
    vm = dict(line.split(" ") for line in small.read("vmstat").splitlines())
    assert int(vm["nr_free_pages"]) == 13825 - 16
    assert int(vm["pgalloc_dma"]) == 16
    small.ctl(f"pfree {first:#x} count=16")
    assert small.meminfo()["MemFree"] == before


def test_isa_dma_buffer_honours_every_constraint(small):
    first = int(small.ctl("palloc count=16 contiguous below=16M boundary=64K align=64K"), 16)
    assert first % 16 == 0, "64 KiB aligned"
    assert (first + 16) * 4096 <= 16 << 20, "below 16 MiB"
    assert first // 16 == (first + 15) // 16, "does not cross a 64 KiB boundary"


def test_watermarks_follow_min_free_kbytes(small):
    small.write("sys/vm/min_free_kbytes", "2048\n")
    assert small.read("sys/vm/min_free_kbytes") == "2048\n"
    # pages_min = 2048/4 = 512, shared by managed pages (DMA 3840, DMA32 9985, lowmem 13825);
    # gap = max(min/4, managed * 10 / 10000).
    zi = small.read("zoneinfo")
    for zone, managed in (("DMA", 3840), ("DMA32", 9985)):
        block = zi[zi.index(f"zone {zone:>8}"):]
        block = block[:block.index("protection")]
        wmin = 512 * managed // 13825
        gap = max(wmin // 4, managed * 10 // 10000)
        for label, value in (("min", wmin), ("low", wmin + gap), ("high", wmin + 2 * gap)):
            assert f"        {label:<8} {value}\n" in block, f"{zone} {label} {value}: {block}"


def test_default_min_free_kbytes_is_sqrt_of_16_lowmem_kb(small):
    # isqrt(16 * 55300) = isqrt(884800) = 940
    assert small.read("sys/vm/min_free_kbytes") == "940\n"


def test_bad_sysctl_write_changes_nothing(small):
    for bad in ("abc\n", "-5\n", "1 2\n"):
        with pytest.raises(OSError) as e:
            small.write("sys/vm/min_free_kbytes", bad)
        assert e.value.errno == errno.EINVAL
        assert "min_free_kbytes" in small.kmsg_tail()[0]
    assert small.read("sys/vm/min_free_kbytes") == "940\n"


def test_bar_appears_in_iomem(small):
    addr = int(small.ctl("bar 16M name=gpu"), 16)
    assert addr == 0xC0000000, "first naturally aligned 16M hole of the window at 0xc0000000"
    lines = small.read("iomem").splitlines()
    i = lines.index("  c0000000-c0ffffff : gpu")
    assert lines[i - 1] == "c0000000-febfffff : PCI Bus 0000:00"
    assert int(small.ctl("bar 1M"), 16) == 0xC1000000


def test_paused_clock_only_moves_when_stepped(small):
    clock = dict(line.split(" ", 1) for line in small.read("clock").splitlines())
    assert clock["state"] == "paused" and clock["tick"] == "0"
    small.step(25)
    small.step(5)
    clock = dict(line.split(" ", 1) for line in small.read("clock").splitlines())
    assert clock["tick"] == "30"
    assert clock["uptime"] == "0.30", "30 ticks of 10 ms"


def test_every_file_reads_the_same_with_cat_head_and_python(small):
    for name in ("meminfo", "vmstat", "zoneinfo", "buddyinfo", "pagetypeinfo", "iomem",
                 "physmap", "swaps", "stat", "README", "devices/system/node/node0/meminfo"):
        path = str(small / name)
        py = open(path).read()
        assert py, f"{name} is empty"
        assert subprocess.run(["cat", path], capture_output=True, text=True).stdout == py, name
        head = subprocess.run(["head", "-n", "3", path], capture_output=True, text=True).stdout
        assert head == "".join(py.splitlines(keepends=True)[:3]), name
        less = subprocess.run(["less", path], capture_output=True, text=True)
        if less.returncode == 0:          # less behaves as cat when its output is not a terminal
            assert less.stdout == py, name


def test_reads_at_any_offset_come_from_one_snapshot(small):
    whole = open(small / "zoneinfo", "rb").read()
    fd = os.open(small / "zoneinfo", os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 7):
            chunks.append(chunk)
        assert b"".join(chunks) == whole
        assert os.pread(fd, 50, 1000) == whole[1000:1050]
    finally:
        os.close(fd)


def test_seek_back_to_zero_rereads_fresh_content_like_procps(small):
    fd = os.open(small / "meminfo", os.O_RDONLY)
    try:
        first = os.read(fd, 8191).decode()
        small.ctl("palloc count=256")
        os.lseek(fd, 0, os.SEEK_SET)
        second = os.read(fd, 8191).decode()
    finally:
        os.close(fd)
    free = lambda text: int(text.split("MemFree:")[1].split()[0])
    assert free(first) - free(second) == 1024


def test_swaps_lists_the_configured_area(small):
    lines = small.read("swaps").splitlines()
    assert lines[0] == "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority"
    assert lines[1].split() == ["/dev/vdb", "partition", str(SWAP_KB), "0", "-2"]


def test_node_files(small):
    assert small.read("devices/system/node/online") == "0\n"
    assert small.read("devices/system/node/node0/distance") == "10\n"
    node = small.read("devices/system/node/node0/meminfo").splitlines()
    assert node[0].split() == ["Node", "0", "MemTotal:", str(MEMTOTAL_KB), "kB"]


def test_kmsg_tells_the_boot_story(small):
    kmsg = small.read("kmsg")
    assert "BIOS-e820: [mem 0x0000000000001000-0x000000000009efff] usable" in kmsg
    assert f"Memory: {MEMTOTAL_KB}K/{16286 * 4}K available" in kmsg
