"""Keeping CPU training's resident memory flat: freed heap memory back to the OS, oneDNN's shape cache capped.

With batches of varying shapes (length-grouped fine-tuning batches above all), glibc's malloc keeps the memory of
freed activations in its heaps, fragmented, so a process's resident memory climbs step after step although what is
live stays the same: on all-MiniLM-L6-v2 over 300 steps of random lengths, 0.8 GB grew to 1.8 GB, and one
`malloc_trim(0)` brought it to 0.6 GB. `release_free_memory()` is that call; the Trainer makes it every
`impl.release_memory_every` steps on CPU (the next step re-touches the pages it reuses: about a millisecond a
step at the default of 100). Elsewhere than glibc (macOS, musl) it does nothing.

The steady source of that fragmentation in plmkit's training is oneDNN's primitive cache. torch runs fp32 GELU on
CPU through oneDNN, which builds and caches one primitive per tensor shape, up to 1024 by default. Unpadded batches
(`layers.packing`) give nearly every step a new token count, so a new primitive (tens of KB in small blocks) joins
the cache every step and stays. Over 180 SST-2 steps the heap's free blocks grew from 1,500 to 4,400, and 400
steps without trimming peaked at 1.56 GB resident. Padded batches repeat a few dozen shapes and stop adding.
`bound_onednn_primitive_cache()` caps that cache before oneDNN's first use; the Trainer calls it on CPU. Capped at
16, the same 400 steps peaked at 1.14 GB with the heap flat; a shape outside the cache costs a rebuild of about
0.14 ms, some 0.1% of a step. Where oneDNN also runs the matmuls (`layers.linear`), the packed rows are rounded up
to a multiple, so an epoch has a bounded set of shapes, and the Trainer sizes the cache to hold them all instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

ONEDNN_CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> bool:
    """Return the C heap's free pages to the OS (glibc `malloc_trim(0)`); False where that is not available."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def bound_onednn_primitive_cache(capacity: int = 16) -> bool:
    """Cap oneDNN's primitive cache at `capacity` shapes (its `ONEDNN_PRIMITIVE_CACHE_CAPACITY`, read once, at its
    first use in the process) unless the user has set it. True when this call set it; it takes effect only if no
    oneDNN primitive has run in this process yet."""
    if ONEDNN_CACHE_ENV in os.environ or "DNNL_PRIMITIVE_CACHE_CAPACITY" in os.environ:
        return False
    os.environ[ONEDNN_CACHE_ENV] = str(capacity)
    return True
