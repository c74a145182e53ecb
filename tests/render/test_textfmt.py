"""The layout helpers: each one is a kernel seq_file rule."""
import pytest

from engine.units import range_list
from memfs.textfmt import (hex_digits, kb_line, name_value_line, node_hugepages_line, octal_escape,
                           pad_to_column, wide_count_line, wide_kb_line)


def test_kb_line_value_ends_at_column_24():
    line = kb_line("MemTotal", 16369492)
    assert line == "MemTotal:       16369492 kB\n"
    assert line.index(" kB") == 24


def test_kb_line_widens_for_values_longer_than_8_digits():
    assert kb_line("VmallocTotal", 34359738367) == "VmallocTotal:   34359738367 kB\n"


def test_kb_line_with_node_prefix():
    assert kb_line("Inactive(anon)", 20608, prefix="Node 0 ") == "Node 0 Inactive(anon):    20608 kB\n"


def test_wide_lines_use_19_column_label_and_width_5():
    assert wide_kb_line("HardwareCorrupted", 0) == "HardwareCorrupted:     0 kB\n"
    assert wide_count_line("HugePages_Total", 0) == "HugePages_Total:       0\n"
    assert wide_count_line("HugePages_Free", 123456) == "HugePages_Free:    123456\n"


def test_node_hugepages_line_uses_17_column_label():
    assert node_hugepages_line(0, "HugePages_Total", 0) == "Node 0 HugePages_Total:     0\n"
    assert node_hugepages_line(1, "HugePages_Free", 7) == "Node 1 HugePages_Free:      7\n"


def test_name_value_line_has_exactly_one_space():
    assert name_value_line("pgfault", 42) == "pgfault 42\n"


def test_hex_digits_pads_but_never_cuts():
    assert hex_digits(0xfff, 8) == "00000fff"
    assert hex_digits(0x13fffffff, 8) == "13fffffff"
    assert hex_digits(0xABC, 16) == "0000000000000abc"


def test_pad_to_column_keeps_at_least_one_space():
    assert pad_to_column("/dev/vdb", 40) == "/dev/vdb" + " " * 32
    assert pad_to_column("x" * 40, 40) == "x" * 40 + " "
    assert pad_to_column("x" * 55, 40) == "x" * 55 + " "


def test_octal_escape_of_space_tab_newline_backslash():
    assert octal_escape("/swap file\t\n\\x") == "/swap\\040file\\011\\012\\134x"
    assert octal_escape("/dev/vdb") == "/dev/vdb"


@pytest.mark.parametrize("numbers, text", [
    ([], ""), ([0], "0"), ([0, 1], "0-1"), ([1, 0], "0-1"), ([0, 2, 3], "0,2-3"),
    ([0, 1, 2, 3, 7, 9, 10], "0-3,7,9-10"), ([5, 5], "5"),
])
def test_range_list(numbers, text):
    assert range_list(numbers) == text
