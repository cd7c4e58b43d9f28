"""The build job and the runtime layer (pure): no credential in the job, no Nomad interpolation, the builder
constraint, the runtime wheel at the scheduler's code, and reading a build's log."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zipfile

import pytest

from chutes.image import Image
from chutes.image.pack import pack, read_archive
from chutes.scheduler.images.build import (
    BUILD_SCRIPT,
    TOKEN_ITEM,
    BuildRenderError,
    BuildSettings,
    build_context,
    build_dockerfile,
    read_log,
    render_build_job,
    target_ref,
    variable_items,
)
from chutes.scheduler.images.wheel import RUNTIME_DEPENDENCIES, build_runtime_wheel, runtime_requirements

IMAGE_ID = "a" * 64
SETTINGS = BuildSettings(scheduler_url="http://10.0.0.5:8700", registry="127.0.0.1:5000", ca_bundle="/etc/ca.crt")


def test_the_build_job_carries_no_credential_and_nothing_nomad_would_interpolate() -> None:
    job = render_build_job(IMAGE_ID, "127.0.0.1:5000/demo/tiny:1", "demo", SETTINGS)
    assert job["ID"] == f"chutes-build-{IMAGE_ID}" and job["Type"] == "batch"
    text = json.dumps(job)
    assert "cbt_" not in text
    [group] = job["TaskGroups"]
    [task] = group["Tasks"]
    assert task["Driver"] == "raw_exec" and task["Config"]["command"] == "/bin/sh"
    assert "${" not in task["Config"]["args"][1]  # the script: Nomad interpolates ${...} in args
    assert TOKEN_ITEM not in task["Env"]
    [template] = task["Templates"]
    assert f'nomadVar "nomad/jobs/chutes-build-{IMAGE_ID}"' in template["EmbeddedTmpl"]
    assert template["Envvars"] is True and template["DestPath"].startswith("secrets/")
    assert job["Constraints"] == [{"LTarget": "${meta.chutes_builder}", "Operand": "=", "RTarget": "true"}]
    assert task["Env"]["CHUTES_BUILD_CONTEXT_URL"] == f"http://10.0.0.5:8700/v1/internal/images/{IMAGE_ID}/context"
    assert task["Env"]["CHUTES_BUILD_CA_BUNDLE"] == "/etc/ca.crt"
    assert group["RestartPolicy"]["Attempts"] == 0 and group["ReschedulePolicy"]["Attempts"] == 0
    # The only host path RUN steps get is the CA bundle, read-only.
    assert BUILD_SCRIPT.count(" -v ") == 1 and ':/etc/ssl/certs/ca-certificates.crt:ro"' in BUILD_SCRIPT
    assert "--isolation" in BUILD_SCRIPT and "--digestfile" in BUILD_SCRIPT


def test_hostile_values_do_not_reach_a_build_job() -> None:
    with pytest.raises(BuildRenderError):
        render_build_job("../x", "r/x:1", "demo", SETTINGS)
    with pytest.raises(BuildRenderError):
        render_build_job(IMAGE_ID, "127.0.0.1:5000/${env.SECRET}:1", "demo", SETTINGS)
    with pytest.raises(BuildRenderError):
        target_ref("evil registry/$x", "demo", "x", "1")
    items = variable_items('tok"en\nX=1', None)
    assert items[TOKEN_ITEM] == 'tok\\"en\\nX=1'  # escaped for the env file the template renders


def test_the_runtime_layer_follows_the_users_dockerfile_and_restores_its_user(tmp_path: object) -> None:
    wheel = build_runtime_wheel()
    text = build_dockerfile("FROM base\nUSER 1000\nRUN echo hi", wheel)
    lines = text.strip().split("\n")
    assert lines[:3] == ["FROM base", "USER 1000", "RUN echo hi"]
    assert lines[3] == "USER root" and lines[-1] == "USER 1000"
    assert f"/tmp/chutes-runtime/{wheel.filename}" in text and "with_python" in text


def test_the_runtime_wheel_is_this_code_with_only_the_runtimes_dependencies() -> None:
    first, second = build_runtime_wheel(), build_runtime_wheel()
    assert first.content == second.content  # reproducible: same code, same wheel, same version
    assert first.version.startswith("0.") and "+" in first.version
    with zipfile.ZipFile(io.BytesIO(first.content)) as archive:
        names = archive.namelist()
        assert "chutes/runtime/__init__.py" in names and "chutes/__init__.py" in names
        assert not any(n.endswith((".pyc", ".so")) for n in names)  # pure: no bytecode, no host-built C
        metadata = archive.read(f"chutes_nomad-{first.version}.dist-info/METADATA").decode()
    required = [line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Requires-Dist")]
    assert required == runtime_requirements() and required
    assert all(r.split(">")[0].split("[")[0] in RUNTIME_DEPENDENCIES for r in required)
    assert not any("sqlalchemy" in r.lower() or "nomad" in r.lower() for r in required)


def test_the_served_context_is_the_users_plus_the_runtime(tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path))
    (folder / "app.txt").write_text("x")
    img = Image(username="demo", name="x", tag="1").from_base("base:1").add("app.txt", "/app.txt", build_dir=folder)
    packed = pack(img, chute_dir=folder)
    wheel = build_runtime_wheel()
    served = build_context(read_archive(packed.archive), wheel)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(served))) as tar:
        names = tar.getnames()
        dockerfile = tar.extractfile(".chutes/Dockerfile").read().decode()  # type: ignore[union-attr]
    assert "app.txt" in names and f".chutes/runtime/{wheel.filename}" in names
    assert dockerfile.startswith(str(img)) and "COPY .chutes/runtime/ /tmp/chutes-runtime/" in dockerfile


def test_reading_a_build_log() -> None:
    ok = read_log(
        "==> building\nSTEP 1/2: FROM x\nCHUTES_BUILD_DIGEST sha256:"
        + "0" * 64
        + "\nCHUTES_BUILD_DIGEST sha256:"
        + "1" * 64
        + "\n"
    )
    assert ok.digest == "sha256:" + "1" * 64 and ok.failed_step is None
    failed = read_log("==> building x\nSTEP 1/3: FROM x\nSTEP 2/3: RUN exit 3\nboom\nError: building at STEP\n")
    assert (
        failed.digest is None
        and failed.failed_step == "STEP 2/3: RUN exit 3"
        and failed.tail[-2:] == ("boom", "Error: building at STEP")
    )
    # A RUN step printing a digest line does not make a build that failed afterwards look pushed.
    spoofed = read_log(
        "STEP 2/3: RUN echo CHUTES_BUILD_DIGEST sha256:"
        + "2" * 64
        + "\nCHUTES_BUILD_DIGEST sha256:"
        + "2" * 64
        + "\nError: x\n"
    )
    assert spoofed.digest is None


def test_the_build_job_is_a_valid_nomad_job() -> None:
    from tests.support.nomad_openapi import assert_valid

    job = render_build_job(IMAGE_ID, "127.0.0.1:5000/demo/tiny:1", "demo", SETTINGS)
    assert_valid("Job", job)
    assert_valid("JobRegisterRequest", {"Job": job})
