"""Builders shared by the scheduler's tests: manifests and bundles as the SDK would send them."""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

from chutes.identity import chute_id
from chutes.manifest import Manifest

CHUTE_SOURCE = """\
from chutes.chute import Chute, NodeSelector

chute = Chute(username="{username}", name="{name}", image="python:3.11", node_selector=NodeSelector(**{selector}))


@chute.cord(public_api_path="/echo")
async def echo(self, text: str) -> dict:
    return {{"text": text}}
"""


def manifest(username: str = "alice", name: str = "echo", **overrides: Any) -> dict[str, Any]:
    """A valid manifest as JSON-ready data; ``node_selector`` etc. may be overridden."""
    data: dict[str, Any] = {
        "chute_id": chute_id(username, name),
        "username": username,
        "name": name,
        "image": {"ref": "python:3.11", "dockerfile": None},
        "node_selector": {"gpu_count": 1},
        "cords": [{"name": "echo", "path": "/echo", "public_api_path": "/echo"}],
        "sdk_version": "0.1.0",
    }
    data.update(overrides)
    return Manifest.model_validate(data).model_dump(mode="json")


def bundle(files: dict[str, bytes | str] | None = None, entrypoint: str = "app:chute") -> bytes:
    """A gzip tar bundle with ``files`` plus ``chutes_bundle.json``."""
    files = dict(files or {"app.py": "print('hello')\n"})
    files.setdefault("chutes_bundle.json", json.dumps({"entrypoint": entrypoint, "sdk_version": "0.1.0"}))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def evil_bundle(member: str) -> bytes:
    """A bundle whose only member has a hostile path (absolute, ``..``)."""
    return bundle({member: "x", "chutes_bundle.json": "{}"})
