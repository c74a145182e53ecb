"""/proc/iomem and memfs's physmap: the tree of physical address resources.

iomem is Linux's layout (kernel/resource.c's r_show): two spaces of indent
per depth, start and inclusive end in lowercase hex of at least 8 digits,
` : `, the name. physmap is memfs's richer view of the same tree: the same
indentation with full 16-digit addresses, then each resource's kind,
cacheability, flags and name in columns under a header line.
"""
from __future__ import annotations

from engine.config import CACHE_TYPES
from engine.devices.iomem import Resource

from ..textfmt import hex_digits

IOMEM_MIN_DIGITS = 8
PHYSMAP_DIGITS = 16
INDENT_PER_DEPTH = 2
# physmap columns: an indented range (16 + 1 + 16 hex digits, up to five levels deep),
# then kind (`acpi_nvs`), cacheability (`write-combining`), flags (`hotplug,nonvolatile`).
RANGE_WIDTH = 2 * PHYSMAP_DIGITS + 1 + 5 * INDENT_PER_DEPTH
KIND_WIDTH = 8
CACHE_WIDTH = max(len(name) for name in CACHE_TYPES.values())
FLAGS_WIDTH = len("hotplug,nonvolatile")


def indent(depth: int) -> str:
    return " " * (INDENT_PER_DEPTH * depth)


def show_iomem(m) -> str:
    return "".join(iomem_line(depth, start, last, name) for depth, start, last, name in m.iomem())


def iomem_line(depth: int, start: int, last_byte: int, name: str) -> str:
    return (f"{indent(depth)}{hex_digits(start, IOMEM_MIN_DIGITS)}-"
            f"{hex_digits(last_byte, IOMEM_MIN_DIGITS)} : {name}\n")


def show_physmap(m) -> str:
    return physmap_row("start-end", "kind", "cache", "flags", "name") + "".join(
        physmap_line(depth, r) for depth, r in m.physmap_rows())


def physmap_line(depth: int, r: Resource) -> str:
    span = (f"{indent(depth)}{hex_digits(r.start, PHYSMAP_DIGITS)}-"
            f"{hex_digits(r.end - 1, PHYSMAP_DIGITS)}")
    return physmap_row(span, r.kind, CACHE_TYPES[r.cache], ",".join(r.flags) or "-", r.name)


def physmap_row(span: str, kind: str, cache: str, flags: str, name: str) -> str:
    return (f"{span:<{RANGE_WIDTH}} {kind:<{KIND_WIDTH}} {cache:<{CACHE_WIDTH}} "
            f"{flags:<{FLAGS_WIDTH}} {name}\n")
