"""Nomad Variables on the devcluster: python-nomad's ``variable``/``variables`` endpoints, raw HTTP for the exact
answers (status codes, headers, bodies), and the scheduler's own client (``NomadClient``)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import nomad
import pytest

from chutes.scheduler.nomad_api import NomadClient, VariableConflict
from tests.support.devcluster import DevclusterHandle


def raw(dc: DevclusterHandle, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{dc.nomad_addr}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            text = resp.read()
            return resp.status, dict(resp.headers), json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        text = exc.read()
        return exc.code, dict(exc.headers), json.loads(text) if text else None


def test_python_nomad_create_read_list_delete(dc: DevclusterHandle) -> None:
    n = dc.nomad()
    created = n.variable.create_variable("nomad/jobs/web", {"Items": {"API_KEY": "k1", "DB": "postgres://x"}})
    assert created["Path"] == "nomad/jobs/web" and created["Namespace"] == "default"
    assert created["Items"] == {"API_KEY": "k1", "DB": "postgres://x"}
    assert created["CreateIndex"] == created["ModifyIndex"] > 0 and created["CreateTime"] > 1e18  # UnixNano

    read = n.variable.get_variable("nomad/jobs/web")
    assert read == created
    assert "nomad/jobs/web" in n.variable and "nomad/jobs/none" not in n.variable

    n.variable.create_variable("nomad/jobs/web/api", {"Items": {"X": "1"}})
    n.variable.create_variable("apps/other", {"Items": {"Y": "2"}})
    listed = n.variables.get_variables(prefix="nomad/jobs/web")
    assert [v["Path"] for v in listed] == ["nomad/jobs/web", "nomad/jobs/web/api"]
    assert all("Items" not in v for v in listed), "lists carry metadata only"
    assert {v["Path"] for v in n.variables.get_variables()} >= {"apps/other", "nomad/jobs/web"}
    assert n.variables["apps/other"]["Path"] == "apps/other"

    deleted = n.variable.delete_variable("nomad/jobs/web/api")
    assert deleted.status_code == 204 and deleted.content == b""
    with pytest.raises(nomad.api.exceptions.URLNotFoundNomadException):
        n.variable.get_variable("nomad/jobs/web/api")
    assert n.variable.delete_variable("nomad/jobs/web/api").status_code == 204  # missing: still 204


def test_check_and_set_as_nomad_answers_it(dc: DevclusterHandle) -> None:
    n = dc.nomad()
    first = n.variable.create_variable("cas/one", {"Items": {"a": "1"}}, cas=0)  # cas=0: create only
    with pytest.raises(nomad.api.exceptions.VariableConflict) as lost:
        n.variable.create_variable("cas/one", {"Items": {"a": "2"}}, cas=0)
    assert lost.value.nomad_resp.status_code == 409
    assert lost.value.nomad_resp.json()["Items"] == {"a": "1"}  # the current variable

    second = n.variable.create_variable("cas/one", {"Items": {"a": "2"}}, cas=first["ModifyIndex"])
    assert second["ModifyIndex"] > first["ModifyIndex"] and second["CreateIndex"] == first["CreateIndex"]
    status, headers, body = raw(dc, "PUT", f"/v1/var/cas/one?cas={first['ModifyIndex']}", {"Items": {"a": "3"}})
    assert status == 409 and body["ModifyIndex"] == second["ModifyIndex"] and body["Items"] == {"a": "2"}
    assert headers["X-Nomad-Index"] == str(second["ModifyIndex"])

    status, headers, body = raw(dc, "PUT", "/v1/var/cas/missing?cas=7", {"Items": {"a": "1"}})
    assert status == 409 and body["CreateIndex"] == 0 and body["ModifyIndex"] == 0 and "Items" not in body
    assert body["Path"] == "cas/missing" and headers["X-Nomad-Index"] == "0"

    status, _, body = raw(dc, "DELETE", "/v1/var/cas/one?cas=0")  # cas=0 on an existing one: conflict
    assert status == 409 and body["Items"] == {"a": "2"}
    status, _, _ = raw(dc, "DELETE", f"/v1/var/cas/one?cas={second['ModifyIndex']}")
    assert status == 204
    assert raw(dc, "DELETE", "/v1/var/cas/one?cas=0")[0] == 204  # missing and cas=0: fine

    same = n.variable.create_variable("cas/same", {"Items": {"k": "v"}})
    again = n.variable.create_variable("cas/same", {"Items": {"k": "v"}})
    assert again["ModifyIndex"] == same["ModifyIndex"], "an unchanged write keeps the index"


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("bad path", {"Items": {"a": "1"}}, 'invalid path "bad path"'),
        ("x" * 129, {"Items": {"a": "1"}}, "invalid path"),
        ("nomad", {"Items": {"a": "1"}}, '"nomad" is a reserved top-level directory path'),
        ("nomad/other", {"Items": {"a": "1"}}, 'only paths at "nomad/jobs" or "nomad/job-templates"'),
        ("ok/empty", {"Items": {}}, "variable missing required Items object"),
        ("ok/none", {"Path": "ok/none"}, "variable missing required Items object"),
        ("ok/big", {"Items": {"a": "x" * 65536}}, "variables are limited to 64KiB in total size"),
        ("ok/number", {"Items": {"a": 1}}, "Items must be an object of string values"),
        ("ok/unknown", {"Items": {"a": "1"}, "Itemz": {}}, "unknown field(s) Itemz"),
    ],
)
def test_invalid_writes_are_400_with_nomads_words(dc: DevclusterHandle, path: str, body: Any, message: str) -> None:
    status, _, answer = raw(dc, "PUT", "/v1/var/" + urllib.request.quote(path), body)
    assert status == 400 and message in answer["detail"]


def test_other_answers(dc: DevclusterHandle) -> None:
    assert raw(dc, "GET", "/v1/var/")[0] == 400
    status, _, body = raw(dc, "GET", "/v1/var/never/written")
    assert status == 404 and body["detail"] == "variable not found"
    assert raw(dc, "PUT", "/v1/var/x?cas=abc", {"Items": {"a": "1"}})[0] == 400
    status, _, body = raw(dc, "PUT", "/v1/var/x?namespace=*", {"Items": {"a": "1"}})
    assert status == 400 and "wildcard" in body["detail"]
    assert raw(dc, "GET", "/v1/vars?prefix=does/not/exist")[2] == []
    raw(dc, "PUT", "/v1/var/ns/one?namespace=prod", {"Items": {"a": "1"}})
    assert [v["Namespace"] for v in raw(dc, "GET", "/v1/vars?prefix=ns/&namespace=*")[2]] == ["prod"]
    assert raw(dc, "GET", "/v1/vars?prefix=ns/")[2] == []  # the default namespace holds none


def test_a_blocking_read_returns_when_the_variable_changes(dc: DevclusterHandle) -> None:
    n = dc.nomad()
    n.variable.create_variable("watch/me", {"Items": {"v": "1"}})
    _, headers, _ = raw(dc, "GET", "/v1/var/watch/me")
    index = int(headers["X-Nomad-Index"])
    timer = threading.Timer(0.5, lambda: n.variable.create_variable("watch/me", {"Items": {"v": "2"}}))
    timer.start()
    started = time.monotonic()
    status, headers, body = raw(dc, "GET", f"/v1/var/watch/me?index={index}&wait=10s")
    timer.join()
    assert status == 200 and body["Items"] == {"v": "2"} and int(headers["X-Nomad-Index"]) > index
    assert 0.3 < time.monotonic() - started < 5


def test_variables_survive_a_restart(fresh_dc: DevclusterHandle) -> None:
    fresh_dc.nomad().variable.create_variable("nomad/jobs/keep", {"Items": {"TOKEN": "t"}})
    for name in ("state.json", "state.json.journal"):  # the journal holds the variable until compacted
        saved = fresh_dc.data_dir / name
        assert saved.stat().st_mode & 0o077 == 0, f"{name} holds secrets: owner-only"
    fresh_dc.restart()
    assert fresh_dc.nomad().variable.get_variable("nomad/jobs/keep")["Items"] == {"TOKEN": "t"}


async def test_the_scheduler_client(dc: DevclusterHandle) -> None:
    async with NomadClient(dc.nomad_addr, timeout_s=10) as client:
        assert await client.read_variable("nomad/jobs/client") is None
        first = await client.put_variable("nomad/jobs/client", {"SECRET": "s3cr3t-value"}, cas=0)
        var = await client.read_variable("nomad/jobs/client")
        assert var is not None and var.items == {"SECRET": "s3cr3t-value"} and var.modify_index == first
        assert "s3cr3t-value" not in repr(var)
        with pytest.raises(VariableConflict) as lost:
            await client.put_variable("nomad/jobs/client", {"SECRET": "other"}, cas=0)
        assert lost.value.current_index == first and "s3cr3t-value" not in str(lost.value)
        second = await client.put_variable("nomad/jobs/client", {"SECRET": "rotated"}, cas=first)
        assert second > first
        assert [v["Path"] for v in await client.list_variables("nomad/jobs/client")] == ["nomad/jobs/client"]
        with pytest.raises(VariableConflict):
            await client.delete_variable("nomad/jobs/client", cas=first)
        await client.delete_variable("nomad/jobs/client")
        await asyncio.sleep(0)
        assert await client.read_variable("nomad/jobs/client") is None
