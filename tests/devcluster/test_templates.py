"""``template`` blocks on the devcluster: nomadVar into the task's environment, blocking until the variable
exists, Nomad's implicit workload access, ``change_mode`` restart one allocation at a time, noop, and clear
refusals of what the devcluster does not render. Also the pure parts: the template language and go-envparse."""

from __future__ import annotations

import json
import stat
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from chutes.devcluster.nomad.templates import (
    Blocked,
    EnvParseError,
    TemplateFailed,
    TemplateUnsupported,
    parse,
    parse_env,
    render,
)
from tests.devcluster.jobspecs import MS, S, python_task
from tests.support.devcluster import DevclusterHandle
from tests.support.polling import poll_until

# Answers GET / with the value of $SECRET (and its pid): what the task's environment holds.
ENV_SERVER = (
    "import os, http.server\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = (os.environ.get('SECRET', '<unset>') + '|' + str(os.getpid())).encode()\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()\n"
    "        self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    "http.server.HTTPServer(('127.0.0.1', int(os.environ['NOMAD_PORT_http'])), H).serve_forever()\n"
)
TEMPLATE = '{{ with nomadVar "nomad/jobs/JOB" }}\nSECRET="{{ index . "SECRET" }}"\n{{ end }}'


def template_job(job_id: str, count: int = 1, *, template: str | None = None, **tmpl: Any) -> dict[str, Any]:
    spec = {
        "EmbeddedTmpl": (template or TEMPLATE).replace("JOB", job_id),
        "DestPath": "secrets/app.env",
        "Envvars": True,
        "ChangeMode": "restart",
        "Perms": "0600",
        **tmpl,
    }
    return {
        "ID": job_id,
        "Name": job_id,
        "Type": "service",
        "Datacenters": ["dc1"],
        "TaskGroups": [
            {
                "Name": "web",
                "Count": count,
                "Networks": [{"Mode": "host", "DynamicPorts": [{"Label": "http"}]}],
                "Services": [{"Name": job_id, "PortLabel": "http", "Provider": "consul", "Checks": [
                    {"Name": "up", "Type": "http", "Path": "/", "Interval": 200 * MS, "Timeout": 1 * S}]}],
                "RestartPolicy": {"Attempts": 0, "Mode": "fail", "Interval": 60 * S, "Delay": 100 * MS},
                "Tasks": [python_task("server", ENV_SERVER, Templates=[spec], KillTimeout=2 * S,
                                      Resources={"CPU": 100, "MemoryMB": 64})],
            }
        ],
    }  # fmt: skip


def register(dc: DevclusterHandle, job: dict[str, Any]) -> None:
    dc.nomad().jobs.register_job({"Job": job})


def allocs(dc: DevclusterHandle, job_id: str) -> list[dict[str, Any]]:
    stubs = dc.nomad().job.get_allocations(job_id)
    return sorted((dc.nomad().allocation.get_allocation(a["ID"]) for a in stubs if a["DesiredStatus"] == "run"),
                  key=lambda a: a["Name"])  # fmt: skip


def port(alloc: dict[str, Any]) -> int:
    return int(alloc["AllocatedResources"]["Shared"]["Ports"][0]["Value"])


def answer(alloc: dict[str, Any]) -> tuple[str, str] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port(alloc)}/", timeout=2) as resp:
            value, pid = resp.read().decode().split("|")
            return value, pid
    except OSError:
        return None


def events(alloc: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in alloc["TaskStates"]["server"]["Events"] if e["Type"] == kind]


def passing(dc: DevclusterHandle, service: str) -> int:
    _, entries = dc.consul().health.service(service, passing=True)
    return len(entries)


# -- on the devcluster --------------------------------------------------------------------------------------


def test_a_task_waits_for_its_variable_then_gets_it_in_its_environment(dc: DevclusterHandle) -> None:
    register(dc, template_job("tpl-wait"))
    pending = poll_until(lambda: [a for a in allocs(dc, "tpl-wait") if events(a, "Template")], "blocked event")
    assert events(pending[0], "Template")[0]["DisplayMessage"].startswith(
        "Missing: nomad.var.block(nomad/jobs/tpl-wait@default.global)"
    )
    assert pending[0]["TaskStates"]["server"]["State"] == "pending"

    dc.nomad().variable.create_variable("nomad/jobs/tpl-wait", {"Items": {"SECRET": "s3cret with spaces"}})
    alloc = poll_until(lambda: next((a for a in allocs(dc, "tpl-wait") if answer(a)), None), "the task answering")
    assert answer(alloc) is not None and answer(alloc)[0] == "s3cret with spaces"  # type: ignore[index]
    rendered = Path(dc.data_dir) / "allocs" / alloc["ID"] / "server" / "secrets" / "app.env"
    assert rendered.read_text().strip() == 'SECRET="s3cret with spaces"'
    assert stat.S_IMODE(rendered.stat().st_mode) == 0o600
    assert "s3cret" not in json.dumps(dc.nomad().job.get_job("tpl-wait")), "the value never enters the job"


