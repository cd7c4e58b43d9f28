"""Random slices and hex labels from chutes.core.unique (and its C form, core/_unique.c): of the asked size,
from the OS's random bytes, never handed out twice (across pages, between threads, across a fork)."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from chutes.core.unique import RandomHex, RandomSlices, _NativeRandomHex, random_hex


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


def test_a_size_outside_the_page_is_refused() -> None:
    with pytest.raises(ValueError, match="size must be between 1 and page"):
        RandomSlices(0)
    with pytest.raises(ValueError, match="size must be between 1 and page"):
        RandomSlices(65, page=64)


def _hex_sources() -> list[Any]:
    sources: list[Any] = [RandomHex]
    if _NativeRandomHex is not None or os.environ.get("CHUTES_PURE_PYTHON") != "1":
        sources.append(_NativeRandomHex)  # None here fails the test: the install should have built it
    return sources


@pytest.mark.parametrize("source_type", _hex_sources(), ids=["python", "c"][: len(_hex_sources())])
def test_hex_labels_are_hex_of_the_asked_size_and_never_repeat(source_type: Any) -> None:
    assert source_type is not None, "core/_unique.c was not built: install gcc, reinstall (or CHUTES_PURE_PYTHON=1)"
    source = source_type(12, 64)  # a small page: many refills
    labels = [source.take_str() for _ in range(3000)] + [source.take_bytes().decode() for _ in range(3000)]
    assert all(len(label) == 24 and set(label) <= set("0123456789abcdef") for label in labels)
    assert len(set(labels)) == len(labels)
    assert {label[0] for label in labels} == set("0123456789abcdef")  # the digits are spread, not constant


def _forkable_sources() -> list[tuple[str, Any]]:
    sources: list[tuple[str, Any]] = [("slices", lambda: RandomSlices(16).take)]
    for source_type, name in zip(_hex_sources(), ("hex-python", "hex-c"), strict=False):
        sources.append((name, lambda source_type=source_type: _forgetting_in_child(source_type(16)).take_bytes))
    return sources


def _forgetting_in_child(source: Any) -> Any:
    os.register_at_fork(after_in_child=source.discard)  # as random_hex does for the C form
    return source


@pytest.mark.parametrize(("name", "make"), _forkable_sources(), ids=[n for n, _ in _forkable_sources()])
def test_a_forked_child_does_not_repeat_its_parents_labels(name: str, make: Any) -> None:
    take = make()
    take()  # a page is read: the child inherits the rest of it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next label and leave at once
        os.write(write, take())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) in (16, 32) and child != take()


def test_a_hex_label_source_refuses_a_size_outside_its_page() -> None:
    for source_type in _hex_sources():
        assert source_type is not None
        with pytest.raises(ValueError, match="size must be between 1 and page"):
            source_type(0)
        with pytest.raises(ValueError, match="size must be between 1 and page"):
            source_type(65, 64)


def test_random_hex_is_the_c_form_where_built() -> None:
    source = random_hex(16)
    assert len(source.take_str()) == 32
    assert isinstance(source, RandomHex) == (_NativeRandomHex is None)
