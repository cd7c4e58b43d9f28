"""Random slices from chutes.core.unique: of the asked size, from the OS's random bytes, never handed out twice
(across pages, between threads, across a fork)."""

from __future__ import annotations

import os
import threading

import pytest

from chutes.core.unique import RandomSlices


def test_slices_have_the_asked_size_and_do_not_repeat_across_pages() -> None:
    source = RandomSlices(12, page=64)  # a small page: many refills in this test
    drawn = [source.take() for _ in range(5000)]
    assert {len(d) for d in drawn} == {12}
    assert len(set(drawn)) == len(drawn)


def test_threads_are_never_handed_the_same_slice() -> None:
    source = RandomSlices(8, page=128)
    out: list[list[bytes]] = [[] for _ in range(4)]

    def draw(into: list[bytes]) -> None:
        into.extend(source.take() for _ in range(3000))

    threads = [threading.Thread(target=draw, args=(o,)) for o in out]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [d for o in out for d in o]
    assert len(set(every)) == len(every) == 12000


def test_a_forked_child_does_not_repeat_its_parents_slices() -> None:
    source = RandomSlices(16)
    source.take()  # a page is read: the child inherits the rest of it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next slice and leave at once
        os.write(write, source.take())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 16 and child != source.take()


def test_a_size_outside_the_page_is_refused() -> None:
    with pytest.raises(ValueError, match="size must be between 1 and page"):
        RandomSlices(0)
    with pytest.raises(ValueError, match="size must be between 1 and page"):
        RandomSlices(65, page=64)
