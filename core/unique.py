"""Unique random labels (signature nonces, invocation ids) without a system call each.

``os.urandom`` is a ``getrandom`` system call: on the gateway's hot path, two per call (a nonce and an
invocation id). So the operating system's random bytes are read a page at a time and handed out in slices:
one system call per few hundred labels, and every label as unpredictable as ``os.urandom`` itself (a seeded
pseudo-random generator would be cheaper still, but its values can be predicted from a few hundred seen ones;
nonces and invocation ids should not be). Slices wait in a deque, whose ``popleft`` is atomic, so threads
never share one; a child made by ``fork`` drops the slices it inherited, so parent and child never hand out
the same bytes.
"""

from __future__ import annotations

import os
from binascii import hexlify
from collections import deque
from typing import Protocol

try:  # the C form of ``RandomHex`` (core/_unique.c), built by the install where a compiler is
    from chutes.core._unique import RandomHex as _NativeRandomHex
except ImportError:  # not built: the pure-Python form serves
    _NativeRandomHex = None  # type: ignore[assignment,misc]
NATIVE = _NativeRandomHex is not None  # whether ``random_hex`` gives the C form here


class RandomSlices:
    """``take()``: ``size`` fresh bytes from ``os.urandom``, read about ``page`` bytes at a time."""

    __slots__ = ("_page", "_ready", "_size")

    def __init__(self, size: int, page: int = 4096) -> None:
        if not 0 < size <= page:
            raise ValueError(f"size must be between 1 and page ({page}), not {size}")
        self._size = size
        self._page = page - page % size
        self._ready: deque[bytes] = deque()
        os.register_at_fork(after_in_child=self.discard)

    def discard(self) -> None:
        """Drop the slices read so far: the next one comes from a fresh page (a forked child's first act)."""
        self._ready.clear()

    def take(self) -> bytes:
        """The next ``size`` random bytes (never handed out before, in this process or another)."""
        while True:
            try:
                return self._ready.popleft()
            except IndexError:
                page, size = os.urandom(self._page), self._size
                self._ready.extend([page[i : i + size] for i in range(0, len(page), size)])


class HexLabels(Protocol):
    """Random labels as lower-case hex digits (two per random byte)."""

    def take_str(self) -> str: ...

    def take_bytes(self) -> bytes: ...

    def discard(self) -> None: ...


class RandomHex:
    """``RandomSlices`` handed out as hex digits: the pure-Python form of core/_unique.c's ``RandomHex``."""

    __slots__ = ("_slices",)

    def __init__(self, size: int, page: int = 4096) -> None:
        self._slices = RandomSlices(size, page)

    def take_str(self) -> str:
        """The next label: ``2 * size`` hex digits."""
        return self._slices.take().hex()

    def take_bytes(self) -> bytes:
        """The next label as bytes."""
        return hexlify(self._slices.take())

    def discard(self) -> None:
        """Drop the slices read so far (the next label comes from a fresh page)."""
        self._slices.discard()


def random_hex(size: int, page: int = 4096) -> HexLabels:
    """A source of random hex labels of ``size`` bytes: in C where core/_unique.c was built (a label then costs
    no Python call of its own; the gateway draws two per call), else ``RandomHex``. Either way a forked child
    never hands out its parent's labels."""
    if _NativeRandomHex is None:
        return RandomHex(size, page)
    source = _NativeRandomHex(size, page)
    os.register_at_fork(after_in_child=source.discard)
    return source
