"""engine/config.py: machine descriptions are validated, and each error names its key.

Every bad variant is made by editing the text of config/small.yaml, so each
test shows the one line that changed.
"""
import pytest

from engine import ConfigError, load
from memfs.machines import builtin, builtin_names

SMALL = builtin("small").read_text()


def edit(old: str, new: str, text: str = SMALL) -> str:
    assert old in text, f"expected {old!r} in the small machine's YAML"
    return text.replace(old, new, 1)


@pytest.fixture
def config_error(config_from_yaml):
    """config_error(text): the ConfigError that validating text raises."""
    def raises(text: str) -> ConfigError:
        with pytest.raises(ConfigError) as info:
            config_from_yaml(text)
        return info.value
    return raises


def assert_path(err: ConfigError, path: str) -> None:
    assert err.path == path, f"expected the error at {path!r}, got {err.path!r} ({err})"


# --- the shipped machines -------------------------------------------------------------

def test_every_shipped_machine_description_loads():
    names = builtin_names()
    assert {"small", "default"} <= set(names), f"expected small and default, got {names}"
    for name in names:
        load(builtin(name))


def test_small_machine_config_reads_sizes_suffixes_and_ranges():
    cfg = load(builtin("small"))
    ram = [(r.start, r.end) for r in cfg.ram_regions]
    assert ram == [(0x1000, 0x9f000), (0x100000, 0x4000000)], f"expected the two RAM ranges, got {ram}"
    assert cfg.ram_bytes == 0x9e000 + 63 * 2**20, f"expected 632K + 63M of RAM, got {cfg.ram_bytes}"
    ioapic = next(r for r in cfg.memory_map if r.name == "IOAPIC 0")
    assert ioapic.end - ioapic.start == 1024, f"expected size 1K to mean 1024 bytes, got {ioapic.size}"
    assert cfg.kernel.image_size == 8 * 2**20
    assert [(n.start, n.end, n.cpus) for n in cfg.nodes] == [(0, 64 * 2**20, (0,))]
    assert cfg.distance == ((10,),)
    assert cfg.swap[0].size == 128 * 2**20


def test_memory_map_is_kept_in_address_order_whatever_the_file_order(config_from_yaml):
    text = edit("  - {start: 0xfec00000, size: 1K,        type: mmio, name: IOAPIC 0}\n", "")
    text = edit("memory_map:\n", "memory_map:\n  - {start: 0xfec00000, size: 1K, type: mmio, name: IOAPIC 0}\n",
                text)
    starts = [r.start for r in config_from_yaml(text).memory_map]
    assert starts == sorted(starts), f"expected ascending starts, got {[hex(s) for s in starts]}"


# --- unknown keys and wrong types -----------------------------------------------------

def test_unknown_top_level_key_is_named(config_error):
    assert_path(config_error(SMALL + "colour: blue\n"), "colour")


def test_unknown_key_inside_a_memory_map_entry_is_named_with_its_index(config_error):
    err = config_error(edit("{start: 0x00001000, end: 0x0009f000, type: ram}",
                            "{start: 0x00001000, end: 0x0009f000, type: ram, colour: red}"))
    assert_path(err, "memory_map[1].colour")


def test_unknown_kernel_key_is_named(config_error):
    assert_path(config_error(edit("  struct_page_bytes: 64", "  struct_page_bytes: 64\n  bzimage: 1")),
                "kernel.bzimage")


def test_wrong_type_for_cpus_is_named(config_error):
    assert_path(config_error(edit("cpus: 1", "cpus: two")), "machine.cpus")


def test_boolean_where_a_number_is_expected_is_rejected(config_error):
    assert_path(config_error(edit("hz: 100", "hz: true")), "clock.hz")


def test_bad_size_of_a_memory_map_entry_is_named(config_error):
    err = config_error(edit("{start: 0x000a0000, end: 0x000c0000, type: mmio",
                            "{start: 0x000a0000, size: lots, type: mmio"))
    assert_path(err, "memory_map[3].size")


def test_unknown_region_type_is_named(config_error):
    err = config_error(edit("{start: 0x0009f000, end: 0x000a0000, type: reserved}",
                            "{start: 0x0009f000, end: 0x000a0000, type: flash}"))
    assert_path(err, "memory_map[2].type")


def test_region_with_both_size_and_end_is_rejected(config_error):
    err = config_error(edit("{start: 0x0009f000, end: 0x000a0000, type: reserved}",
                            "{start: 0x0009f000, end: 0x000a0000, size: 4K, type: reserved}"))
    assert_path(err, "memory_map[2]")


