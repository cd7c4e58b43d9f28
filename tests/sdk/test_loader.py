import json
import sys
import textwrap
from pathlib import Path

import pytest

from chutes.chute import Chute
from chutes.loader import LoadError, load_chute, locate_chute, parse_ref

REPO = Path(__file__).resolve().parents[2]

CHUTE_SOURCE = """
from chutes.chute import Chute
chute = Chute(username="tester", name="{name}", image="python:3.12")

@chute.cord()
def ping(self) -> str:
    return "pong"
"""


def write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def test_load_the_example_by_file_reference() -> None:
    loaded = load_chute(str(REPO / "examples" / "hello.py") + ":chute")
    assert isinstance(loaded.chute, Chute) and loaded.chute.name == "hello"
    assert loaded.module_path == REPO / "examples" / "hello.py"
    assert loaded.attr == "chute" and loaded.entrypoint == "hello:chute"
    assert locate_chute(loaded.chute) == (loaded.module_path, "hello:chute")


def test_relative_file_reference_and_default_attribute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "apps" / "solo_app.py", CHUTE_SOURCE.format(name="solo"))
    monkeypatch.chdir(tmp_path)
    assert load_chute("apps/solo_app.py").chute.name == "solo"
    assert load_chute("apps/solo_app:chute").chute.name == "solo"  # ".py" may be left out


def test_module_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "pkg_mod_ref" / "__init__.py", "")
    write(tmp_path / "pkg_mod_ref" / "service.py", CHUTE_SOURCE.format(name="svc"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    loaded = load_chute("pkg_mod_ref.service:chute")
    assert loaded.chute.name == "svc"
    assert loaded.module_path == (tmp_path / "pkg_mod_ref" / "service.py").resolve()
    assert loaded.entrypoint == "service:chute"
    with pytest.raises(LoadError, match=r"no module named 'pkg_mod_ref\.nope'"):
        load_chute("pkg_mod_ref.nope:chute")


def test_a_chute_pack_is_accepted(tmp_path: Path) -> None:
    source = """
    from chutes.chute import NodeSelector
    from chutes.chute.template.tei import build_tei_chute
    pack = build_tei_chute(username="tester", model_name="BAAI/bge-m3", node_selector=NodeSelector())
    """
    path = write(tmp_path / "tei_pack_app.py", source)
    loaded = load_chute(f"{path}:pack")
    assert loaded.chute.name == "BAAI/bge-m3" and loaded.entrypoint == "tei_pack_app:pack"
    assert locate_chute(loaded.chute) == (path.resolve(), "tei_pack_app:pack")


def test_sibling_modules_are_importable(tmp_path: Path) -> None:
    write(tmp_path / "sibling_helper_mod.py", "GREETING = 'hi from a sibling'\n")
    source = CHUTE_SOURCE.format(name="sib") + "\nfrom sibling_helper_mod import GREETING\nchute.greeting = GREETING\n"
    path = write(tmp_path / "sibling_app.py", source)
    assert load_chute(f"{path}:chute").chute.greeting == "hi from a sibling"  # type: ignore[attr-defined]


def test_a_file_named_like_a_standard_module_does_not_replace_it(tmp_path: Path) -> None:
    path = write(tmp_path / "json.py", CHUTE_SOURCE.format(name="shadow"))
    loaded = load_chute(f"{path}:chute")
    assert loaded.chute.name == "shadow" and loaded.entrypoint == "json:chute"
    assert sys.modules["json"] is json and json.dumps([1]) == "[1]"


@pytest.mark.parametrize(
    ("source", "ref_attr", "message", "hint"),
    [
        (
            CHUTE_SOURCE.format(name="a"),
            "missing",
            "has no attribute 'missing' (chutes defined there: chute)",
            ":chute",
        ),
        (CHUTE_SOURCE.format(name="a") + "\nnot_a_chute = 42\n", "not_a_chute", "is a int, not a Chute", "Chute(...)"),
        (
            CHUTE_SOURCE.format(name="a") + "\nother = Chute(username='tester', name='b', image='python:3.12')\n",
            None,
            "defines 2 chutes (chute, other); say which one",
            ":ATTR",
        ),
        ("x = 1\n", None, "defines 0 chutes (none)", ":ATTR"),
        (
            "import torch_not_installed_anywhere\n",
            "chute",
            "ModuleNotFoundError: No module named",
            "inside startup hooks",
        ),
        ("x = 1\nraise RuntimeError('boom')\n", "chute", "RuntimeError: boom (line 2)", None),
        (
            "from chutes.chute import NodeSelector\nsel = NodeSelector(include=['a100x'])\n",
            "chute",
            "NodeSelector.include: unknown GPU id 'a100x'",
            None,
        ),
        (
            CHUTE_SOURCE.format(name="a") + "\n@chute.cord(path='/ping')\ndef other(self) -> str:\n    return ''\n",
            "chute",
            "cord 'other' uses path '/ping', which cord 'ping' already uses (line 9)",
            "path=",
        ),
        ("import sys\nsys.exit(2)\n", "chute", "SystemExit: 2", None),
    ],
)
def test_errors_name_what_is_wrong(
    tmp_path: Path, source: str, ref_attr: str | None, message: str, hint: str | None
) -> None:
    path = write(tmp_path / "broken_app.py", source)
    ref = f"{path}:{ref_attr}" if ref_attr else str(path)
    with pytest.raises(LoadError) as exc:
        load_chute(ref)
    assert message in str(exc.value)
    if hint is not None:
        assert exc.value.hint is not None and hint in exc.value.hint


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("", "empty chute reference"),
        ("app.py:", "invalid chute reference"),
        (":chute", "invalid chute reference"),
        ("nowhere/app.py:chute", "no such file: nowhere/app.py"),
        ("no_such_module_xyz:chute", "no module named 'no_such_module_xyz'"),
    ],
)
def test_bad_references(ref: str, message: str) -> None:
    with pytest.raises(LoadError, match=message) as exc:
        load_chute(ref)
    assert exc.value.hint


def test_a_module_that_fails_to_import_is_not_left_behind(tmp_path: Path) -> None:
    path = write(tmp_path / "half_imported_app.py", "import sys\nVALUE = 1\nraise ValueError('no')\n")
    with pytest.raises(LoadError, match="ValueError: no"):
        load_chute(f"{path}:chute")
    assert "half_imported_app" not in sys.modules


def test_parse_ref() -> None:
    assert parse_ref("a/b.py:chute") == ("a/b.py", "chute")
    assert parse_ref("pkg.mod:pack.chute") == ("pkg.mod", "pack.chute")
    assert parse_ref("a/b.py") == ("a/b.py", None)


def test_locate_a_chute_not_defined_in_a_module() -> None:
    orphan = Chute(username="tester", name="orphan", image="python:3.12")
    with pytest.raises(LoadError, match="not defined at the top level of a module file"):
        locate_chute(orphan)
