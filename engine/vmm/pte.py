"""The x86-64 page-table entry: bit layout, the states a page can be in, decoding.

Every entry is a 64-bit word laid out as the hardware and Linux lay it out
(arch/x86/include/asm/pgtable_types.h, pgtable_64.h).

Present (P = 1): hardware bits, Linux's use of the software-available bits.

    bit 0 P   1 RW   2 US   3 PWT   4 PCD   5 A (accessed)   6 D (dirty)
    bit 7 PAT (leaf) / PS (PMD, PUD)   8 G
    bit 9  SW1  SPECIAL    no page behind it to count: the shared zero page
    bit 10 SW2  UFFD_WP    (unused here)
    bit 11 SW3  SOFT_DIRTY written since soft-dirty tracking last cleared
    bits 12-51  PFN
    bits 52-58  ignored by the CPU, unused
    bit 63 NX   no-execute

Not present (P = 0): the rest of the word says why.

    all zero           none: never populated. The VMA says what a touch does:
                       demand-zero for anonymous memory, a read of the file
                       at vma offset for a file mapping (Linux has no file PTE
                       since 4.0; neither do we).
    bit 8 set          PROT_NONE: the page is there (P=0 only so that every
                       access traps); the PFN is stored inverted (L1TF).
    otherwise          a swap-style entry: type in bits 59-63, offset stored
                       inverted in bits 9-58. Types 0..MAX_SWAPFILES-1 are
                       swap areas; the types above are special (migration,
                       hwpoison, PTE marker), counted from the top as Linux does.

Upper levels (PGD, PUD, PMD) point at the next table with _PAGE_TABLE
(P RW US A D = 0x067) and the table's pfn.
"""
from __future__ import annotations

P = 1 << 0
RW = 1 << 1
US = 1 << 2
PWT = 1 << 3
PCD = 1 << 4
ACCESSED = 1 << 5
DIRTY = 1 << 6
PAT = 1 << 7
PSE = PAT                  # in a PMD (or PUD) entry: it maps a huge page itself
GLOBAL = 1 << 8
PROTNONE = GLOBAL          # with P clear
SPECIAL = 1 << 9
UFFD_WP = 1 << 10
SOFT_DIRTY = 1 << 11
NX = 1 << 63

PFN_SHIFT = 12
PFN_MASK = ((1 << 52) - 1) & ~((1 << 12) - 1)     # bits 12-51
MASK64 = (1 << 64) - 1

PAGE_TABLE = P | RW | US | ACCESSED | DIRTY       # what an upper-level entry carries

# Swap-style entries (pgtable_64.h): type in the top 5 bits, offset inverted below.
SWP_TYPE_BITS = 5
SWP_TYPE_SHIFT = 64 - SWP_TYPE_BITS                # 59
SWP_OFFSET_FIRST_BIT = 9
SWP_OFFSET_SHIFT = SWP_OFFSET_FIRST_BIT + SWP_TYPE_BITS    # 14
MAX_SWP_TYPES = 1 << SWP_TYPE_BITS                 # 32
# The special types, from the top down as Linux allocates them.
SWP_PTE_MARKER = MAX_SWP_TYPES - 1                 # 31
SWP_HWPOISON = MAX_SWP_TYPES - 2                   # 30
SWP_MIGRATION_WRITE = MAX_SWP_TYPES - 3            # 29
SWP_MIGRATION_READ_EXCLUSIVE = MAX_SWP_TYPES - 4   # 28
SWP_MIGRATION_READ = MAX_SWP_TYPES - 5             # 27
MAX_SWAPFILES = SWP_MIGRATION_READ                 # real swap areas are types 0..26

ENTRIES = 512
LEVEL_SHIFTS = (39, 30, 21, 12)                    # PGD, PUD, PMD, PTE index = bits above
LEVEL_NAMES = ("PGD", "PUD", "PMD", "PTE")


def pfn_of(e: int) -> int:
    """The frame of a present or PROT_NONE entry."""
    if e & P:
        return (e & PFN_MASK) >> PFN_SHIFT
    return ((~e & MASK64) & PFN_MASK) >> PFN_SHIFT


def with_pfn(e: int, pfn: int) -> int:
    """The same present or PROT_NONE entry pointing at another frame (page migration)."""
    bits = (pfn << PFN_SHIFT) & PFN_MASK
    if not e & P:
        bits = (~bits & MASK64) & PFN_MASK
    return (e & ~PFN_MASK) | bits


def is_present(e: int) -> bool:
    """A page is behind this entry (mapped, or PROT_NONE): Linux's pte_present()."""
    return bool(e & (P | PROTNONE))


def make_protnone(e: int) -> int:
    """A present entry made inaccessible: P cleared, bit 8 set, PFN inverted."""
    pfn_bits = e & PFN_MASK
    return (e & ~(P | PFN_MASK | GLOBAL)) | PROTNONE | ((~pfn_bits & MASK64) & PFN_MASK)


def swp_entry(swp_type: int, offset: int) -> int:
    return ((((~offset) << SWP_OFFSET_SHIFT) & MASK64) >> SWP_TYPE_BITS) | (swp_type << SWP_TYPE_SHIFT)


def swp_type(e: int) -> int:
    return e >> SWP_TYPE_SHIFT


def swp_offset(e: int) -> int:
    return (((~e) << SWP_TYPE_BITS) & MASK64) >> SWP_OFFSET_SHIFT


FLAG_NAMES = ((RW, "rw"), (US, "user"), (PWT, "pwt"), (PCD, "pcd"), (ACCESSED, "accessed"),
              (DIRTY, "dirty"), (SPECIAL, "special"), (SOFT_DIRTY, "soft-dirty"), (NX, "nx"))


def flag_words(e: int) -> list[str]:
    words = [name for bit, name in FLAG_NAMES if e & bit]
    if not e & RW:
        words.insert(0, "ro")
    return words


def decode(e: int) -> tuple[str, str]:
    """(state, detail) of an entry, for humans: the pte dump."""
    if e == 0:
        return "none", ""
    if e & P:
        return "present", f"pfn {pfn_of(e):#x}"
    if e & PROTNONE:
        return "protnone", f"pfn {pfn_of(e):#x}"
    t, off = swp_type(e), swp_offset(e)
    if t < MAX_SWAPFILES:
        return "swap", f"type {t} offset {off:#x}"
    names = {SWP_PTE_MARKER: "marker", SWP_HWPOISON: "hwpoison",
             SWP_MIGRATION_WRITE: "migration-write",
             SWP_MIGRATION_READ_EXCLUSIVE: "migration-read-exclusive",
             SWP_MIGRATION_READ: "migration-read"}
    return names[t], f"pfn {off:#x}" if t != SWP_PTE_MARKER else f"bits {off:#x}"


def index(va: int, level: int) -> int:
    return (va >> LEVEL_SHIFTS[level]) & (ENTRIES - 1)
