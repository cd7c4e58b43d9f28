"""The Nomad jobs rendered for a chute: DESIGN.md's shape, Nomad's OpenAPI schema, and hostile input."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chutes.chute.node_selector import NodeSelector
from chutes.devcluster.nomad import templates as devcluster_templates
from chutes.devcluster.nomad.docker_config import docker_config_problems
from chutes.identity import chute_id
from chutes.manifest import CordSpec, ImageSpec, JobSpec, Manifest, PortSpec
from chutes.scheduler.placement import Placement
from chutes.scheduler.render import (
    ENV_NAMES,
    TEMPLATE_ENV_NAMES,
    ChuteRelease,
    RenderError,
    RenderSettings,
    batch_job_id,
    job_id,
    render_batch_job,
    render_chute_job,
    service_name,
    task_driver,
)
from tests.support.nomad_openapi import assert_valid

SHA = hashlib.sha256(b"bundle").hexdigest()
SETTINGS = RenderSettings(scheduler_url="http://127.0.0.1:8000", datacenters=("dc1",))
RELEASE = ChuteRelease(bundle_sha256=SHA, count=2, secret_names=("HF_TOKEN", "API_KEY"))


def manifest(
    username: str = "alice",
    name: str = "unsloth/Llama-3.2-1B-Instruct",
    selector: NodeSelector | None = None,
    jobs: list[JobSpec] | None = None,
    image: str = "parachutes/base-python:3.12",
) -> Manifest:
    cords = [] if jobs else [CordSpec(name="generate", path="/generate", public_api_path="/generate")]
    return Manifest(
        chute_id=chute_id(username, name),
        username=username,
        name=name,
        image=ImageSpec(ref=image),
        node_selector=selector or NodeSelector(gpu_count=2, min_vram_gb_per_gpu=40, include=["a100", "h100_sxm"]),
        cords=cords,
        jobs=jobs or [],
        sdk_version="0.1.0",
    )


def task_of(job: dict[str, Any]) -> dict[str, Any]:
    task: dict[str, Any] = job["TaskGroups"][0]["Tasks"][0]
    return task


def shape(value: Any) -> Any:
    """The structure of a JSON value without its string/number contents: keys, nesting and list lengths."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


def test_service_job_has_the_designed_shape() -> None:
    m = manifest()
    job = render_chute_job(m, RELEASE, SETTINGS)
    cid = m.chute_id
    assert job["ID"] == job_id(cid) == f"chute-{cid}"
    assert job["Type"] == "service"
    assert job["Datacenters"] == ["dc1"]
    assert job["Meta"]["chute_id"] == cid
    assert job["Meta"]["chute_version"] == SHA[:12]
    assert job["Constraints"] == [
        {"LTarget": "${meta.chutes_gpu_model}", "Operand": "set_contains_any", "RTarget": "a100,h100_sxm"}
    ]
    assert "Affinities" not in job
    (group,) = job["TaskGroups"]
    assert (group["Name"], group["Count"]) == ("instance", 2)
    assert group["Networks"] == [{"Mode": "host", "DynamicPorts": [{"Label": "http"}]}]
    assert group["RestartPolicy"]["Mode"] == "fail"
    assert group["ReschedulePolicy"]["Unlimited"] is True
    (service,) = group["Services"]
    assert service["Name"] == service_name(cid) == f"chute-{cid}"
    assert service["Tags"] == ["chutes", "user:alice", "chute:unsloth/Llama-3.2-1B-Instruct"]
    assert service["PortLabel"] == "http"
    assert service["Provider"] == "consul"
    (check,) = service["Checks"]
    assert (check["Type"], check["Path"], check["Interval"]) == ("http", "/_ready", 5_000_000_000)
    task = task_of(job)
    assert (task["Name"], task["Driver"]) == ("runtime", "raw_exec")
    assert task["Config"] == {"command": "python3", "args": ["-m", "chutes.runtime"]}
    assert task["KillTimeout"] == 40_000_000_000  # longer than the runtime's 30 s drain
    assert task["Env"] == {
        "CHUTES_CHUTE_ID": cid,
        "CHUTES_SCHEDULER_URL": "http://127.0.0.1:8000",
        "CHUTES_BUNDLE_SHA256": SHA,
    }
    assert set(ENV_NAMES) <= set(task["Env"]) and not set(TEMPLATE_ENV_NAMES) & set(task["Env"])
    # Credentials and secrets come from the job's Nomad Variable through an env template, never from the job.
    (template,) = task["Templates"]
    assert template == {
        "EmbeddedTmpl": (
            f'{{{{ with nomadVar "nomad/jobs/chute-{cid}" }}}}\n'
            f'CHUTES_INSTANCE_TOKEN="{{{{ index . "CHUTES_INSTANCE_TOKEN_{SHA[:12]}" }}}}"\n'
            'CHUTES_INVOKE_SECRET="{{ index . "CHUTES_INVOKE_SECRET" }}"\n'
            'API_KEY="{{ index . "API_KEY" }}"\n'
            'HF_TOKEN="{{ index . "HF_TOKEN" }}"\n'
            "{{ end }}\n"
        ),
        "DestPath": "secrets/chutes.env",
        "Envvars": True,
        "ChangeMode": "restart",
        "Splay": 5_000_000_000,
        "Perms": "0600",
    }
    assert job["Meta"]["chute_secrets"] == "API_KEY,HF_TOKEN"  # names only
    resources = task["Resources"]
    assert (resources["CPU"], resources["MemoryMB"]) == (2000, 8192)  # sized per GPU
    assert resources["Devices"] == [
        {
            "Name": "nvidia/gpu",
            "Count": 2,
            # 40 catalog GB (decimal) in MiB: what NVML and ${device.attr.memory} report.
            "Constraints": [{"LTarget": "${device.attr.memory}", "Operand": ">=", "RTarget": "38146 MiB"}],
        }
    ]
    assert_valid("Job", job)
    assert_valid("JobRegisterRequest", {"Job": job, "EnforceIndex": True, "JobModifyIndex": 0})


