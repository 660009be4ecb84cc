"""Freed memory goes back to the system: glibc keeps the holes a burst leaves in its
heap, and ``malloc_trim`` returns them (what the server does every ``trim_interval``)."""

from __future__ import annotations

import os
import sys

import pytest

from replyhq_trio.transport._memory import malloc_trim

PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc: Linux only")
def test_trimming_returns_the_holes_a_burst_left() -> None:
    trim = malloc_trim()
    assert trim is not None, "glibc's malloc_trim is missing"
    trim()
    before = _rss()
    # 96 MiB in 64 KiB blocks (from the heap, not mapped on their own), one in fifty kept:
    # the survivors pin the heap, so freeing the rest leaves holes glibc does not return.
    burst = [bytearray(64 * 1024) for _ in range(1536)]
    for block in burst:
        block[::PAGE] = b"x" * len(block[::PAGE])  # touch every page
    survivors = burst[::50]
    del burst, block
    held = _rss()
    assert held - before > 80 * 1024 * 1024
    trim()
    after = _rss()
    assert after - before < 24 * 1024 * 1024, (before, held, after)
    assert len(survivors) == 31