def test_ram_that_is_not_page_aligned_is_rejected(config_error):
    err = config_error(edit("{start: 0x00001000, end: 0x0009f000, type: ram}",
                            "{start: 0x00001000, end: 0x0009f800, type: ram}"))
    assert_path(err, "memory_map[1]")


def test_memory_map_that_is_not_a_list_is_rejected(config_error):
    text = SMALL[:SMALL.index("memory_map:")] + "memory_map: 64M\n" + SMALL[SMALL.index("pci:"):]
    assert_path(config_error(text), "memory_map")


def test_missing_numa_section_is_named(config_error):
    text = SMALL[:SMALL.index("numa:")] + SMALL[SMALL.index("hotplug:"):]
    assert_path(config_error(text), "numa")


# --- overlaps and sizes ---------------------------------------------------------------

def test_overlapping_memory_map_ranges_name_the_later_one_and_the_other(config_error):
    err = config_error(edit("{start: 0x000f0000, end: 0x00100000, type: rom",
                            "{start: 0x000b0000, end: 0x00100000, type: rom"))
    assert_path(err, "memory_map[4]")
    assert "memory_map[3]" in err.message, f"expected the message to name memory_map[3], got {err.message!r}"


def test_ram_overlapping_ram_is_rejected(config_error):
    err = config_error(edit("{start: 0x00100000, end: 0x04000000, type: ram}",
                            "{start: 0x00090000, end: 0x04000000, type: ram}"))
    assert_path(err, "memory_map[5]")


def test_ram_smaller_than_the_kernel_reserve_is_rejected(config_error):
    # 632K + 11M of RAM against 1M low memory + 8M image + memmap + 4M for the allocator
    text = edit("image_base: 16M", "image_base: 2M")
    text = edit("{start: 0x00100000, end: 0x04000000, type: ram}",
                "{start: 0x00100000, end: 0x00c00000, type: ram}", text)
    assert_path(config_error(text), "memory_map")


def test_ram_just_large_enough_for_the_kernel_reserve_is_accepted(config_from_yaml):
    # 632K + 15M of RAM: 1M + 8M + 236K memmap + 4M fits
    text = edit("image_base: 16M", "image_base: 2M")
    text = edit("{start: 0x00100000, end: 0x04000000, type: ram}",
                "{start: 0x00100000, end: 0x01000000, type: ram}", text)
    config_from_yaml(text)


def test_kernel_image_outside_ram_is_rejected(config_error):
    assert_path(config_error(edit("image_base: 16M", "image_base: 60M")), "kernel.image_base")


def test_unaligned_kernel_image_is_rejected(config_error):
    assert_path(config_error(edit("image_size: 8M", "image_size: 0x800100")), "kernel.image_size")


def test_pci_window_overlapping_ram_is_rejected(config_error):
    err = config_error(edit("{start: 0xc0000000, end: 0xfec00000}", "{start: 0x03000000, end: 0xfec00000}"))
    assert_path(err, "pci.windows[1]")


def test_hotplug_block_size_must_be_a_power_of_two(config_error):
    assert_path(config_error(edit("block_size: 128M", "block_size: 96M")), "hotplug.block_size")


def test_swap_area_listed_twice_is_rejected(config_error):
    text = edit("  - {name: /dev/vdb, size: 128M}\n",
                "  - {name: /dev/vdb, size: 128M}\n  - {name: /dev/vdb, size: 64M}\n")
    assert_path(config_error(text), "swap[1].name")


def test_swap_area_of_one_page_is_rejected(config_error):
    assert_path(config_error(edit("{name: /dev/vdb, size: 128M}", "{name: /dev/vdb, size: 4K}")),
                "swap[0].size")


# --- NUMA nodes -----------------------------------------------------------------------

NODE = "    - {id: 0, start: 0, end: 64M, cpus: [0]}"


def test_node_range_that_leaves_ram_outside_every_node_is_rejected(config_error):
    assert_path(config_error(edit(NODE, "    - {id: 0, start: 0, end: 32M, cpus: [0]}")), "numa.nodes")


def test_empty_node_range_is_rejected(config_error):
    assert_path(config_error(edit(NODE, "    - {id: 0, start: 64M, end: 32M, cpus: [0]}")), "numa.nodes[0]")


def test_overlapping_node_ranges_are_rejected(config_error):
    text = edit(NODE, "    - {id: 0, start: 0, end: 48M, cpus: [0]}\n"
                      "    - {id: 1, start: 32M, end: 64M}")
    assert_path(config_error(text), "numa.nodes[1]")