BUILT = "registry.internal:5000/alice/llama:v1@sha256:" + "ab" * 32


def test_docker_driver_runs_the_image_with_the_port_mapped() -> None:
    job = render_chute_job(manifest(), RELEASE, RenderSettings(scheduler_url="http://s:8000", driver="docker"))
    task = task_of(job)
    config = task["Config"]
    # Forced docker without a built image: the manifest's reference as is (it must carry the runtime).
    assert config["image"] == "parachutes/base-python:3.12"
    assert (config["command"], config["args"], config["ports"]) == ("python3", ["-m", "chutes.runtime"], ["http"])
    assert task["Env"]["CHUTES_HOST"] == "0.0.0.0"  # NOMAD_IP_http is the host's address in a container
    assert_valid("Job", job)


def test_a_built_image_runs_with_the_docker_driver_by_digest_and_locked_down() -> None:
    release = replace(RELEASE, image_ref=BUILT)
    settings = RenderSettings(scheduler_url="http://127.0.0.1:8700", container_scheduler_url="http://host.x:8700")
    job = render_chute_job(manifest(), release, settings)
    assert task_driver(release, settings) == "docker"
    task = task_of(job)
    assert task["Driver"] == "docker"
    config = task["Config"]
    assert config["image"] == BUILT and "@sha256:" in config["image"]
    assert (config["command"], config["args"], config["ports"]) == ("python3", ["-m", "chutes.runtime"], ["http"])
    assert config["init"] is True and config["security_opt"] == ["no-new-privileges"]
    assert config["pids_limit"] == 16384 and config["shm_size"] == 2048 * 1024 * 1024
    assert config["logging"] == {"type": "json-file", "config": {"max-size": "10m", "max-file": "3"}}
    assert config["labels"] == {"io.chutes.chute_id": manifest().chute_id}
    # Nothing that reaches the host: no privileged mode, no mounts or devices, and no runtime (Nomad switches a
    # GPU task to the NVIDIA runtime by itself and refuses any other one).
    assert not {"privileged", "volumes", "mount", "mounts", "devices", "runtime", "network_mode"} & set(config)
    assert task["Resources"]["Devices"][0]["Name"] == "nvidia/gpu"
    assert task["KillSignal"] == "SIGTERM" and task["KillTimeout"] > 30 * 1_000_000_000  # > the runtime's drain
    assert task["LogConfig"] == {"MaxFiles": 5, "MaxFileSizeMB": 20}
    assert task["Env"]["CHUTES_HOST"] == "0.0.0.0"
    assert task["Env"]["CHUTES_SCHEDULER_URL"] == "http://host.x:8700"  # the containers' way to the scheduler
    assert job["TaskGroups"][0]["Networks"] == [{"Mode": "host", "DynamicPorts": [{"Label": "http"}]}]
    # What the devcluster's podman driver accepts is what the renderer emits.
    assert docker_config_problems(config) == []
    assert_valid("Job", job)
    assert_valid("JobRegisterRequest", {"Job": job})


