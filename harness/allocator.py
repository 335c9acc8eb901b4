"""Keep the memory torch frees for its next tensor instead of handing it back to the OS.

On a CPU, torch allocates tensors with the C library's `malloc`. glibc serves large blocks
(above its mmap threshold, a few MB once it has adapted) with fresh `mmap` calls and trims
the top of its heap whenever more than its trim threshold is free, so the activations of
every training step and the growing KV cache of every decoding step land on pages the
kernel has to fault in and zero again: on the 2-core machine of bench/RESULTS.md an
element-wise op on a fresh 6 MB activation took ten times as long inside a training step
as the same op on reused memory (torch profiler; another job shared the machine).
Raising both thresholds keeps freed blocks in the heap for reuse, as torch's CUDA
caching allocator does on a GPU; a process then holds on to its peak memory until it
exits, which the harness's short-lived commands can afford.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP_BYTES = 1 << 30
"""Blocks up to 1 GiB come from (and return to) the heap; larger ones are mmapped."""
OPT_OUT = "HARNESS_KEEP_FREED_MEMORY"
"""Set to 0 to leave the C library's allocator as it is."""


@functools.cache
def keep_freed_memory() -> bool:
    """Tune glibc's allocator for tensor-sized blocks, once per process. True when it
    applied; False where the C library is not glibc (macOS, musl), which is left as it is,
    and where $HARNESS_KEEP_FREED_MEMORY is 0."""
    if os.environ.get(OPT_OUT, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        # glibc's soname, opened directly: find_library would run ldconfig at every start.
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; glibc refuses values it cannot honour.
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES)
    )
