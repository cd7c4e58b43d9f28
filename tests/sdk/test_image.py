import contextlib
import json
import os
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chutes.chute import ChuteError
from chutes.image import Image, ImageError, validate_image_ref

INSTRUCTIONS = {"FROM", "RUN", "ENV", "LABEL", "USER", "WORKDIR", "ADD", "ENTRYPOINT"}


def image() -> Image:
    return Image(username="myuser", name="my-ai-app", tag="1.0")


def instructions(dockerfile: str) -> list[str]:
    """The Dockerfile's instructions as a Dockerfile parser reads them: a line ending in '\\' continues."""
    out: list[str] = []
    continued = False
    for line in dockerfile.splitlines():
        if continued:
            out[-1] += "\n" + line
        elif not line.startswith("#"):
            out.append(line)
        continued = line.rstrip().endswith("\\")
    return out


def assert_one_line_per_directive(img: Image) -> None:
    lines = instructions(str(img))
    assert len(lines) == len(img.directives)
    for line, directive in zip(lines, img.directives, strict=True):
        assert line.split(" ", 1)[0] in INSTRUCTIONS, line
        assert line == str(directive)


def test_defaults_and_identity() -> None:
    img = image()
    assert str(img) == "FROM parachutes/python:3.12"
    assert img.ref == "myuser/my-ai-app:1.0"
    assert img.uid == str(uuid.uuid5(uuid.NAMESPACE_OID, "myuser/my-ai-app:1.0"))
    assert img.build_dir is None and img.context_files == []


def test_seed_example_renders_a_dockerfile() -> None:
    img = (
        Image(username="myuser", name="my-ai-app", tag="1.0")
        .from_base("nvidia/cuda:12.2-devel-ubuntu22.04")
        .with_python("3.11")
        .run_command("pip install torch transformers")
    )
    text = str(img)
    lines = text.splitlines()
    assert lines[0] == "FROM nvidia/cuda:12.2-devel-ubuntu22.04"
    assert "https://www.python.org/ftp/python/3.11.10/Python-3.11.10.tgz" in text
    assert "ln -s /opt/python/bin/python3.11 /opt/python/bin/python" in text
    assert "ENV PATH=/opt/python/bin:$PATH" in lines
    assert lines[-1] == "RUN pip install torch transformers"
    assert lines[-4] == "WORKDIR /root"  # with_python goes back to the working directory it found
    assert_one_line_per_directive(img)


def test_from_base_replaces_from_and_keeps_it_first() -> None:
    img = image().run_command("echo hi").from_base("registry.example.com:5000/team/base:2024.1")
    assert str(img).splitlines() == ["FROM registry.example.com:5000/team/base:2024.1", "RUN echo hi"]


