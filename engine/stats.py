"""Event counters, named as in /proc/vmstat, counted where the event happens.

VmEvent lists the machine-wide event counters in the kernel's vmstat_text
order; ZoneStat the per-zone NUMA and allocation counters (summed over zones
when vmstat prints them). A counter that no mechanism drives yet is still
listed (and reads 0), as a kernel without that activity shows it.
"""
from array import array
from enum import IntEnum


class ZoneStat(IntEnum):
    PGALLOC = 0          # pages allocated from this zone
    NUMA_HIT = 1         # allocated on the node that was asked for
    NUMA_MISS = 2        # allocated here although another node was asked for
    NUMA_FOREIGN = 3     # asked for here, allocated on another node
    NUMA_INTERLEAVE = 4
    NUMA_LOCAL = 5       # allocated on the node of the allocating CPU
    NUMA_OTHER = 6       # allocated on another node than the allocating CPU's
    ALLOCSTALL = 7       # direct reclaim entered with this as highest zone


NUMA_EVENT_NAMES = ("numa_hit", "numa_miss", "numa_foreign", "numa_interleave",
                    "numa_local", "numa_other")


class PageStat(IntEnum):
    """Per-zone page gauges kept by the VMM (Linux's NR_* zone and node stat items)."""
    ANON = 0              # nr_anon_pages: anonymous pages mapped by processes
    FILE = 1              # nr_file_pages: page cache, shmem included
    SHMEM = 2             # nr_shmem
    FILE_MAPPED = 3       # nr_mapped: page-cache pages mapped by at least one PTE
    PAGETABLE = 4         # nr_page_table_pages
    FILE_DIRTY = 5        # nr_dirty
    INACTIVE_ANON = 6
    ACTIVE_ANON = 7
    INACTIVE_FILE = 8
    ACTIVE_FILE = 9
    SWAPCACHE = 10        # nr_swapcached: frames in the swap cache
    WS_REFAULT_ANON = 11  # workingset_refault_anon: evicted anon pages read back (events)
    WS_REFAULT_FILE = 12
    WS_ACTIVATE_ANON = 13  # ... of which refaulted soon enough to go straight to the active list
    WS_ACTIVATE_FILE = 14
    VMSCAN_WRITE = 15     # nr_vmscan_write: pages reclaim wrote out (events)
    WRITTEN = 16          # nr_written: pages written back (events)
    ANON_THPS = 17        # nr_anon_transparent_hugepages: PMD-mapped anonymous huge pages


def page_gauges() -> array:
    return array("q", [0]) * len(PageStat)


def zone_counters() -> array:
    return array("Q", [0]) * len(ZoneStat)


# The event counters, in vmstat order. pgalloc_*, allocstall_* and pgskip_*
# are per zone and rendered from ZoneStat; they are not listed here.
VM_EVENT_NAMES = """
pgpgin pgpgout pswpin pswpout
pgfree pgactivate pgdeactivate pglazyfree pgfault pgmajfault pglazyfreed pgrefill pgreuse
pgsteal_kswapd pgsteal_direct pgsteal_khugepaged pgscan_kswapd pgscan_direct pgscan_khugepaged
pgscan_direct_throttle pgscan_anon pgscan_file pgsteal_anon pgsteal_file zone_reclaim_failed
pginodesteal slabs_scanned kswapd_inodesteal kswapd_low_wmark_hit_quickly
kswapd_high_wmark_hit_quickly pageoutrun pgrotated drop_pagecache drop_slab oom_kill
numa_pte_updates numa_huge_pte_updates numa_hint_faults numa_hint_faults_local
numa_pages_migrated pgmigrate_success pgmigrate_fail thp_migration_success thp_migration_fail
thp_migration_split compact_migrate_scanned compact_free_scanned compact_isolated compact_stall
compact_fail compact_success compact_daemon_wake compact_daemon_migrate_scanned
compact_daemon_free_scanned htlb_buddy_alloc_success htlb_buddy_alloc_fail
unevictable_pgs_culled unevictable_pgs_scanned unevictable_pgs_rescued unevictable_pgs_mlocked
unevictable_pgs_munlocked unevictable_pgs_cleared unevictable_pgs_stranded thp_fault_alloc
thp_fault_fallback thp_fault_fallback_charge thp_collapse_alloc thp_collapse_alloc_failed
thp_file_alloc thp_file_fallback thp_file_fallback_charge thp_file_mapped thp_split_page
thp_split_page_failed thp_deferred_split_page thp_underused_split_page thp_split_pmd
thp_scan_exceed_none_pte thp_scan_exceed_swap_pte thp_scan_exceed_share_pte thp_split_pud
thp_zero_page_alloc thp_zero_page_alloc_failed thp_swpout thp_swpout_fallback balloon_inflate
balloon_deflate balloon_migrate swap_ra swap_ra_hit swpin_zero swpout_zero ksm_swpin_copy
cow_ksm zswpin zswpout zswpwb direct_map_level2_splits direct_map_level3_splits
""".split()

VmEvent = IntEnum("VmEvent", [(n.upper(), i) for i, n in enumerate(VM_EVENT_NAMES)])


def event_counters() -> array:
    return array("Q", [0]) * len(VM_EVENT_NAMES)
