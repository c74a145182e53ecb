"""Tunables (sys/vm/*): the table type, and the collection of every module's rows.

Each knob is declared beside the code that reads it (as Linux keeps
vmscan_sysctl_table in vmscan.c): a Tunable row with its default and bounds.
This module only defines the row and gathers the tables; Machine holds the
current values and re-applies them when one changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Tunable:
    name: str
    default: object            # int, tuple of ints (array knob), or None = computed at boot
    lo: int
    hi: int
    help: str
    length: int | None = None  # number of values of an array knob
    check: Callable[[int], bool] | None = None
    check_text: str = ""
    write_only: bool = False   # an action, not a setting (drop_caches): mode 0200, nothing to read

    def parse(self, text: str):
        """Text written to the knob -> value; ValueError with a human reason."""
        words = text.split()
        if self.length is None:
            if len(words) != 1:
                raise ValueError(f"{self.name} takes one integer, got {text.strip()!r}")
            return self.validate(_int(self.name, words[0]))
        if not 1 <= len(words) <= self.length:
            raise ValueError(f"{self.name} takes 1 to {self.length} integers, got {len(words)}")
        return self.validate(tuple(_int(self.name, w) for w in words))

    def validate(self, value):
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{self.name}: expected an integer, got {v!r}")
            if not self.lo <= v <= self.hi:
                raise ValueError(f"{self.name}: {v} is out of range [{self.lo}, {self.hi}]")
            if self.check and not self.check(v):
                raise ValueError(f"{self.name}: {v} is not allowed ({self.check_text})")
        return value

    def format(self, value) -> str:
        if isinstance(value, tuple):
            return "\t".join(str(v) for v in value) + "\n"
        return f"{value}\n"


def _int(name: str, word: str) -> int:
    try:
        return int(word, 10)
    except ValueError:
        raise ValueError(f"{name}: {word!r} is not a decimal integer") from None


def all_tunables() -> tuple[Tunable, ...]:
    from .pmm.watermarks import TUNABLES as pmm
    from .commit import TUNABLES as commit
    from .reclaim.vmscan import TUNABLES as vmscan
    from .reclaim.compaction import TUNABLES as compaction
    return pmm + commit + vmscan + compaction
