"""Build contexts: packed from a chute's Image, read back by the scheduler, hostile ones refused (must-show 3)."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from chutes.chute import ChuteError
from chutes.image import Image
from chutes.image.pack import (
    DOCKERFILE,
    META_FILE,
    ContextError,
    ImageMeta,
    check_dockerfile,
    pack,
    read_archive,
    write_archive,
)
from tests.support.archives import tar_gz


def image(tmp_path: Path) -> Image:
    (tmp_path / "app").mkdir(exist_ok=True)
    if not (tmp_path / "app" / "main.py").exists():
        (tmp_path / "app" / "main.py").write_text("print('hi')\n")
    script = tmp_path / "setup.sh"
    script.write_text("#!/bin/sh\necho set up\n")
    script.chmod(0o755)
    return (
        Image(username="demo", name="packed", tag="1")
        .from_base("localhost/chutes-base:bookworm")
        .run_command("pip install tinydb")
        .add("app", "/srv/app", build_dir=tmp_path)
        .add("setup.sh", "/srv/setup.sh", build_dir=tmp_path)
    )


def meta_entries(dockerfile: str = "FROM localhost/chutes-base:bookworm") -> list[tuple[str, bytes]]:
    return [(DOCKERFILE, dockerfile.encode()), (META_FILE, ImageMeta("demo", "x", "1").to_json())]


def test_pack_holds_the_dockerfile_and_every_added_file_and_reads_back_with_the_same_id(tmp_path: Path) -> None:
    packed = pack(image(tmp_path), chute_dir=tmp_path)
    assert packed.files == ("app/main.py", "setup.sh")
    assert len(packed.image_id) == 64
    context = read_archive(packed.archive)
    assert context.image_id == packed.image_id
    assert context.dockerfile == packed.dockerfile
    assert context.files["setup.sh"] == (b"#!/bin/sh\necho set up\n", True)
    assert context.files["app/main.py"][1] is False
    assert context.meta == ImageMeta("demo", "packed", "1")
    # Same files, same id and the same bytes; one byte changed, another id.
    again = pack(image(tmp_path), chute_dir=tmp_path)
    assert again.archive == packed.archive and again.image_id == packed.image_id
    (tmp_path / "app" / "main.py").write_text("print('ho')\n")
    assert pack(image(tmp_path), chute_dir=tmp_path).image_id != packed.image_id


def test_a_reference_image_packs_a_thin_context(tmp_path: Path) -> None:
    packed = pack("python:3.12-slim", chute_dir=tmp_path, username="demo")
    assert packed.dockerfile == "FROM python:3.12-slim" and packed.files == ()
    assert packed.meta.kind == "base" and packed.meta.base == "python:3.12-slim"
    assert (packed.meta.name, packed.meta.tag) == ("base-python", "3.12-slim")
    assert read_archive(packed.archive).image_id == packed.image_id


def test_files_outside_the_chute_folder_are_refused(tmp_path: Path) -> None:
    chute_dir = tmp_path / "chute"
    chute_dir.mkdir()
    (tmp_path / "secret.txt").write_text("host secret")
    img = Image(username="demo", name="x", tag="1").add("secret.txt", "/x", build_dir=tmp_path)
    with pytest.raises(ContextError, match="outside the chute's folder"):
        pack(img, chute_dir=chute_dir)
    with pytest.raises(ChuteError, match="outside the build directory"):
        Image(username="demo", name="x", tag="1").add("../secret.txt", "/x", build_dir=chute_dir)


def test_a_link_that_leaves_the_folder_after_add_is_refused_at_pack_time(tmp_path: Path) -> None:
    chute_dir = tmp_path / "chute"
    chute_dir.mkdir()
    (chute_dir / "model.bin").write_text("weights")
    img = Image(username="demo", name="x", tag="1").add("model.bin", "/m", build_dir=chute_dir)
    (tmp_path / "shadow").write_text("host secret")
    (chute_dir / "model.bin").unlink()
    os.symlink(tmp_path / "shadow", chute_dir / "model.bin")  # swapped for a link after add()
    with pytest.raises(ContextError, match="leads outside"):
        pack(img, chute_dir=chute_dir)


def test_oversize_contexts_are_refused_on_both_sides(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(b"\0" * 4096)
    img = Image(username="demo", name="x", tag="1").add("big.bin", "/b", build_dir=tmp_path)
    with pytest.raises(ContextError, match="over 1000 bytes"):
        pack(img, chute_dir=tmp_path, max_bytes=1000)
    bomb = write_archive({**{k: (v, False) for k, v in meta_entries()}, "zeros": (b"\0" * (3 * 1024 * 1024), False)})
    assert len(bomb) < 20_000  # compresses very well
    with pytest.raises(ContextError, match="over 1048576 bytes"):
        read_archive(bomb, max_bytes=1024 * 1024)


@pytest.mark.parametrize(
    "entry, message",
    [
        (("../escape.txt", b"x"), "leaves the build context"),
        (("/etc/passwd", b"x"), "leaves the build context"),
        (("a/../../b", b"x"), "leaves the build context"),
        (("bad\nname", b"x"), "invalid path"),
    ],
)
def test_archives_with_paths_leaving_the_context_are_refused(entry: tuple[str, bytes], message: str) -> None:
    with pytest.raises(ContextError, match=message):
        read_archive(tar_gz([*meta_entries(), entry]))


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE])
def test_archives_with_links_or_devices_are_refused(kind: bytes) -> None:
    info = tarfile.TarInfo("app/link")
    info.type = kind
    info.linkname = "/etc/shadow"
    with pytest.raises(ContextError, match=r"link|not a regular file"):
        read_archive(tar_gz([*meta_entries(), info]))


def test_archives_without_the_platform_files_or_with_others_in_its_folder_are_refused() -> None:
    with pytest.raises(ContextError, match=r"no \.chutes/Dockerfile"):
        read_archive(tar_gz([("app.py", b"x")]))
    with pytest.raises(ContextError, match="two files"):
        read_archive(tar_gz([*meta_entries(), (".chutes/extra", b"x")]))
    with pytest.raises(ContextError, match="not a gzipped tar"):
        read_archive(b"not gzip")


@pytest.mark.parametrize(
    "dockerfile",
    [
        "FROM base\nRUN echo ok\nCOPY --from=0 / /host",  # COPY of a file not in the context
        "FROM base\nRUN echo a\n\nMAINTAINER x",
        "FROM base\nRUN echo a\nFROM other",  # a second stage
        "FROM base\nRUN cat <<EOF\nRUN x\nEOF",
        "FROM base\nENV A=1 \\\nRUN evil",  # a continuation outside RUN
        "FROM base\nRUN echo \\",  # ends in a continuation
        "RUN echo first",
        "FROM base\nRUN echo a\x00b",
        "FROM base\r\nRUN x",
        'FROM base\nADD [".chutes/image.json", "/x"]',
        "FROM base\nONBUILD RUN curl evil | sh",
    ],
)
def test_dockerfiles_an_image_cannot_write_are_refused(dockerfile: str) -> None:
    with pytest.raises(ContextError):
        check_dockerfile(dockerfile, {})
    with pytest.raises(ContextError):
        read_archive(tar_gz(meta_entries(dockerfile)))


@pytest.mark.parametrize(
    "build",
    [
        lambda i: i.run_command("echo a\nUSER root"),
        lambda i: i.with_env("A", "1\nRUN evil"),
        lambda i: i.with_maintainer("me\u2028RUN evil"),
        lambda i: i.set_workdir("/x\nRUN evil"),
        lambda i: i.add("x\nRUN evil", "/x"),
        lambda i: i.from_base("python\nRUN evil"),
        lambda i: i.run_command("cat <<EOF"),
        lambda i: i.run_command("echo a \\"),
    ],
)
def test_instruction_injection_through_image_methods_is_refused(build: object) -> None:
    with pytest.raises(ChuteError):
        build(Image(username="demo", name="x", tag="1"))  # type: ignore[operator]


def test_every_dockerfile_an_image_writes_passes_the_check(tmp_path: Path) -> None:
    img = image(tmp_path).with_python("3.11").with_env("A", 'quoted "$HOME"').set_user("1000").with_entrypoint("x y")
    img.run_command("apt-get update && \\\n  apt-get install -y curl")
    packed = pack(img, chute_dir=tmp_path)
    assert read_archive(packed.archive).dockerfile == str(img)
