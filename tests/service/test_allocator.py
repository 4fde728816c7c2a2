"""The allocator is held steady for stream pieces: they stay on the heap, no mapping each."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gateway.service import allocator

# A child process allocates a stream-sized block and says where glibc put it: on the
# heap, or in a mapping of its own (faulted in afresh and unmapped again each time).
PROBE = """
import ctypes, sys
from gateway.service import allocator
if sys.argv[1] == "tuned":
    print(allocator.hold_steady({}))
block = bytearray(512 * 1024)
address = ctypes.addressof((ctypes.c_char * len(block)).from_buffer(block))
with open("/proc/self/maps") as maps:
    heap = next(line.split()[0] for line in maps if line.rstrip().endswith("[heap]"))
low, high = (int(end, 16) for end in heap.split("-"))
print("heap" if low <= address < high else "own mapping")
"""

glibc_only = pytest.mark.skipif(allocator.platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")


def probe(mode: str) -> list[str]:
    # glibc's own defaults, whatever this shell tuned.
    env = {k: v for k, v in os.environ.items() if k not in allocator.OPERATOR_TUNING}
    result = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60, check=True, env=env)
    return result.stdout.split("\n")[:-1]


@glibc_only
def test_a_stream_piece_stays_on_the_heap_once_held_steady() -> None:
    assert probe("tuned") == ["mmap threshold 1 MiB, trim threshold 4 MiB", "heap"]
    # glibc's default: the same block gets a mapping of its own, faulted in afresh each time.
    assert probe("default") == ["own mapping"]


def test_an_operators_own_tuning_wins() -> None:
    for name in allocator.OPERATOR_TUNING:
        assert allocator.hold_steady({name: "1"}) == f"left alone: {name} set"


def test_other_allocators_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert allocator.hold_steady({}) == "left alone: not glibc"


@glibc_only
def test_a_refused_setting_is_said(monkeypatch: pytest.MonkeyPatch) -> None:
    class Refusing:
        def mallopt(self, parameter: int, value: int) -> int:
            return 0

    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: Refusing())
    assert allocator.hold_steady({}) == "left alone: mallopt refused"
