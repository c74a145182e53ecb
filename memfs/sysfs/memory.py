"""devices/system/memory: the memory hot-plug ABI (drivers/base/memory.c).

Top level: `block_size_bytes` (hex, no 0x), `auto_online_blocks`, `probe`
(write a block-aligned physical address), `soft_offline_page` and
`hard_offline_page` (write a physical address). One `memoryN` folder per
present block (N decimal): `online`, `state`, `phys_index` (8 hex digits),
`phys_device`, `removable`, `valid_zones` and a `nodeM` link.
"""
from __future__ import annotations

from engine.errors import InvalidArgument


def parse_address(text: str, what: str) -> int:
    """kstrtoull with base 0: 0x hex, a leading 0 octal, else decimal; one newline allowed."""
    t = text[:-1] if text.endswith("\n") else text
    try:
        if t[:2].lower() == "0x":
            return int(t[2:], 16)
        if len(t) > 1 and t[0] == "0":
            return int(t[1:], 8)
        if not (t.isascii() and t.isdigit()):
            raise ValueError
        return int(t)
    except ValueError:
        raise InvalidArgument(f"{what}: {t!r} is not a physical address (0x hex or decimal)") \
            from None


def show_block_size(m) -> str:
    return f"{m.hotplug_view()['block_size']:x}\n"


def show_auto_online(m) -> str:
    return m.hotplug_view()["auto_online"] + "\n"


def store_auto_online(m, text: str) -> None:
    m.set_auto_online(text.strip())


def store_probe(m, text: str) -> None:
    m.memory_probe(parse_address(text, "probe"))


def store_hard_offline(m, text: str) -> None:
    m.offline_page(parse_address(text, "hard_offline_page"), hard=True)


def store_soft_offline(m, text: str) -> None:
    m.offline_page(parse_address(text, "soft_offline_page"), hard=False)


def block_names(m) -> list[str]:
    return [f"memory{i}" for i in m.hotplug_view()["blocks"]]


def show_state(m, index: int) -> str:
    return ("online" if m.memory_block_view(index)["online"] else "offline") + "\n"


def show_online(m, index: int) -> str:
    return ("1" if m.memory_block_view(index)["online"] else "0") + "\n"


def store_state(m, index: int, text: str) -> None:
    how = text[:-1] if text.endswith("\n") else text     # sysfs_streq: one newline at most
    if how in ("0", "1"):                  # state takes names only; online takes 0/1
        raise InvalidArgument(f"memory{index}/state: write online, online_kernel, "
                              f"online_movable or offline (0/1 go to memory{index}/online)")
    m.memory_block_set(index, how)


def store_online(m, index: int, text: str) -> None:
    t = text.strip().lower()
    truth = {"1": "1", "y": "1", "yes": "1", "on": "1", "true": "1",
             "0": "0", "n": "0", "no": "0", "off": "0", "false": "0"}.get(t)
    if truth is None:
        raise InvalidArgument(f"memory{index}/online: write 1 or 0, not {text.strip()!r}")
    m.memory_block_set(index, truth)


def show_phys_index(m, index: int) -> str:
    return f"{index:08x}\n"


def show_valid_zones(m, index: int) -> str:
    return m.memory_block_view(index)["valid_zones"] + "\n"


def node_link(m, index: int) -> str | None:
    info = m.memory_block_view(index)
    return None if info is None else f"../../node/node{info['node']}"
