import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

import chutes
from chutes import bundle as bundle_module
from chutes.bundle import META_NAME, BundleError, build_bundle, inspect_bundle, safe_extract
from chutes.loader import load_chute

APP = """
from chutes.chute import Chute
from helpers_mod import answer

chute = Chute(username="tester", name="bundled", image="python:3.12")

@chute.cord()
def ask(self) -> int:
    return answer()
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "sub").mkdir(parents=True)
    (root / "bundled_app.py").write_text(APP)
    (root / "helpers_mod.py").write_text("def answer() -> int:\n    return 42\n")
    (root / ".hidden.py").write_text("SECRET = 1\n")
    (root / "notes.txt").write_text("not python\n")
    (root / "sub" / "deep.py").write_text("X = 1\n")
    os.symlink(tmp_path / "elsewhere.py", root / "linked.py")
    (tmp_path / "elsewhere.py").write_text("OUTSIDE = 1\n")
    return root


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}  # type: ignore[union-attr]


def test_build_from_a_reference(project: Path) -> None:
    result = build_bundle(f"{project / 'bundled_app.py'}:chute")
    assert result.entrypoint == "bundled_app:chute"
    assert result.sha256 == hashlib.sha256(result.data).hexdigest()
    content = members(result.data)
    assert sorted(content) == ["bundled_app.py", "chutes_bundle.json", "helpers_mod.py"]
    assert result.files == ("bundled_app.py", "helpers_mod.py", META_NAME)
    assert json.loads(content[META_NAME]) == {"entrypoint": "bundled_app:chute", "sdk_version": chutes.__version__}
    assert content["helpers_mod.py"] == (project / "helpers_mod.py").read_bytes()


def test_build_from_a_module_path_and_entrypoint(project: Path) -> None:
    loaded = load_chute(f"{project / 'bundled_app.py'}:chute")
    result = build_bundle(loaded.module_path, loaded.entrypoint)
    assert result.entrypoint == "bundled_app:chute"
    with pytest.raises(BundleError, match="does not name the module file"):
        build_bundle(loaded.module_path, "other:chute")
    with pytest.raises(BundleError, match="invalid entrypoint"):
        build_bundle(loaded.module_path, "bundled_app")


def test_builds_are_reproducible(project: Path) -> None:
    first = build_bundle(project / "bundled_app.py", "bundled_app:chute")
    os.utime(project / "helpers_mod.py", (1, 1))
    second = build_bundle(project / "bundled_app.py", "bundled_app:chute")
    assert first.sha256 == second.sha256
    (project / "helpers_mod.py").write_text("def answer() -> int:\n    return 43\n")
    assert build_bundle(project / "bundled_app.py", "bundled_app:chute").sha256 != first.sha256


def test_oversize_bundles_are_refused(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle_module, "MAX_BUNDLE_BYTES", 100)
    with pytest.raises(BundleError, match="more than the 0 MiB limit") as exc:
        build_bundle(project / "bundled_app.py", "bundled_app:chute")
    assert exc.value.hint


def test_extract_round_trip(project: Path, tmp_path: Path) -> None:
    result = build_bundle(project / "bundled_app.py", "bundled_app:chute")
    dest = tmp_path / "out"
    meta = safe_extract(result.data, dest)
    assert meta.entrypoint == "bundled_app:chute" and meta.sdk_version == chutes.__version__
    assert meta.files == ("bundled_app.py", META_NAME, "helpers_mod.py")
    assert (dest / "helpers_mod.py").read_bytes() == (project / "helpers_mod.py").read_bytes()
    assert stat.S_IMODE((dest / "bundled_app.py").stat().st_mode) == 0o644
    assert inspect_bundle(result.data) == meta
    # The extracted bundle loads as the runtime loads it.
    assert load_chute(f"{dest / 'bundled_app.py'}:chute").chute.name == "bundled"


# Hostile archives.


def make_tar(add: Callable[[tarfile.TarFile], None], *, meta: bool = True) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if meta:
            put(tar, META_NAME, json.dumps({"entrypoint": "app:chute", "sdk_version": "0.1.0"}).encode())
            put(tar, "app.py", b"chute = None\n")
        add(tar)
    return gzip.compress(raw.getvalue())


def put(tar: tarfile.TarFile, name: str, data: bytes = b"x", **attrs: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if info.isreg() else None)


HOSTILE = {
    "absolute path": (lambda t: put(t, "/etc/cron.d/evil"), "absolute path"),
    "parent escape": (lambda t: put(t, "../escape.py"), "leaves the bundle"),
    "nested escape": (lambda t: put(t, "sub/../../escape.py"), "leaves the bundle"),
    "symlink": (lambda t: put(t, "link.py", type=tarfile.SYMTYPE, linkname="/etc/passwd", size=0), "symbolic link"),
    "hardlink": (lambda t: put(t, "hard.py", type=tarfile.LNKTYPE, linkname="app.py", size=0), "hard link"),
    "char device": (lambda t: put(t, "null", type=tarfile.CHRTYPE, devmajor=1, devminor=3, size=0), "a device"),
    "block device": (lambda t: put(t, "sda", type=tarfile.BLKTYPE, size=0), "a device"),
    "fifo": (lambda t: put(t, "pipe", type=tarfile.FIFOTYPE, size=0), "a FIFO"),
    "duplicate": (lambda t: put(t, "app.py", b"chute = 'replaced'\n"), "appears twice"),
    "backslash": (lambda t: put(t, "..\\evil.py"), "invalid name"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_members_are_refused_and_nothing_is_written(case: str, tmp_path: Path) -> None:
    add, message = HOSTILE[case]
    data = make_tar(add)
    dest = tmp_path / "dest"
    with pytest.raises(BundleError, match=message):
        safe_extract(data, dest)
    assert not dest.exists() or list(dest.iterdir()) == []
    with pytest.raises(BundleError, match=message):
        inspect_bundle(data)
    assert not (tmp_path / "escape.py").exists()


def test_oversize_members_and_member_counts(tmp_path: Path) -> None:
    big = make_tar(lambda t: put(t, "weights.py", b"0" * 5000))
    with pytest.raises(BundleError, match="larger than 4096 bytes"):
        safe_extract(big, tmp_path / "a", max_bytes=4096)
    many = make_tar(lambda t: [put(t, f"m{i}.py") for i in range(20)])
    with pytest.raises(BundleError, match="more than 10 members"):
        safe_extract(many, tmp_path / "b", max_members=10)
    assert safe_extract(many, tmp_path / "c").entrypoint == "app:chute"


def test_gzip_bombs_stop_at_the_limit(tmp_path: Path) -> None:
    bomb = gzip.compress(b"\0" * (20 * 1024 * 1024))
    assert len(bomb) < 100_000
    with pytest.raises(BundleError, match="expands to more than"):
        safe_extract(bomb, tmp_path / "dest", max_bytes=1024 * 1024)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not gzip at all", "not gzip-compressed"),
        (gzip.compress(b"plain text, not a tar archive" * 40), "not a tar archive"),
        (make_tar(lambda t: None)[:-20], "truncated"),
        (make_tar(lambda t: None) + b"trailing", "trailing data"),
        (make_tar(lambda t: put(t, "app.py"), meta=False), "no chutes_bundle.json"),
    ],
)
def test_malformed_bundles(data: bytes, message: str, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=message):
        safe_extract(data, tmp_path / "dest")


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "must hold a JSON object"),
        (json.dumps({"entrypoint": "app"}).encode(), "invalid entrypoint"),
        (json.dumps({"entrypoint": "../x:chute"}).encode(), "invalid entrypoint"),
        (json.dumps({"entrypoint": "missing:chute"}).encode(), "has no missing.py"),
    ],
)
def test_bad_metadata(meta: bytes, message: str, tmp_path: Path) -> None:
    data = make_tar(lambda t: (put(t, META_NAME, meta), put(t, "app.py")), meta=False)
    with pytest.raises(BundleError, match=message):
        safe_extract(data, tmp_path / "dest")


def test_extraction_never_follows_a_link_already_in_the_destination(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(outside, dest / "sub")
    data = make_tar(lambda t: put(t, "sub/x.py", b"X = 1\n"))
    with pytest.raises(BundleError, match="through the link"):
        safe_extract(data, dest)
    assert list(outside.iterdir()) == []


def test_bundles_written_by_plain_tarfile_are_accepted(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        put(tar, "pkgdir", type=tarfile.DIRTYPE, size=0)
        put(tar, "pkgdir/util.py", b"U = 1\n")
        put(tar, "./app.py", b"chute = None\n")
        put(tar, META_NAME, json.dumps({"entrypoint": "app:chute"}).encode())
    meta = safe_extract(raw.getvalue(), tmp_path / "dest")
    assert meta.files == ("app.py", META_NAME, "pkgdir/util.py") and meta.sdk_version == ""
    assert (tmp_path / "dest" / "pkgdir" / "util.py").read_text() == "U = 1\n"
