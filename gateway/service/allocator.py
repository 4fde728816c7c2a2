"""glibc's allocator, held steady for streams of 256 KiB pieces.

Every piece of an image stream is a fresh 256 KiB ``bytes`` object. With glibc's default
(dynamic) thresholds such a block sits right at the line between the heap and a private
mapping, and freeing it trims the heap back, so the next one faults fresh zeroed pages in:
measured, half of a download's CPU went to page faults and copies under uvloop. Fixed
thresholds above the piece size keep the blocks on the heap and the heap's top in place;
peak RSS did not move (48 MiB either way, 1 GiB each way). See docs/performance.md.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger("ims_gateway")

# mallopt(3) parameters, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1024 * 1024  # blocks below this come from the heap (a stream piece is 256 KiB)
TRIM_THRESHOLD = 4 * 1024 * 1024  # free memory kept at the heap's top before it is given back
# An operator's own tuning (glibc reads these at start) wins over ours.
OPERATOR_TUNING = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


def hold_steady(environ: os._Environ[str] | dict[str, str] = os.environ) -> str:
    """Set the fixed thresholds when the allocator is glibc's and nobody tuned it; say what was done."""
    if platform.libc_ver()[0] != "glibc":
        return "left alone: not glibc"
    if tuned := [name for name in OPERATOR_TUNING if name in environ]:
        return f"left alone: {', '.join(tuned)} set"
    libc = ctypes.CDLL(None)
    if not (libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return "left alone: mallopt refused"
    return f"mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB"


__all__ = ["hold_steady"]