def test_an_env_file_that_does_not_parse_fails_the_task(dc: DevclusterHandle) -> None:
    # The writer must escape values for the env file (the scheduler does); a bare quote breaks the line.
    dc.nomad().variable.create_variable("nomad/jobs/tpl-broken", {"Items": {"SECRET": 'a"b'}})
    register(dc, template_job("tpl-broken"))
    failed = poll_until(lambda: [a for a in allocs(dc, "tpl-broken") if events(a, "Task hook failed")], "failure")
    message = events(failed[0], "Task hook failed")[0]["DisplayMessage"]
    assert "Template failed to read environment variables" in message and "unmatched" in message
    assert 'a"b' not in message


def test_restart_on_change_one_allocation_at_a_time(dc: DevclusterHandle) -> None:
    dc.nomad().variable.create_variable("nomad/jobs/tpl-roll", {"Items": {"SECRET": "v1"}})
    register(dc, template_job("tpl-roll", count=2))
    poll_until(lambda: passing(dc, "tpl-roll") == 2, "two passing instances", timeout=30)
    before = {a["ID"]: answer(a) for a in allocs(dc, "tpl-roll")}
    assert [v[0] for v in before.values() if v] == ["v1", "v1"]

    never_both_down = True
    dc.nomad().variable.create_variable("nomad/jobs/tpl-roll", {"Items": {"SECRET": "v2"}})
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        now = [answer(a) for a in allocs(dc, "tpl-roll")]
        if not any(now):
            never_both_down = False
        if all(v is not None and v[0] == "v2" for v in now) and len(now) == 2:
            break
        time.sleep(0.05)
    after = allocs(dc, "tpl-roll")
    assert {a["ID"] for a in after} == set(before), "restarted in place: same allocations"
    assert all((answer(a) or ("", ""))[0] == "v2" for a in after)
    assert all(answer(a)[1] != before[a["ID"]][1] for a in after)  # type: ignore[index]  # new processes
    assert never_both_down, "both instances were down at once"
    first, second = sorted(after, key=lambda a: events(a, "Restart Signaled")[0]["Time"])
    restarted = [e for e in events(first, "Started") if e["Time"] > events(first, "Restart Signaled")[0]["Time"]]
    assert restarted and events(second, "Restart Signaled")[0]["Time"] > restarted[0]["Time"], "one at a time"
    assert events(first, "Restart Signaled")[0]["DisplayMessage"] == "Template with change_mode restart re-rendered"
    assert all(a["TaskStates"]["server"]["Restarts"] == 1 for a in after)

    # An unchanged write renders the same bytes: no restart.
    dc.nomad().variable.create_variable("nomad/jobs/tpl-roll", {"Items": {"SECRET": "v2", "UNUSED": "x"}})
    time.sleep(1.0)
    assert all(a["TaskStates"]["server"]["Restarts"] == 1 for a in allocs(dc, "tpl-roll"))


def test_noop_rewrites_the_file_only(dc: DevclusterHandle) -> None:
    dc.nomad().variable.create_variable("nomad/jobs/tpl-noop", {"Items": {"SECRET": "a"}})
    register(dc, template_job("tpl-noop", ChangeMode="noop"))
    alloc = poll_until(lambda: next((a for a in allocs(dc, "tpl-noop") if answer(a)), None), "answering")
    rendered = Path(dc.data_dir) / "allocs" / alloc["ID"] / "server" / "secrets" / "app.env"
    dc.nomad().variable.create_variable("nomad/jobs/tpl-noop", {"Items": {"SECRET": "b"}})
    poll_until(lambda: 'SECRET="b"' in rendered.read_text(), "the file re-rendered")
    assert answer(alloc)[0] == "a"  # type: ignore[index]  # env=true with noop: the running env stays
    assert allocs(dc, "tpl-noop")[0]["TaskStates"]["server"]["Restarts"] == 0


def test_a_task_reads_only_its_own_jobs_variables(dc: DevclusterHandle) -> None:
    dc.nomad().variable.create_variable("nomad/jobs/someone-else", {"Items": {"SECRET": "theirs"}})
    other = TEMPLATE.replace("JOB", "someone-else")
    register(dc, template_job("tpl-thief", template=other))
    blocked = poll_until(lambda: [a for a in allocs(dc, "tpl-thief") if events(a, "Template")], "blocked")
    message = events(blocked[0], "Template")[0]["DisplayMessage"]
    assert "nomad.var.block(nomad/jobs/someone-else@default.global)" in message and "may read only" in message
    time.sleep(0.5)
    assert allocs(dc, "tpl-thief")[0]["TaskStates"]["server"]["State"] == "pending"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"template": "{{ range .Tuples }}{{ .K }}={{ .V }}{{ end }}"}, "{{ range .Tuples }} is not supported"),
        ({"template": '{{ key "consul/key" }}'}, 'template action {{ key "consul/key" }} is not supported'),
        ({"ChangeMode": "script"}, "ChangeMode 'script' is not supported by the devcluster"),
        ({"ChangeMode": "signal"}, "cannot use signals with env var templates"),
        ({"SourcePath": "/etc/passwd"}, "SourcePath is not supported"),
        ({"DestPath": "../../../etc/x"}, "destination escapes allocation directory"),
        ({"template": '{{ with nomadVar "x" }}'}, "without its {{ end }}"),
    ],
)
def test_what_the_devcluster_does_not_render_is_refused(
    dc: DevclusterHandle, changes: dict[str, Any], message: str
) -> None:
    template = changes.pop("template", None)
    job = template_job("tpl-bad", template=template, **changes)
    request = urllib.request.Request(f"{dc.nomad_addr}/v1/jobs", data=json.dumps({"Job": job}).encode(), method="PUT")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400 and message in json.loads(refused.value.read())["detail"]


