"""``GET /v1/client/fs/logs/:alloc_id``: a task's stdout or stderr, whole, tailed, or followed."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import TYPE_CHECKING

from aiohttp import web

from chutes.devcluster.http_util import bad_request, not_found, query_bool, query_int
from chutes.devcluster.nomad.records import Allocation

if TYPE_CHECKING:
    from chutes.devcluster.nomad.cluster import NomadCluster

CHUNK = 64 * 1024
POLL_S = 0.1


async def stream_logs(request: web.Request, cluster: NomadCluster, alloc: Allocation) -> web.StreamResponse:
    task = request.query.get("task", "")
    kind = request.query.get("type", "")
    if not task:
        raise bad_request("must include task name")
    if kind not in ("stdout", "stderr"):
        raise bad_request("must include valid log type (stdout/stderr)")
    if task not in alloc.task_states:
        raise not_found(f"unknown task name {task!r}")
    origin = request.query.get("origin", "start")
    if origin not in ("start", "end"):
        raise bad_request("origin must be start or end")
    offset = query_int(request, "offset", 0)
    follow = query_bool(request, "follow")
    plain = query_bool(request, "plain")
    path = cluster.alloc_log_path(alloc, task, kind)
    size = path.stat().st_size if path.exists() else 0
    pos = max(0, size - offset) if origin == "end" else min(offset, size) if offset else 0
    resp = web.StreamResponse()
    resp.content_type = "text/plain" if plain else "application/json"
    await resp.prepare(request)
    name = f"alloc/logs/{task}.{kind}.0"
    while True:
        data = b""
        if path.exists():
            with path.open("rb") as fh:
                fh.seek(pos)
                data = fh.read(CHUNK)
        if data:
            pos += len(data)
            if plain:
                await resp.write(data)
            else:
                frame = {"Offset": pos, "Data": base64.b64encode(data).decode(), "File": name, "FileEvent": ""}
                await resp.write(json.dumps(frame).encode())
            continue
        if not follow or not cluster.task_running(alloc, task):
            break
        await asyncio.sleep(POLL_S)
    await resp.write_eof()
    return resp
