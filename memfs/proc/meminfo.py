"""/proc/meminfo: the machine's MemInfo in Linux 6.x x86-64 field order.

The engine counts (Machine.meminfo); this module only converts pages to kB
and lays the lines out as fs/proc/meminfo.c, mm/hugetlb.c and
arch/x86/mm/pat/set_memory.c print them.
"""
from __future__ import annotations

from engine.units import pages_to_kb
from engine.views import MemInfo

from ..textfmt import kb_line, wide_count_line, wide_kb_line

VMALLOC_TOTAL_KB = 34359738367      # x86-64 vmalloc area with 4-level paging


def show_meminfo(m) -> str:
    info = m.meminfo()
    return (main_block(info) + swap_block(info) + usage_block(info) + kernel_block(info)
            + hugepage_block(info) + direct_map_block(info))


def main_block(i: MemInfo) -> str:
    rows = (("MemTotal", i.total), ("MemFree", i.free), ("MemAvailable", i.available),
            ("Buffers", i.buffers), ("Cached", i.cached), ("SwapCached", i.swap_cached),
            ("Active", i.active_anon + i.active_file),
            ("Inactive", i.inactive_anon + i.inactive_file),
            ("Active(anon)", i.active_anon), ("Inactive(anon)", i.inactive_anon),
            ("Active(file)", i.active_file), ("Inactive(file)", i.inactive_file),
            ("Unevictable", i.unevictable), ("Mlocked", i.mlocked))
    return "".join(kb_line(key, pages_to_kb(pages)) for key, pages in rows)


def swap_block(i: MemInfo) -> str:
    rows = (("SwapTotal", i.swap_total), ("SwapFree", i.swap_free),
            ("Zswap", i.zswap), ("Zswapped", i.zswapped))
    return "".join(kb_line(key, pages_to_kb(pages)) for key, pages in rows)


def usage_block(i: MemInfo) -> str:
    """Dirty … WritebackTmp: page cache state, slab, stacks, page tables."""
    rows = (("Dirty", pages_to_kb(i.dirty)), ("Writeback", pages_to_kb(i.writeback)),
            ("AnonPages", pages_to_kb(i.anon_pages)), ("Mapped", pages_to_kb(i.mapped)),
            ("Shmem", pages_to_kb(i.shmem)), ("KReclaimable", pages_to_kb(i.kreclaimable)),
            ("Slab", pages_to_kb(i.slab_reclaimable + i.slab_unreclaimable)),
            ("SReclaimable", pages_to_kb(i.slab_reclaimable)),
            ("SUnreclaim", pages_to_kb(i.slab_unreclaimable)),
            ("KernelStack", i.kernel_stack_kb), ("PageTables", pages_to_kb(i.page_tables)),
            ("SecPageTables", pages_to_kb(i.sec_page_tables)),
            ("NFS_Unstable", 0), ("Bounce", 0), ("WritebackTmp", pages_to_kb(i.writeback_tmp)))
    return "".join(kb_line(key, kb) for key, kb in rows)


def kernel_block(i: MemInfo) -> str:
    """CommitLimit … Balloon: overcommit, vmalloc, per-cpu, poison, THP, balloon."""
    head = (("CommitLimit", pages_to_kb(i.commit_limit)), ("Committed_AS", pages_to_kb(i.committed_as)),
            ("VmallocTotal", VMALLOC_TOTAL_KB), ("VmallocUsed", pages_to_kb(i.vmalloc_used)),
            ("VmallocChunk", 0), ("Percpu", i.percpu_kb))
    tail = (("AnonHugePages", i.anon_huge), ("ShmemHugePages", i.shmem_huge),
            ("ShmemPmdMapped", i.shmem_pmd_mapped), ("FileHugePages", i.file_huge),
            ("FilePmdMapped", i.file_pmd_mapped), ("Balloon", i.balloon))
    return ("".join(kb_line(key, kb) for key, kb in head)
            + wide_kb_line("HardwareCorrupted", pages_to_kb(i.hardware_corrupted))
            + "".join(kb_line(key, pages_to_kb(pages)) for key, pages in tail))


def hugepage_block(i: MemInfo) -> str:
    counts = (("HugePages_Total", i.hugepages_total), ("HugePages_Free", i.hugepages_free),
              ("HugePages_Rsvd", i.hugepages_rsvd), ("HugePages_Surp", i.hugepages_surp))
    return ("".join(wide_count_line(key, n) for key, n in counts)
            + kb_line("Hugepagesize", i.hugepage_size_kb) + kb_line("Hugetlb", i.hugetlb_kb))


def direct_map_block(i: MemInfo) -> str:
    """DirectMap4k and 2M always; 1G only when the direct map uses gigabyte pages."""
    text = kb_line("DirectMap4k", i.directmap_4k_kb) + kb_line("DirectMap2M", i.directmap_2m_kb)
    if i.directmap_1g_kb:
        text += kb_line("DirectMap1G", i.directmap_1g_kb)
    return text