def test_raw_exec_stays_the_operators_choice_and_the_default_without_an_image() -> None:
    release = replace(RELEASE, image_ref=BUILT)
    forced = render_chute_job(manifest(), release, RenderSettings(scheduler_url="http://s", driver="raw_exec"))
    assert task_of(forced)["Driver"] == "raw_exec" and "image" not in task_of(forced)["Config"]
    assert "CHUTES_HOST" not in task_of(forced)["Env"]
    plain = render_chute_job(
        manifest(), RELEASE, RenderSettings(scheduler_url="http://s", container_scheduler_url="http://c")
    )
    assert task_of(plain)["Driver"] == "raw_exec"
    assert task_of(plain)["Env"]["CHUTES_SCHEDULER_URL"] == "http://s"  # a host process reaches it directly
    assert_valid("Job", forced)


def test_jobs_run_in_the_built_image_too() -> None:
    m = manifest(jobs=[JobSpec(name="train", ports=[PortSpec(name="tb", port=6006)])])
    job = render_batch_job(m, "train", replace(RELEASE, image_ref=BUILT), SETTINGS)
    task = task_of(job)
    assert task["Driver"] == "docker" and task["Config"]["image"] == BUILT
    assert task["Config"]["args"] == ["-m", "chutes.runtime", "--job", "train"]
    assert "ports" not in task["Config"]
    assert docker_config_problems(task["Config"]) == []
    assert_valid("Job", job)


@pytest.mark.parametrize(
    "ref",
    [
        "registry.internal/alice/llama:v1",  # not pinned by digest
        "registry.internal/alice/${NOMAD_META_x}@sha256:" + "a" * 64,
        "registry.internal/Alice/llama@sha256:" + "a" * 64,
        "",
    ],
)
def test_a_built_image_must_be_a_clean_digest_reference(ref: str) -> None:
    with pytest.raises(RenderError):
        render_chute_job(manifest(), replace(RELEASE, image_ref=ref), SETTINGS)


def test_placement_becomes_affinities_to_its_model_and_nodes() -> None:
    m = manifest()
    placements = [
        Placement(m.chute_id, "gpu-b", "nomad-b", "a100", ("GPU-1", "GPU-2"), 1.2, 2, 3, 2, {}),
        Placement(m.chute_id, "gpu-b", "nomad-b", "a100", ("GPU-3", "GPU-4"), 1.2, 0, 3, 2, {}),
    ]
    job = render_chute_job(m, RELEASE.with_placements(placements), SETTINGS)
    assert job["Affinities"] == [
        {"LTarget": "${meta.chutes_gpu_model}", "Operand": "set_contains_any", "RTarget": "a100", "Weight": 100},
        {"LTarget": "${node.unique.id}", "Operand": "set_contains_any", "RTarget": "nomad-b", "Weight": 50},
    ]
    assert RELEASE.with_placements([]) is RELEASE
    assert_valid("Job", job)


def test_settings_reach_the_job() -> None:
    custom = RenderSettings(
        scheduler_url="https://sched.example:8443",
        datacenters=("eu-1", "eu-2"),
        region="eu",
        namespace="chutes",
        cpu_mhz_per_gpu=3000,
        memory_mb_per_gpu=16384,
        runtime_command=("/opt/venv/bin/python", "-m", "chutes.runtime"),
        extra_env={"HF_HOME": "/data/hf"},
    )
    m = manifest(selector=NodeSelector(gpu_count=4, min_vram_gb_per_gpu=80, include=["h100_sxm"]))
    job = render_chute_job(m, RELEASE, custom)
    assert (job["Region"], job["Namespace"], job["Datacenters"]) == ("eu", "chutes", ["eu-1", "eu-2"])
    task = task_of(job)
    assert task["Config"]["command"] == "/opt/venv/bin/python"
    assert (task["Resources"]["CPU"], task["Resources"]["MemoryMB"]) == (12000, 65536)
    assert task["Resources"]["Devices"][0]["Count"] == 4
    # 80 GB = 76293 MiB: an H100 (81559 MiB) qualifies, which "80 GiB" (81920 MiB) would refuse.
    assert task["Resources"]["Devices"][0]["Constraints"][0]["RTarget"] == "76293 MiB"
    assert task["Env"]["HF_HOME"] == "/data/hf"
    assert task["Env"]["CHUTES_SCHEDULER_URL"] == "https://sched.example:8443"
    assert_valid("Job", job)


