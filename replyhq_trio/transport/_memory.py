"""Giving freed memory back to the system.

CPython returns what it frees to the C allocator, and glibc's keeps most of it: after a
burst (a flood of large or hostile messages, thousands of short connections) a process's
resident memory stays at its high-water mark although Python holds a fraction of it.
``malloc_trim`` hands the free pages back. It is cheap when there is little to give back
(a few milliseconds for hundreds of megabytes), so the server calls it now and then.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from typing import NoReturn

import trio

__all__ = ["give_back_memory", "malloc_trim"]

log = logging.getLogger("replyhq_trio.server")


def malloc_trim() -> Callable[[], None] | None:
    """glibc's ``malloc_trim(0)``, or None where there is none (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def call() -> None:
        trim(0)

    return call


async def give_back_memory(interval: float) -> NoReturn:
    """Every ``interval`` seconds, give the system back the memory freed meanwhile."""
    trim = malloc_trim()
    if trim is None:
        log.debug("no malloc_trim here: freed memory stays with the allocator")
        await trio.sleep_forever()
    while True:
        await trio.sleep(interval)
        trim()
