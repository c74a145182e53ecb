"""/proc/vmstat: every counter the engine keeps, `name value`, in kernel order.

Machine.vmstat already returns the pairs in mm/vmstat.c's order (zone
gauges, NUMA events, node gauges, dirty thresholds, events, nr_unstable);
this module only joins them with exactly one space.
"""
from __future__ import annotations

from ..textfmt import name_value_lines


def show_vmstat(m) -> str:
    return name_value_lines(m.vmstat())
