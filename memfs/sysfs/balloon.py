"""devices/virtio/balloon: the balloon device's host side (virtio-balloon).

`target` is the config space's num_pages (read-write, 4 KiB pages: the host
asks for that many), `actual` the pages the guest has put in the balloon,
`stats` the statistics the guest reports (tags 0-15, one `name value` line
each, bytes or counts as virtio defines them), `features` the feature bits
the device offers, `reported_pages` the free memory the last free page report
handed to the host.
"""
from __future__ import annotations

from engine.errors import InvalidArgument

from ..textfmt import name_value_lines

FEATURES = "STATS_VQ DEFLATE_ON_OOM REPORTING\n"


def show_target(m) -> str:
    return f"{m.balloon_view()['target']}\n"


def store_target(m, text: str) -> None:
    t = text.strip()
    if not (t.isascii() and t.isdigit()):
        raise InvalidArgument(f"balloon/target: {t!r} is not a number of 4 KiB pages")
    m.balloon_set_target(int(t))


def show_actual(m) -> str:
    return f"{m.balloon_view()['actual']}\n"


def show_stats(m) -> str:
    return name_value_lines(m.balloon_view()["stats"])


def show_reported(m) -> str:
    return f"{m.balloon_view()['reported']}\n"
