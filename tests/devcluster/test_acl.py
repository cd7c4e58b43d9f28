"""ACLs on the devcluster, driven with the real clients (python-nomad, py-consul) as against a real cluster.

Bootstrap, policies (HCL and JSON rules), client and management tokens, the status codes and messages of
refusals, Consul's filtered lists, tokens as each API reads them, persistence across a restart; and the
environment raw_exec tasks inherit (never the platform's credentials).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import consul
import httpx
import pytest
from nomad.api.exceptions import BadRequestNomadException, URLNotAuthorizedNomadException

from chutes.devcluster.acl.policy import ConsulRules, NomadRules
from chutes.devcluster.acl.rules import RulesError
from tests.devcluster.jobspecs import python_task
from tests.support.devcluster import DevclusterHandle, devcluster
from tests.support.polling import poll_until

pytestmark = pytest.mark.timeout(120)

NOMAD_READER = 'namespace "default" { policy = "read" }\nnode { policy = "read" }'
NOMAD_LOGS = 'namespace "*" { capabilities = ["read-logs"] }'


@pytest.fixture
def acl_dc() -> Iterator[DevclusterHandle]:
    with devcluster(("gpu-a=a10:1",), extra_args=["--acl"]) as handle:
        yield handle


def _consul(dc: DevclusterHandle, token: str | None = None) -> consul.Consul:
    c = dc.consul(token=token)
    c.token = token  # py-consul reads CONSUL_HTTP_TOKEN first; the explicit token must win here
    return c


def test_bootstrap_once_then_tokens_and_policies_decide(acl_dc: DevclusterHandle) -> None:
    dc = acl_dc
    assert httpx.get(f"{dc.nomad_addr}/v1/status/leader").status_code == 200  # open, as in Nomad
    with pytest.raises(URLNotAuthorizedNomadException):
        dc.nomad().jobs.get_jobs()
    boot = dc.nomad().acl.generate_bootstrap()
    assert boot["Type"] == "management" and boot["Name"] == "Bootstrap Token"
    again = httpx.post(f"{dc.nomad_addr}/v1/acl/bootstrap")
    assert again.status_code == 400 and "ACL bootstrap already done" in again.json()["detail"]
    admin = dc.nomad(token=boot["SecretID"])
    admin.acl.create_policy("reader", {"Name": "reader", "Rules": NOMAD_READER})
    admin.acl.create_policy("logs", {"Name": "logs", "Rules": NOMAD_LOGS})
    reader = admin.acl.create_token({"Name": "r", "Type": "client", "Policies": ["reader"]})
    as_reader = dc.nomad(token=reader["SecretID"])
    assert as_reader.jobs.get_jobs() == [] and len(as_reader.nodes.get_nodes()) == 2
    assert as_reader.acl.get_self_token()["Policies"] == ["reader"]
    job = {"Job": {"ID": "x", "Name": "x", "Type": "batch", "Datacenters": ["dc1"],
                   "TaskGroups": [{"Name": "g", "Tasks": [python_task("t", "pass")]}]}}  # fmt: skip
    with pytest.raises(URLNotAuthorizedNomadException):
        as_reader.jobs.register_job(job)  # read is not submit-job
    with pytest.raises(URLNotAuthorizedNomadException):
        as_reader.acl.get_tokens()  # management only
    assert admin.jobs.register_job(job)["EvalID"]
    # Nomad's answers: 403 "Permission denied" for a missing permission and for an unknown secret.
    for headers in ({"X-Nomad-Token": reader["SecretID"]}, {"X-Nomad-Token": "00000000-0000-0000-0000-000000000000"}):
        refused = httpx.post(f"{dc.nomad_addr}/v1/jobs", headers=headers, json=job)
        assert refused.status_code == 403 and refused.json()["detail"] == "Permission denied"
    unknown_self = httpx.get(f"{dc.nomad_addr}/v1/acl/token/self", headers={"X-Nomad-Token": "nope"})
    assert unknown_self.status_code == 403 and unknown_self.json()["detail"] == "ACL token not found"
    # Tokens as Nomad reads them: the header or a bearer token; there is no ?token=.
    bearer = httpx.get(f"{dc.nomad_addr}/v1/jobs", headers={"Authorization": f"Bearer {reader['SecretID']}"})
    assert bearer.status_code == 200
    assert httpx.get(f"{dc.nomad_addr}/v1/jobs", params={"token": reader["SecretID"]}).status_code == 403
    # Capabilities: read-logs without read-job reads logs but not the job; the namespace glob matches.
    logs = admin.acl.create_token({"Name": "l", "Type": "client", "Policies": ["logs"]})
    alloc_id = admin.job.get_allocations("x")[0]["ID"]
    headers = {"X-Nomad-Token": logs["SecretID"]}
    plain = {"task": "t", "type": "stdout", "plain": "true"}
    assert httpx.get(f"{dc.nomad_addr}/v1/client/fs/logs/{alloc_id}", params=plain, headers=headers).status_code == 200
    assert httpx.get(f"{dc.nomad_addr}/v1/job/x", headers=headers).status_code == 403
    # The event stream: each topic asked for must be readable; every topic needs a management token.
    stream = f"{dc.nomad_addr}/v1/event/stream"
    reader_headers = {"X-Nomad-Token": reader["SecretID"]}
    for params, status in (({"topic": "Job"}, 403), ({}, 403), ({"topic": "*"}, 403)):
        assert httpx.get(stream, params=params, headers=headers).status_code == status, params  # the logs token
    with httpx.stream("GET", stream, params={"topic": "Job", "index": "0"}, headers=reader_headers) as resp:
        assert resp.status_code == 200
    assert httpx.get(stream, headers=reader_headers).status_code == 403  # all topics: management only
    # Bad rules are a 400 naming the problem; a token of a deleted policy loses what it granted.
    with pytest.raises(BadRequestNomadException):
        admin.acl.create_policy("bad", {"Name": "bad", "Rules": 'namespace "default" { policy = "admin" }'})
    admin.acl.delete_policy("reader")
    with pytest.raises(URLNotAuthorizedNomadException):
        as_reader.jobs.get_jobs()


def test_consul_rules_exact_over_prefix_deny_wins_and_lists_are_filtered(acl_dc: DevclusterHandle) -> None:
    dc = acl_dc
    anonymous = _consul(dc)
    with pytest.raises(consul.ACLPermissionDenied) as denied:
        anonymous.kv.put("chutes/x", "1")
    detail = json.loads(str(denied.value))["detail"]
    assert detail.startswith("Permission denied: anonymous token lacks permission 'key:write' on \"chutes/x\"")
    boot = anonymous.acl.bootstrap()
    with pytest.raises(consul.ACLPermissionDenied):
        anonymous.acl.bootstrap()  # once only (403, as Consul answers)
    admin = _consul(dc, boot["SecretID"])
    writer_rules = 'key_prefix "chutes/" { policy = "write" }\nkey "chutes/locked" { policy = "deny" }'
    created = httpx.put(f"{dc.consul_addr}/v1/acl/policy", headers={"X-Consul-Token": boot["SecretID"]},
                        json={"Name": "kv-writer", "Rules": writer_rules})  # fmt: skip
    assert created.status_code == 200, created.text
    # py-consul sends dict rules as JSON text: the JSON form of the same language.
    admin.acl.policy.create("svc-reader", rules={"service_prefix": {"chute-": {"policy": "read"}},
                                                  "node_prefix": {"": {"policy": "read"}}})  # fmt: skip
    token = admin.acl.token.create(description="t", policies_name=["kv-writer", "svc-reader"])["SecretID"]
    c = _consul(dc, token)
    assert c.kv.put("chutes/nodes/a", "1")
    with pytest.raises(consul.ACLPermissionDenied):
        c.kv.put("other/key", "1")
    with pytest.raises(consul.ACLPermissionDenied):
        c.kv.put("chutes/locked", "1")  # the exact rule wins over the prefix
    admin.kv.put("other/key", "secret")
    keys = c.kv.get("", keys=True)[1]
    assert keys == ["chutes/nodes/a"]  # filtered, not refused
    for name, port in (("chute-a", 1001), ("secret-svc", 1002)):
        admin.agent.service.register(name, service_id=name, address="127.0.0.1", port=port)
    assert set(c.catalog.services()[1]) == {"chute-a"}
    assert c.health.service("secret-svc")[1] == []
    assert [e["Service"]["ID"] for e in c.health.service("chute-a")[1]] == ["chute-a"]
    with pytest.raises(consul.ACLPermissionDenied):
        c.agent.service.register("chute-b", service_id="chute-b", address="127.0.0.1", port=1003)  # read only
    # Tokens as Consul reads them, ?token= included; an unknown secret is 403 "ACL not found".
    assert httpx.get(f"{dc.consul_addr}/v1/kv/chutes/nodes/a", params={"token": token}).status_code == 200
    bearer = httpx.get(f"{dc.consul_addr}/v1/kv/chutes/nodes/a", headers={"Authorization": f"Bearer {token}"})
    assert bearer.status_code == 200
    unknown = httpx.get(f"{dc.consul_addr}/v1/kv/chutes/nodes/a", headers={"X-Consul-Token": "nope"})
    assert unknown.status_code == 403 and unknown.json()["detail"] == "ACL not found"
    assert c.acl.token.read_self()["Description"] == "t"


def test_variables_need_their_paths_capabilities_and_lists_leave_out_the_rest(tmp_path: Path) -> None:
    """The scheduler's policy (chutes.dev.acl) on Nomad Variables, with python-nomad, as Nomad checks it: read,
    write and destroy per path; a list never refuses but leaves out what the token may not list; a lost
    check-and-set shows the items only to a token that may read them."""
    from chutes.dev.acl import POLICIES

    with devcluster(("gpu-a=a10:1",), nomad_token="n-mgmt") as dc:
        admin = dc.nomad(token="n-mgmt")
        admin.variable.create_variable("nomad/jobs/other", {"Items": {"K": "theirs"}})
        admin.acl.create_policy("sched", {"Name": "sched", "Rules": POLICIES["scheduler"][0]})
        writer_rules = 'namespace "default" { variables { path "nomad/jobs/chute-*" { capabilities = ["write"] } } }'
        admin.acl.create_policy("writer", {"Name": "writer", "Rules": writer_rules})

        def client(policy: str) -> Any:
            made = admin.acl.create_token({"Name": policy, "Type": "client", "Policies": [policy]})
            return dc.nomad(token=made["SecretID"])

        sched, writer = client("sched"), client("writer")

        sched.variable.create_variable("nomad/jobs/chute-1", {"Items": {"CHUTES_INVOKE_SECRET": "s1"}})
        assert sched.variable.get_variable("nomad/jobs/chute-1")["Items"] == {"CHUTES_INVOKE_SECRET": "s1"}
        assert [v["Path"] for v in sched.variables.get_variables(prefix="nomad/jobs/")] == ["nomad/jobs/chute-1"]
        for call in (lambda: sched.variable.get_variable("nomad/jobs/other"),
                     lambda: sched.variable.create_variable("nomad/jobs/other", {"Items": {"K": "mine"}}),
                     lambda: sched.variable.delete_variable("nomad/jobs/other")):  # fmt: skip
            with pytest.raises(URLNotAuthorizedNomadException):
                call()
        assert admin.variable.get_variable("nomad/jobs/other")["Items"] == {"K": "theirs"}
        # Another namespace named in the body is checked too (the request's namespace is "default").
        other_ns = httpx.put(f"{dc.nomad_addr}/v1/var/nomad/jobs/chute-1", headers={"X-Nomad-Token": sched.token},
                             json={"Namespace": "prod", "Items": {"K": "v"}})  # fmt: skip
        assert other_ns.status_code == 403, other_ns.text

        # write includes list, not read: the writer sees the path, never the items, even in a 409.
        assert [v["Path"] for v in writer.variables.get_variables()] == ["nomad/jobs/chute-1"]
        with pytest.raises(URLNotAuthorizedNomadException):
            writer.variable.get_variable("nomad/jobs/chute-1")
        lost = httpx.put(f"{dc.nomad_addr}/v1/var/nomad/jobs/chute-1", params={"cas": 1},
                         headers={"X-Nomad-Token": writer.token}, json={"Items": {"X": "y"}})  # fmt: skip
        assert lost.status_code == 409 and lost.json()["Path"] == "nomad/jobs/chute-1"
        assert "Items" not in lost.json(), lost.json()
        seen = httpx.put(f"{dc.nomad_addr}/v1/var/nomad/jobs/chute-1", params={"cas": 1},
                         headers={"X-Nomad-Token": sched.token}, json={"Items": {"X": "y"}})  # fmt: skip
        assert seen.status_code == 409 and "Items" in seen.json()

        # No token: reads refused, lists empty (Nomad filters them rather than refusing).
        anonymous = dc.nomad()
        with pytest.raises(URLNotAuthorizedNomadException):
            anonymous.variable.get_variable("nomad/jobs/chute-1")
        assert anonymous.variables.get_variables() == []
        assert sched.variable.delete_variable("nomad/jobs/chute-1").status_code == 204


def test_tokens_survive_a_restart(tmp_path: Path) -> None:
    with devcluster(("gpu-a=a10:1",), data_dir=tmp_path / "data", nomad_token="n-mgmt", consul_token="c-mgmt") as dc:
        admin = dc.nomad(token="n-mgmt")
        admin.acl.create_policy("reader", {"Name": "reader", "Rules": NOMAD_READER})
        secret = admin.acl.create_token({"Name": "r", "Type": "client", "Policies": ["reader"]})["SecretID"]
        dc.restart()
        assert dc.nomad(token=secret).jobs.get_jobs() == []
        assert dc.nomad(token="n-mgmt").acl.get_policy("reader")["Rules"] == NOMAD_READER
        with pytest.raises(consul.ACLPermissionDenied):
            _consul(dc).kv.get("x")


def test_rules_parser_accepts_hcl_and_json_and_names_errors() -> None:
    nomad_rules = NomadRules.parse(
        '# comment\nnamespace "prod-*" {\n  policy = "read"\n  capabilities = ["dispatch-job"]\n'
        '  variables { path "nomad/jobs/*" { capabilities = ["write"] } }\n}\nnode { policy = "write" }\n'
    )
    allows = nomad_rules.allows_namespace
    assert allows("prod-eu", "dispatch-job") and allows("prod-eu", "read-job")
    assert not allows("prod-eu", "submit-job") and not allows("dev", "read-job")
    # As Nomad: write includes list, not read or destroy.
    assert nomad_rules.allows_variable("prod-eu", "nomad/jobs/chute-1", "list")
    assert nomad_rules.allows_variable("prod-eu", "nomad/jobs/chute-1", "write")
    assert not nomad_rules.allows_variable("prod-eu", "nomad/jobs/chute-1", "read")
    assert not nomad_rules.allows_variable("prod-eu", "nomad/jobs/chute-1", "destroy")
    assert nomad_rules.allows("node", "read") and not nomad_rules.allows("agent", "read")
    merged = NomadRules.merged([nomad_rules, NomadRules.parse('namespace "prod-eu" { policy = "deny" }')])
    assert not merged.allows_namespace("prod-eu", "read-job")  # deny wins
    consul_rules = ConsulRules.parse(json.dumps({"key_prefix": {"a/": {"policy": "write"}}, "operator": "read"}))
    assert consul_rules.allows("key", "a/b", "write") and consul_rules.allows("operator", "", "read")
    for bad in ('namespace "x" { policy = "owner" }', 'namespace "x" {', 'bogus { policy = "read" }'):
        with pytest.raises(RulesError):
            NomadRules.parse(bad)


def test_tasks_do_not_inherit_the_platforms_credentials(tmp_path: Path) -> None:
    platform_env = {
        "CHUTES_ADMIN_KEY": "cnk_admin-secret", "CHUTES_GATEWAY_KEY": "cnk_gw-secret", "NOMAD_TOKEN": "nomad-secret",
        "CONSUL_HTTP_TOKEN": "consul-secret", "AWS_SECRET_ACCESS_KEY": "aws-secret", "MY_API_KEY": "api-secret",
        "DB_PASSWORD": "db-secret", "HARMLESS_SETTING": "kept",
    }  # fmt: skip
    code = "import json, os; print(json.dumps(dict(os.environ)), flush=True)"
    with devcluster(("gpu-a=a10:1",), env=platform_env) as dc:
        n = dc.nomad()
        task = python_task("t", code, Env={"CHUTES_CHUTE_ID": "c1"})
        n.jobs.register_job({"Job": {"ID": "envcheck", "Name": "envcheck", "Type": "batch", "Datacenters": ["dc1"],
                                     "TaskGroups": [{"Name": "g", "Tasks": [task]}]}})  # fmt: skip
        allocs = poll_until(
            lambda: (a := n.job.get_allocations("envcheck")) and a[0]["ClientStatus"] == "complete" and a,
            "the envcheck allocation complete",
            30,
            0.2,
        )
        out = httpx.get(f"{dc.nomad_addr}/v1/client/fs/logs/{allocs[0]['ID']}",
                        params={"task": "t", "type": "stdout", "plain": "true"}).text  # fmt: skip
    env = json.loads(out)
    assert not {k for k, v in env.items() if v.endswith("-secret")}, env
    assert env["HARMLESS_SETTING"] == "kept" and env["PATH"]
    assert env["CHUTES_CHUTE_ID"] == "c1" and env["NOMAD_JOB_ID"] == "envcheck"  # the task's own