def test_batch_job_is_parameterized_and_runs_the_job() -> None:
    m = manifest(jobs=[JobSpec(name="train", ports=[PortSpec(name="tb", port=6006)])])
    job = render_batch_job(m, "train", RELEASE, SETTINGS)
    assert job["ID"] == batch_job_id(m.chute_id, "train") == f"chute-{m.chute_id}-job-train"
    assert job["Type"] == "batch"
    assert job["ParameterizedJob"] == {"Payload": "required", "MetaRequired": ["run_id"]}
    assert job["Meta"]["chute_job"] == "train"
    assert "Services" not in job["TaskGroups"][0]
    assert job["TaskGroups"][0]["Networks"] == [{"Mode": "host", "DynamicPorts": [{"Label": "tb", "To": 6006}]}]
    task = task_of(job)
    assert task["Config"]["args"] == ["-m", "chutes.runtime", "--job", "train"]
    assert task["DispatchPayload"] == {"File": "payload.json"}
    assert task["Env"]["CHUTES_JOB_RUN_ID"] == "${NOMAD_META_run_id}"
    assert task["Resources"]["Devices"][0]["Count"] == 2
    # A dispatched run's workload identity is its parent's: the templates read the parent job's variable.
    assert f'nomadVar "nomad/jobs/{job["ID"]}"' in task["Templates"][0]["EmbeddedTmpl"]
    assert not (set(TEMPLATE_ENV_NAMES) | {"CHUTES_RUN_TOKEN"}) & set(task["Env"])
    # The run token is neither in the job nor in the dispatch (Meta: run_id only): the second template picks
    # the run's own item of the variable by its run id, and a change of it never restarts a run.
    run_tmpl = task["Templates"][1]
    assert (run_tmpl["ChangeMode"], run_tmpl["Envvars"], run_tmpl["Perms"]) == ("noop", True, "0600")
    items = {"CHUTES_RUN_TOKEN_r1": "cjt_one", "CHUTES_RUN_TOKEN_r2": "cjt_two", "CHUTES_INVOKE_SECRET": "s"}
    for run_id, token in (("r1", "cjt_one"), ("r2", "cjt_two")):
        text = devcluster_templates.render(
            devcluster_templates.parse(run_tmpl["EmbeddedTmpl"]),
            lambda ns, path: items if path == f"nomad/jobs/{job['ID']}" else {},
            "default",
            env={"NOMAD_META_run_id": run_id},
        )
        assert devcluster_templates.parse_env(text) == {"CHUTES_RUN_TOKEN": token}
    assert_valid("Job", job)
    docker = render_batch_job(m, "train", RELEASE, RenderSettings(scheduler_url="http://s", driver="docker"))
    assert "ports" not in task_of(docker)["Config"]
    assert_valid("Job", docker)
    with pytest.raises(RenderError, match="no job 'other'"):
        render_batch_job(m, "other", RELEASE, SETTINGS)
    with pytest.raises(RenderError, match="invalid job name"):
        render_batch_job(m, "a b", RELEASE, SETTINGS)


def test_render_is_deterministic_and_json_serialisable() -> None:
    a = render_chute_job(manifest(), RELEASE, SETTINGS)
    b = render_chute_job(manifest(), RELEASE, SETTINGS)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


# --- hostile input -----------------------------------------------------------------------------------------