def test_nodes_numbered_out_of_order_are_rejected(config_error):
    text = edit(NODE, "    - {id: 0, start: 0, end: 32M, cpus: [0]}\n"
                      "    - {id: 2, start: 32M, end: 64M}")
    assert_path(config_error(text), "numa.nodes[1].id")


def test_node_naming_a_cpu_the_machine_lacks_is_rejected(config_error):
    assert_path(config_error(edit(NODE, "    - {id: 0, start: 0, end: 64M, cpus: [3]}")),
                "numa.nodes[0].cpus[0]")


def test_cpu_claimed_by_two_nodes_is_rejected(config_error):
    text = edit(NODE, "    - {id: 0, start: 0, end: 32M, cpus: [0]}\n"
                      "    - {id: 1, start: 32M, end: 64M, cpus: [0]}")
    assert_path(config_error(text), "numa.nodes[1].cpus[0]")


def test_distance_table_of_the_wrong_shape_is_rejected(config_error):
    text = edit("hotplug:", "  distance: [[10, 20]]\n\nhotplug:")
    assert_path(config_error(text), "numa.distance")


def test_two_node_variant_splits_ram_between_nodes(machine_from_yaml, invariants):
    text = edit("cpus: 1", "cpus: 2")
    text = edit(NODE, "    - {id: 0, start: 0, end: 32M, cpus: [0]}\n"
                      "    - {id: 1, start: 32M, end: 64M, cpus: [1]}", text)
    m = machine_from_yaml(text)
    invariants(m)
    present = [sum(z.present_pages for z in zones) for zones in m.node_zones]
    # node 0: 158 pages below 640K + (32M - 1M) / 4K; node 1: 32M / 4K
    assert present == [158 + 7936, 8192], f"expected [8094, 8192] present pages, got {present}"


def test_node_boundary_inside_a_2m_pageblock_is_refused_before_boot(config_from_yaml):
    # 33M splits the pageblock 32M-34M between two nodes' zones
    text = edit("cpus: 1", "cpus: 2")
    text = edit(NODE, "    - {id: 0, start: 0, end: 33M, cpus: [0]}\n"
                      "    - {id: 1, start: 33M, end: 64M, cpus: [1]}", text)
    with pytest.raises(ConfigError) as info:
        config_from_yaml(text)
    assert_path(info.value, "numa.nodes[0].end")
    assert "2 MiB" in info.value.message, f"expected the alignment named, got {info.value.message!r}"


# --- sysctl values, checked against the tunable table before boot ----------------------

def test_unknown_sysctl_is_named(config_error):
    assert_path(config_error(SMALL + "sysctl: {swapiness: 10}\n"), "sysctl.swapiness")


def test_out_of_range_sysctl_is_refused_before_boot(config_from_yaml):
    with pytest.raises(ConfigError) as info:
        config_from_yaml(SMALL + "sysctl: {watermark_scale_factor: 0}\n")
    assert_path(info.value, "sysctl.watermark_scale_factor")


def test_lowmem_reserve_ratio_with_the_wrong_count_is_rejected(config_from_yaml):
    with pytest.raises(ConfigError) as info:
        config_from_yaml(SMALL + "sysctl: {lowmem_reserve_ratio: [256, 256, 32]}\n")
    assert_path(info.value, "sysctl.lowmem_reserve_ratio")


def test_sysctl_given_in_the_config_is_in_force_at_boot(machine_from_yaml):
    m = machine_from_yaml(SMALL + "sysctl: {min_free_kbytes: 4096, watermark_scale_factor: 100}\n")
    assert m.sysctl_read("min_free_kbytes") == "4096\n"
    assert m.sysctl_read("watermark_scale_factor") == "100\n"


# --- files ----------------------------------------------------------------------------

def test_missing_file_is_a_config_error_naming_the_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load(path)
    assert_path(info.value, str(path))


def test_invalid_yaml_is_a_config_error_with_its_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("machine:\n  name: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert_path(info.value, str(path))
    assert "line" in info.value.message, f"expected a line number, got {info.value.message!r}"


def test_mmio_region_straddling_a_pci_window_is_refused(config_from_yaml):
    text = edit("  - {start: 0xfec00000, size: 1K,        type: mmio, name: IOAPIC 0}",
                "  - {start: 0xbfff0000, size: 128K,      type: mmio, name: straddler}")
    with pytest.raises(ConfigError) as info:
        config_from_yaml(text)
    assert "straddles" in info.value.message, info.value.message