def test_every_builder_method() -> None:
    img = (
        image()
        .from_base("python:3.12-slim")
        .with_maintainer('Ada "the first" Lovelace')
        .apt_install(["git", "libgl1", "python3.11-dev=3.11.2-6"])
        .apt_remove("curl wget")
        .with_env("HF_HOME", 'C:\\cache "$HOME"')
        .set_user("1000:1000")
        .set_workdir("/app")
        .with_entrypoint("python", "-m", "app")
        .with_entrypoint("chutes", "run")
    )
    assert str(img).splitlines() == [
        "FROM python:3.12-slim",
        'LABEL maintainer="Ada \\"the first\\" Lovelace"',
        "RUN apt-get -y update && DEBIAN_FRONTEND=noninteractive apt-get -y install git libgl1 python3.11-dev=3.11.2-6"
        " && rm -rf /var/lib/apt/lists/*",
        "RUN apt-get -y remove --purge curl wget && apt-get -y autoremove",
        'ENV HF_HOME="C:\\\\cache \\"\\$HOME\\""',
        "USER 1000:1000",
        "WORKDIR /app",
        'ENTRYPOINT ["chutes", "run"]',
    ]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Image(username="myuser", name="My-App", tag="1"), "invalid image name 'My-App'"),
        (lambda: Image(username="myuser", name="app", tag="-x"), "invalid image tag '-x'"),
        (lambda: Image(username="My User", name="app", tag="1"), "invalid username"),
        (lambda: image().from_base("Ubuntu Latest"), "invalid image reference"),
        (lambda: image().from_base("ubuntu\nRUN evil"), "invalid image reference"),
        (lambda: image().with_env("1BAD", "x"), "invalid environment variable name '1BAD'"),
        (lambda: image().with_env("A B", "x"), "invalid environment variable name"),
        (lambda: image().with_env("OK", "line1\nRUN evil"), "must be one line"),
        (lambda: image().with_maintainer("me\rUSER root"), "must be one line"),
        (lambda: image().run_command("echo hi\nUSER root"), "followed by a line break without '\\'"),
        (lambda: image().run_command("a \\\nb\nUSER root"), "line 'b' is followed by a line break"),
        (lambda: image().run_command("a \\\nb\rUSER root"), "must be one line"),
        (lambda: image().run_command("echo hi \\"), "must not end with '\\'"),
        (lambda: image().run_command("cat <<EOF"), "must not contain '<<'"),
        (lambda: image().run_command("   "), "empty RUN command"),
        (lambda: image().apt_install("git; rm -rf /"), "invalid apt package name 'git;'"),
        (lambda: image().apt_install(["Git"]), "invalid apt package name 'Git'"),
        (lambda: image().apt_install([]), "no apt package given"),
        (lambda: image().set_user("root && evil"), "invalid user"),
        (lambda: image().set_workdir("relative/dir"), "invalid workdir"),
        (lambda: image().set_workdir("/app\nRUN evil"), "invalid workdir"),
        (lambda: image().with_python("3"), "invalid Python version"),
        (lambda: image().with_python("3.8"), "unknown Python version"),
        (lambda: image().with_entrypoint(), "one or more strings"),
        (lambda: image().with_entrypoint([]), "one or more strings"),
        (lambda: image().with_entrypoint("python 'unclosed"), "cannot split the entrypoint"),
    ],
)
def test_invalid_inputs_are_refused(make: object, message: str) -> None:
    with pytest.raises(ImageError) as exc:
        make()  # type: ignore[operator]
    assert message in str(exc.value)


def test_run_command_with_line_continuations() -> None:
    command = (
        "apt-get update && \\\n    # the tools\n\n    apt-get install -y git curl \\\r\n"
        "    && rm -rf /var/lib/apt/lists/*\n"
    )
    img = image().run_command(command)
    assert img.directives[-1].args == (
        "apt-get update && \\\n    apt-get install -y git curl \\\n    && rm -rf /var/lib/apt/lists/*"
    )
    assert instructions(str(img))[-1] == str(img.directives[-1])
    assert_one_line_per_directive(img)


def test_entrypoint_forms_of_the_real_sdk() -> None:
    assert image().with_entrypoint(["python", "-m", "app"]).directives[-1].args == '["python", "-m", "app"]'
    assert image().with_entrypoint("python -m app").directives[-1].args == '["python", "-m", "app"]'
    assert image().with_entrypoint("chutes").directives[-1].args == '["chutes"]'
    assert image().with_entrypoint("python", "-m", "app").directives[-1].args == '["python", "-m", "app"]'


def test_with_python_defaults_to_the_real_sdks_version() -> None:
    rendered = str(image().with_python())
    assert "Python-3.10.15.tgz" in rendered and "pip3.10" in rendered


@settings(max_examples=200, deadline=None)
@given(value=st.text(max_size=40), command=st.text(min_size=1, max_size=40), who=st.text(max_size=20))
def test_user_strings_never_add_instructions(value: str, command: str, who: str) -> None:
    img = image()
    for step in (
        lambda: img.with_env("KEY", value),
        lambda: img.run_command(command),
        lambda: img.with_maintainer(who),
        lambda: img.with_entrypoint(value, command),
    ):
        with contextlib.suppress(ImageError):
            step()
    assert_one_line_per_directive(img)


def test_validate_image_ref() -> None:
    for ref in (
        "python:3.12",
        "nvidia/cuda:12.2-runtime-ubuntu22.04",
        "chutes/vllm:latest",
        "my-custom-image:latest",
        "localhost:5000/a/b",
        "alpine@sha256:" + "a" * 64,
    ):
        assert validate_image_ref(ref) == ref
    for ref in ("", "UPPER/case", "a b", "a:tag with space", "x" * 600):
        with pytest.raises(ImageError):
            validate_image_ref(ref)


@pytest.fixture
def build_dir(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "models" / "sub").mkdir(parents=True)
    (root / "app.py").write_text("print('app')\n")
    (root / "models" / "a.bin").write_bytes(b"a")
    (root / "models" / "sub" / "b.bin").write_bytes(b"b")
    (tmp_path / "secret.txt").write_text("outside")
    return root