HOSTILE_NAMES = [
    "a",
    "x" * 128,
    "org/model.v2",
    "A.B-C_D/e.f",
    "weird..dots",
    "trailing-",
    "chutes",  # same as the fixed tag
    "user.bob",  # looks like another tag's prefix: it is a value, never parsed
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_valid_but_odd_names_change_values_only(name: str) -> None:
    reference = render_chute_job(manifest(), RELEASE, SETTINGS)
    job = render_chute_job(manifest(username="a-b_c", name=name), RELEASE, SETTINGS)
    assert shape(job) == shape(reference)
    assert job["TaskGroups"][0]["Services"][0]["Tags"] == ["chutes", "user:a-b_c", f"chute:{name}"]
    assert job["ID"] == f"chute-{chute_id('a-b_c', name)}"
    assert_valid("Job", job)


@settings(max_examples=60, deadline=None)
@given(
    username=st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,62}\Z"),
    name=st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,40}(/[A-Za-z0-9][A-Za-z0-9._-]{0,40})?\Z"),
)
def test_any_valid_identity_renders_the_same_structure(username: str, name: str) -> None:
    reference = shape(render_chute_job(manifest(), RELEASE, SETTINGS))
    job = render_chute_job(manifest(username=username, name=name), RELEASE, SETTINGS)
    assert shape(job) == reference
    assert job["Meta"]["chute_name"] == name


def forged(**fields: Any) -> Manifest:
    """A manifest that skipped validation (as model_construct or a bug elsewhere would produce)."""
    base = manifest().model_dump()
    base.update(fields)
    base["image"] = ImageSpec.model_construct(**base["image"])
    base["node_selector"] = manifest().node_selector
    base["cords"] = manifest().cords
    return Manifest.model_construct(**base)


@pytest.mark.parametrize(
    "fields",
    [
        {"username": "${attr.unique.hostname}"},
        {"name": "x${NOMAD_META_chute_id}"},
        {"name": "a\nb"},
        {"username": "Alice"},
        {"chute_id": "not-the-right-id"},
    ],
)
def test_forged_identities_are_refused(fields: dict[str, Any]) -> None:
    m = forged(**fields)
    if "chute_id" not in fields:
        m = m.model_copy(update={"chute_id": chute_id(m.username, m.name)})
    with pytest.raises(RenderError):
        render_chute_job(m, RELEASE, SETTINGS)


@pytest.mark.parametrize(
    "ref",
    [
        "evil.example/${CHUTES_INVOKE_SECRET}:latest",
        "image\n--privileged",
        "UPPER/case",
        "Library/image",
        "ok/image:tag with space",
        "",
    ],
)
def test_hostile_image_references_are_refused_for_docker(ref: str) -> None:
    m = manifest().model_copy(update={"image": ImageSpec.model_construct(ref=ref, dockerfile=None)})
    with pytest.raises(RenderError):
        render_chute_job(m, RELEASE, RenderSettings(scheduler_url="http://s", driver="docker"))


@pytest.mark.parametrize(
    "ref", ["python:3.12", "ghcr.io/org/img:v1.2", "localhost:5000/a/b@sha256:" + "a" * 64, "parachutes/x"]
)
def test_ordinary_image_references_are_accepted(ref: str) -> None:
    m = manifest().model_copy(update={"image": ImageSpec(ref=ref)})
    job = render_chute_job(m, RELEASE, RenderSettings(scheduler_url="http://s", driver="docker"))
    assert task_of(job)["Config"]["image"] == ref


@pytest.mark.parametrize(
    "release",
    [
        ChuteRelease("nothex"),
        ChuteRelease(SHA, count=-1),
        ChuteRelease(SHA, preferred_model="tpu_v5"),
        ChuteRelease(SHA, preferred_nodes=("${node.unique.id}",)),
        ChuteRelease(SHA, secret_names=("BAD NAME",)),
        ChuteRelease(SHA, secret_names=('X" }}{{ key "consul"',)),
        ChuteRelease(SHA, secret_names=("CHUTES_INVOKE_SECRET",)),
    ],
)
def test_bad_release_values_are_refused(release: ChuteRelease) -> None:
    with pytest.raises(RenderError):
        render_chute_job(manifest(), release, SETTINGS)


def test_settings_are_checked_too() -> None:
    with pytest.raises(RenderError, match="interpolate"):
        render_chute_job(manifest(), RELEASE, RenderSettings(scheduler_url="http://${attr.unique.hostname}"))
    with pytest.raises(RenderError, match="runtime_command"):
        render_chute_job(manifest(), RELEASE, RenderSettings(scheduler_url="http://s", runtime_command=()))
