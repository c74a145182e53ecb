"""/proc/swaps: tab layout, path padded to column 40, the extra-tab rule."""
import yaml

from engine import Machine, parse
from memfs.machines import builtin
from memfs.proc.swaps import show_swaps

HEADER = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
LONG_PATH = "/var/lib/swap/a-path-well-past-forty-columns"


def machine_with_swap(swap: list[dict]) -> Machine:
    raw = yaml.safe_load(builtin("small").read_text())
    raw["swap"] = swap
    return Machine(parse(raw), paused=True)


def test_small_swaps_by_hand(shared_small):
    # 128M less the header page: 32767 pages = 131068 kB; the first area gets priority -2.
    assert show_swaps(shared_small) == (HEADER + "/dev/vdb" + " " * 32
                                 + "partition\t131068\t\t0\t\t-2\n")


def test_default_swaps_by_hand(shared_default):
    assert show_swaps(shared_default).splitlines()[1] == (
        "/dev/vda2" + " " * 31 + "partition\t1048572\t\t0\t\t-2")   # 1G - 4K


def test_files_long_paths_escapes_and_big_sizes():
    m = machine_with_swap([
        {"name": "/swapfile", "size": "64M"},
        {"name": "/swap dir/file", "size": "16M"},
        {"name": LONG_PATH, "size": "8M"},
        {"name": "/dev/vdc", "size": "10G", "priority": 5},
    ])
    lines = show_swaps(m).splitlines()
    assert lines[0] + "\n" == HEADER
    assert lines[1] == "/swapfile" + " " * 31 + "file\t\t65532\t\t0\t\t-2"
    assert lines[2] == "/swap\\040dir/file" + " " * 23 + "file\t\t16380\t\t0\t\t-3"
    assert lines[3] == LONG_PATH + " " + "file\t\t8188\t\t0\t\t-4"
    # 10G - 4K = 10485756 kB: at least 10000000, so only one tab after it.
    assert lines[4] == "/dev/vdc" + " " * 32 + "partition\t10485756\t0\t\t5"


def test_default_priorities_skip_areas_with_their_own():
    # mm/swapfile.c: only an area without a priority takes --least_priority.
    m = machine_with_swap([{"name": "/dev/vdb", "size": "8M", "priority": 5},
                           {"name": "/dev/vdc", "size": "8M"}])
    assert show_swaps(m).splitlines()[2].endswith("\t-2")


def test_type_starts_at_column_40_and_five_fields(shared_small):
    for line in show_swaps(shared_small).splitlines()[1:]:
        assert line[40:].startswith(("partition\t", "file\t\t"))
        assert len(line.split()) == 5
