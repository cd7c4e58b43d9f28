"""The HCL job files: they parse, and jobs_hcl/chute.nomad.hcl agrees with the renderer on what matters."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import hcl2
import pytest
from hcl2 import SerializationOptions

from chutes.chute.node_selector import NodeSelector
from chutes.identity import chute_id
from chutes.manifest import CordSpec, ImageSpec, Manifest
from chutes.scheduler.placement import min_vram_mib
from chutes.scheduler.render import ENV_NAMES, ChuteRelease, RenderSettings, render_chute_job

JOBS_HCL = Path(__file__).resolve().parents[2] / "jobs_hcl"
OPTIONS = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
_DURATION = re.compile(r"^(\d+)(s|m|h)$")
_NS = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def load(name: str) -> dict[str, Any]:
    with (JOBS_HCL / name).open() as fh:
        data: dict[str, Any] = hcl2.load(fh, serialization_options=OPTIONS)
    return data


def block(items: list[dict[str, Any]], label: str | None = None) -> dict[str, Any]:
    """The body of the (only, or labelled) block in a python-hcl2 block list."""
    if label is None:
        assert len(items) == 1, items
        return items[0]
    found = [item[label] for item in items if label in item]
    assert len(found) == 1, f"no single block {label!r} in {items}"
    body: dict[str, Any] = found[0]
    return body


class Evaluator:
    """Just enough of HCL's expressions to evaluate this project's job files with given variables."""

    def __init__(self, variables: dict[str, Any]) -> None:
        self.vars = variables

    def expr(self, text: str) -> Any:
        text = text.strip()
        if m := re.fullmatch(r"var\.(\w+)", text):
            return self.vars[m.group(1)]
        if m := re.fullmatch(r"var\.(\w+)\[(\d+)\]", text):
            return self.vars[m.group(1)][int(m.group(2))]
        if m := re.fullmatch(r'join\("(.*)", var\.(\w+)\)', text):
            return m.group(1).join(self.vars[m.group(2)])
        if m := re.fullmatch(r'join\("(.*)", sort\(var\.(\w+)\)\)', text):
            return m.group(1).join(sorted(self.vars[m.group(2)]))
        if m := re.fullmatch(r"substr\(var\.(\w+), (\d+), (\d+)\)", text):
            start, length = int(m.group(2)), int(m.group(3))
            return self.vars[m.group(1)][start : start + length]
        if m := re.fullmatch(r"slice\(var\.(\w+), (\d+), length\(var\.\w+\)\)", text):
            return self.vars[m.group(1)][int(m.group(2)) :]
        if m := re.fullmatch(r"var\.(\w+) \* var\.(\w+)", text):
            return self.vars[m.group(1)] * self.vars[m.group(2)]
        raise AssertionError(f"expression not understood by the test's evaluator: {text}")

    def value(self, raw: Any) -> Any:
        if isinstance(raw, list):
            return [self.value(v) for v in raw]
        if not isinstance(raw, str):
            return raw
        if m := re.fullmatch(r"\$\{(.*)\}", raw, flags=re.DOTALL):
            inner = m.group(1)
            if not _runtime(inner) and "${" not in inner:
                return self.expr(inner)
        # Interpolations inside a longer string: HCL variables are evaluated, Nomad's runtime ones kept.
        return re.sub(
            r"\$\{([^}]*)\}", lambda mm: mm.group(0) if _runtime(mm.group(1)) else str(self.expr(mm.group(1))), raw
        )


def _runtime(expr: str) -> bool:
    return expr.split(".")[0] in ("meta", "device", "node", "attr") or expr.startswith("NOMAD_")


def duration_ns(text: str) -> int:
    m = _DURATION.fullmatch(text)
    assert m, text
    return int(m.group(1)) * _NS[m.group(2)]


@pytest.fixture
def rendered_and_hcl() -> tuple[dict[str, Any], dict[str, Any], Evaluator]:
    username, name = "alice", "org/model-7b"
    sha = hashlib.sha256(b"b").hexdigest()
    selector = NodeSelector(gpu_count=2, min_vram_gb_per_gpu=40, include=["a100", "h100_sxm"])
    manifest = Manifest(
        chute_id=chute_id(username, name),
        username=username,
        name=name,
        image=ImageSpec(ref="python:3.12"),
        node_selector=selector,
        cords=[CordSpec(name="f", path="/f", public_api_path="/f")],
        sdk_version="0.1.0",
    )
    release = ChuteRelease(sha, count=3, preferred_model="a100", secret_names=("HF_TOKEN", "API_KEY"))
    job = render_chute_job(manifest, release, RenderSettings(scheduler_url="http://sched:8700"))
    variables = {
        "chute_id": manifest.chute_id,
        "username": username,
        "chute_name": name,
        "bundle_sha256": sha,
        "secret_names": ["HF_TOKEN", "API_KEY"],
        "scheduler_url": "http://sched:8700",
        "count": 3,
        "eligible_gpus": selector.eligible_gpus,
        "preferred_gpu": "a100",
        "gpu_count": 2,
        "min_vram_mib": min_vram_mib(40),
    }
    hcl = load("chute.nomad.hcl")
    for item in hcl["variable"]:
        for var_name, spec in item.items():
            if var_name not in variables:
                assert "default" in spec, f"variable {var_name} has no default and the test gives no value"
                variables[var_name] = spec["default"]
    return job, hcl, Evaluator(variables)


def test_chute_hcl_agrees_with_the_renderer(
    rendered_and_hcl: tuple[dict[str, Any], dict[str, Any], Evaluator],
) -> None:
    job, hcl, ev = rendered_and_hcl
    body = block(hcl["job"], "chute")
    assert ev.value(body["id"]) == job["ID"]
    assert ev.value(body["name"]) == job["Name"]
    assert body["type"] == job["Type"]
    assert ev.value(body["datacenters"]) == job["Datacenters"]
    assert {k: ev.value(v) for k, v in block(body["meta"]).items()} == job["Meta"]
    (constraint,) = body["constraint"]
    assert {
        "LTarget": constraint["attribute"],
        "Operand": constraint["operator"],
        "RTarget": ev.value(constraint["value"]),
    } == job["Constraints"][0]
    affinity = block(block(body["dynamic"], "affinity")["content"])
    model_affinity = job["Affinities"][0]
    assert (affinity["attribute"], affinity["operator"], affinity["weight"]) == (
        model_affinity["LTarget"],
        model_affinity["Operand"],
        model_affinity["Weight"],
    )
    update = block(body["update"])
    assert duration_ns(update["healthy_deadline"]) == job["Update"]["HealthyDeadline"]
    assert duration_ns(update["progress_deadline"]) == job["Update"]["ProgressDeadline"]

    (group_json,) = job["TaskGroups"]
    group = block(body["group"], group_json["Name"])
    assert ev.value(group["count"]) == group_json["Count"]
    network = block(group["network"])
    assert network["mode"] == group_json["Networks"][0]["Mode"]
    assert [next(iter(p)) for p in network["port"]] == [p["Label"] for p in group_json["Networks"][0]["DynamicPorts"]]
    service, service_json = block(group["service"]), group_json["Services"][0]
    assert ev.value(service["name"]) == service_json["Name"]
    assert ev.value(service["tags"]) == service_json["Tags"]
    assert (service["port"], service["provider"]) == (service_json["PortLabel"], service_json["Provider"])
    check, check_json = block(service["check"]), service_json["Checks"][0]
    assert (check["type"], check["path"], check["name"]) == (check_json["Type"], check_json["Path"], check_json["Name"])
    assert duration_ns(check["interval"]) == check_json["Interval"]
    assert duration_ns(check["timeout"]) == check_json["Timeout"]
    restart = block(group["restart"])
    assert (restart["attempts"], restart["mode"]) == (
        group_json["RestartPolicy"]["Attempts"],
        group_json["RestartPolicy"]["Mode"],
    )
    assert duration_ns(group["shutdown_delay"]) == group_json["ShutdownDelay"]
    assert block(group["reschedule"])["unlimited"] is group_json["ReschedulePolicy"]["Unlimited"]

    task_json = group_json["Tasks"][0]
    task = block(group["task"], task_json["Name"])
    assert task["driver"] == task_json["Driver"]
    config = block(task["config"])
    assert ev.value(config["command"]) == task_json["Config"]["command"]
    assert ev.value(config["args"]) == task_json["Config"]["args"]
    env = {k: ev.value(v) for k, v in block(task["env"]).items()}
    assert env == task_json["Env"]
    assert set(ENV_NAMES) == set(env)
    template, template_json = block(task["template"]), task_json["Templates"][0]
    assert (template["destination"], template["env"], template["change_mode"], template["perms"]) == (
        template_json["DestPath"], template_json["Envvars"], template_json["ChangeMode"], template_json["Perms"],
    )  # fmt: skip
    assert duration_ns(template["splay"]) == template_json["Splay"]
    data = template["data"]
    for line in template_json["EmbeddedTmpl"].splitlines():  # the same lookups, written with HCL expressions
        if "CHUTES_INSTANCE_TOKEN" in line:
            assert 'CHUTES_INSTANCE_TOKEN_${substr(var.bundle_sha256, 0, 12)}"' in data
        elif "nomadVar" in line:
            assert 'nomadVar "nomad/jobs/chute-${var.chute_id}"' in data and job["ID"] in line
        elif line.startswith(("HF_TOKEN", "API_KEY")):
            assert '${name}="{{ index . "${name}" }}"' in data and "for name in sort(var.secret_names)" in data
        else:
            assert line.strip() in data
    assert duration_ns(task["kill_timeout"]) == task_json["KillTimeout"]
    resources, resources_json = block(task["resources"]), task_json["Resources"]
    assert ev.value(resources["cpu"]) == resources_json["CPU"]
    assert ev.value(resources["memory"]) == resources_json["MemoryMB"]
    device_json = resources_json["Devices"][0]
    device = block(resources["device"], device_json["Name"])
    assert ev.value(device["count"]) == device_json["Count"]
    (device_constraint,) = device["constraint"]
    assert {
        "LTarget": device_constraint["attribute"],
        "Operand": device_constraint["operator"],
        "RTarget": ev.value(device_constraint["value"]),
    } == device_json["Constraints"][0]


@pytest.mark.parametrize(
    ("file", "job_name", "group", "task", "service", "command"),
    [
        ("chutes-scheduler.nomad.hcl", "chutes-scheduler", "api", "scheduler", "chutes-scheduler", "chutes-scheduler"),
        ("chutes-gateway.nomad.hcl", "chutes-gateway", "gateway", "gateway", "chutes-gateway", "chutes-gateway"),
    ],
)
def test_service_jobs_parse_and_have_the_expected_shape(
    file: str, job_name: str, group: str, task: str, service: str, command: str
) -> None:
    hcl = load(file)
    body = block(hcl["job"], job_name)
    assert body["type"] == "service"
    group_body = block(body["group"], group)
    assert group_body["count"] == "${var.count}"
    assert block(group_body["constraint"])["operator"] == "distinct_hosts"
    service_body = block(group_body["service"])
    assert service_body["name"] == service
    assert block(service_body["check"])["path"] == "/healthz"
    task_body = block(group_body["task"], task)
    assert block(task_body["config"])["command"] == command
    env = block(task_body["env"])
    assert "CONSUL_HTTP_ADDR" in env
    # Secrets come from a Nomad variable through a template, never from the job file.
    template = block(task_body["template"])
    assert template["env"] is True
    assert f'nomadVar "nomad/jobs/{job_name}"' in template["data"]
    assert not any("KEY" in k or "TOKEN" in k for k in env)


def test_every_hcl_file_parses() -> None:
    files = sorted(JOBS_HCL.glob("*.nomad.hcl"))
    assert {f.name for f in files} >= {"chute.nomad.hcl", "chutes-scheduler.nomad.hcl", "chutes-gateway.nomad.hcl"}
    for f in files:
        assert "job" in load(f.name), f