def test_add_local_files_and_folders(build_dir: Path) -> None:
    img = (
        image()
        .add("app.py", "/app/app.py", build_dir=build_dir, chown="1000:1000", chmod="0644")
        .add("models/", "/models", build_dir=build_dir)
        .add(str(build_dir / "models" / "sub" / "b.bin"), "/b.bin", build_dir=build_dir)
    )
    lines = str(img).splitlines()
    assert lines[1] == 'ADD --chown=1000:1000 --chmod=0644 ["app.py", "/app/app.py"]'
    assert lines[2] == 'ADD ["models", "/models"]'
    assert lines[3] == 'ADD ["models/sub/b.bin", "/b.bin"]'
    assert img.build_dir == build_dir.resolve()
    assert img.context_files == ["app.py", "models/a.bin", "models/sub/b.bin"]


def test_add_globs(build_dir: Path) -> None:
    img = image().add("models/*.bin", "/models/", build_dir=build_dir)
    assert img.context_files == ["models/a.bin"]
    assert json.loads(str(img).splitlines()[1].removeprefix("ADD ")) == ["models/*.bin", "/models/"]


@pytest.mark.parametrize("source", ["../secret.txt", "models/../../secret.txt", "/etc/passwd", "../*"])
def test_add_refuses_sources_outside_the_build_dir(build_dir: Path, source: str) -> None:
    with pytest.raises(ChuteError, match="outside the build directory") as exc:
        image().add(source, "/x", build_dir=build_dir)
    assert exc.value.hint and "inside the build directory" in exc.value.hint


def test_add_refuses_links_that_leave_the_build_dir(build_dir: Path) -> None:
    os.symlink(build_dir.parent / "secret.txt", build_dir / "link.txt")
    with pytest.raises(ChuteError, match="leads outside the build directory"):
        image().add("link.txt", "/x", build_dir=build_dir)
    os.symlink(build_dir.parent / "secret.txt", build_dir / "models" / "sub" / "evil")
    with pytest.raises(ChuteError, match="contains a link leading outside the build directory"):
        image().add("models", "/models", build_dir=build_dir)


def test_add_other_rules(build_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ChuteError, match="matches no file"):
        image().add("missing.py", "/x", build_dir=build_dir)
    with pytest.raises(ChuteError, match="one build directory"):
        image().add("app.py", "/x", build_dir=build_dir).add("secret.txt", "/y", build_dir=tmp_path)
    with pytest.raises(ChuteError, match="no '\\$'"):
        image().add("$HOME/x", "/x", build_dir=build_dir)
    with pytest.raises(ImageError, match="destination"):
        image().add("app.py", "$HOME", build_dir=build_dir)
    with pytest.raises(ImageError, match="applies to http"):
        image().add("app.py", "/x", checksum="sha256:" + "0" * 64, build_dir=build_dir)
    with pytest.raises(ImageError, match="git sources only"):
        image().add("app.py", "/x", keep_git_dir=True, build_dir=build_dir)
    with pytest.raises(ChuteError, match="unsupported add"):
        image().add("ftp://example.com/x", "/x")


def test_add_remote_sources() -> None:
    url = "https://example.com/weights.bin"
    img = (
        image()
        .add(url, "/w.bin", checksum="sha256:" + "a" * 64)
        .add("https://github.com/org/repo.git#v1", "/src", keep_git_dir=True)
    )
    lines = str(img).splitlines()
    assert lines[1] == f'ADD --checksum=sha256:{"a" * 64} ["{url}", "/w.bin"]'
    assert lines[2] == 'ADD --keep-git-dir=true ["https://github.com/org/repo.git#v1", "/src"]'
    assert img.context_files == []


def test_exclude_needs_the_labs_syntax(build_dir: Path) -> None:
    img = image().add("models", "/models", exclude=["*.tmp", "sub/"], build_dir=build_dir)
    lines = str(img).splitlines()
    assert lines[0] == "# syntax=docker/dockerfile:1-labs"
    assert lines[2] == 'ADD --exclude=*.tmp --exclude=sub/ ["models", "/models"]'
    with pytest.raises(ImageError, match="exclude pattern"):
        image().add("models", "/models", exclude="a b", build_dir=build_dir)