# -- the pure parts -------------------------------------------------------------------------------------------


def test_the_template_language() -> None:
    parsed = parse('A\n{{- with nomadVar "nomad/jobs/x" -}}\n{{ .K1 }}/{{ index . "k-2" }}/{{ .NOPE }}\n{{- end }}\nZ')
    items = {"K1": "one", "k-2": "two"}
    assert render(parsed, lambda ns, path: items, "default") == "Aone/two/\nZ"
    assert parsed.variables("default") == {("default", "nomad/jobs/x")}
    assert parse('{{/* note */}}{{ with nomadVar "p@prod" }}{{ end }}').variables("default") == {("prod", "p")}
    custom = parse('[[ with nomadVar "p" ]][[ .A ]][[ end ]]', "[[", "]]")
    assert render(custom, lambda ns, path: {"A": "a"}, "default") == "a"

    def missing(ns: str, path: str) -> dict[str, str]:
        raise Blocked(path, ns)

    with pytest.raises(Blocked, match=r"nomad\.var\.block\(nomad/jobs/x@default\.global\)"):
        render(parsed, missing, "default")
    with pytest.raises(TemplateFailed, match="no entry for key 'NOPE'"):
        render(parsed, lambda ns, path: items, "default", missing_key_error=True)
    for bad in ("{{ .K }}", "{{ end }}", '{{ with nomadVar "a" }}{{ with nomadVar "b" }}{{ end }}{{ end }}',
                "{{ printf \"%s\" 1 }}", "{{ .K "):  # fmt: skip
        with pytest.raises(TemplateUnsupported):
            parse(bad)


def test_env_and_keys_made_from_the_task_environment() -> None:
    """``env "NAME"`` reads the task's environment (Nomad's template runner gives it the task's, NOMAD_META_*
    included), and an item can be named by it: how a dispatched run finds its own item of the job's variable."""
    parsed = parse(
        '{{ with nomadVar "nomad/jobs/j" }}'
        'T="{{ index . (printf "TOKEN_%s" (env "NOMAD_META_run_id")) }}" R={{ env "NOMAD_META_run_id" }} '
        'K={{ index . (env "WHICH") }} P={{ index . (printf "%s_%s%%" (env "A") "lit") }}{{ end }}'
    )
    items = {"TOKEN_r1": "t-one", "TOKEN_r2": "t-two", "picked": "yes", "a_lit%": "pct"}
    env = {"NOMAD_META_run_id": "r1", "WHICH": "picked", "A": "a"}
    assert render(parsed, lambda ns, path: items, "default", env=env) == 'T="t-one" R=r1 K=yes P=pct'
    assert render(parsed, lambda ns, path: items, "default", env={"NOMAD_META_run_id": "r2"}).startswith('T="t-two"')
    with pytest.raises(TemplateFailed, match="TOKEN_r9"):
        render(parsed, lambda ns, path: items, "default", env={"NOMAD_META_run_id": "r9"}, missing_key_error=True)
    assert render(parse('{{ env "X" }}-{{ env "Y" }}'), lambda ns, path: {}, "default", env={"X": "x"}) == "x-"
    for bad in ('{{ with nomadVar "a" }}{{ index . (printf "%d" (env "X")) }}{{ end }}',
                '{{ with nomadVar "a" }}{{ index . (printf "%s %s" (env "X")) }}{{ end }}',
                '{{ with nomadVar "a" }}{{ index . (env "X" }}{{ end }}',
                '{{ with nomadVar "a" }}{{ index . (key "X") }}{{ end }}',
                '{{ with nomadVar "a" }}{{ index . "X" "Y" }}{{ end }}'):  # fmt: skip
        with pytest.raises(TemplateUnsupported):
            parse(bad)


def test_env_files_as_go_envparse_reads_them() -> None:
    text = (
        "# comment\n\nA=plain value # trailing\nexport B='single $quoted # kept'\n"
        'C="esc \\"q\\" \\\\ \\n \\t"\nD=\nE = spaced \n'
    )
    assert parse_env(text) == {
        "A": "plain value", "B": "single $quoted # kept", "C": 'esc "q" \\ \n \t', "D": "", "E": "spaced",
    }  # fmt: skip
    bad_lines = [("NOEQUALS", 'missing "="'), ("1A=x", "key must be"), ('A="open', 'unmatched "'),
                 ("A='open", "unmatched '"), ('A="\\x"', "invalid escape"), ("A=\x01", "invalid value")]  # fmt: skip
    for bad, why in bad_lines:
        with pytest.raises(EnvParseError, match=why):
            parse_env(bad)
