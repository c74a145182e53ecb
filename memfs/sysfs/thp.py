"""kernel/mm/transparent_hugepage: the anonymous THP policy (mm/huge_memory.c sysfs).

`enabled` reads as the three modes with the one in force in brackets
(`always [madvise] never`) and takes one of them; `hpage_pmd_size` is the
size a PMD maps, in bytes.
"""
from __future__ import annotations

from engine.vmm.thp import HPAGE_SIZE, THP_MODES


def show_enabled(m) -> str:
    mode = m.thp_enabled()
    return " ".join(f"[{x}]" if x == mode else x for x in THP_MODES) + "\n"


def store_enabled(m, text: str) -> None:
    m.thp_set_enabled(text.strip())


def show_hpage_pmd_size(m) -> str:
    return f"{HPAGE_SIZE}\n"
