"""A tiny real HTTP server with the two instance endpoints of the scheduler (bundle download, job outputs)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.servers import loopback, uvicorn_thread

TOKEN = "instance-token-123"
RUN_TOKEN = "cjt_run-token-456"


@dataclass
class FakeScheduler:
    bundle: bytes = b""
    fail_next: int = 0  # answer 503 this many times first
    max_files: int = 1024  # more files in one upload: 413
    downloads: int = 0
    uploads: dict[str, dict[str, bytes]] = field(default_factory=dict)
    url: str = ""

    def app(self) -> Starlette:
        async def bundle(request: Request) -> Response:
            if request.headers.get("authorization") != f"Bearer {TOKEN}":
                return JSONResponse({"detail": "bad instance token"}, status_code=401)
            if self.fail_next:
                self.fail_next -= 1
                return JSONResponse({"detail": "restarting"}, status_code=503)
            self.downloads += 1
            return Response(self.bundle, media_type="application/gzip")

        async def outputs(request: Request) -> Response:
            if request.headers.get("authorization") != f"Bearer {RUN_TOKEN}":  # the run's token, never the instance's
                return JSONResponse({"detail": "bad run token"}, status_code=401)
            form = await request.form()
            files: dict[str, bytes] = {}
            for key, value in form.multi_items():
                assert key == "files" and isinstance(value, UploadFile) and value.filename
                files[value.filename] = await value.read()
            if len(files) > self.max_files:
                return JSONResponse({"detail": "too many files"}, status_code=413)
            self.uploads[request.path_params["run_id"]] = files
            return JSONResponse({"stored": sorted(files)})

        return Starlette(
            routes=[
                Route("/v1/instances/bundle", bundle),
                Route("/v1/instances/jobs/{run_id}/outputs", outputs, methods=["POST"]),
            ]
        )


@contextlib.contextmanager
def fake_scheduler(bundle: bytes = b"") -> Iterator[FakeScheduler]:
    state = FakeScheduler(bundle=bundle)
    with uvicorn_thread(loopback(state.app(), lifespan="off"), "the fake scheduler") as port:
        state.url = f"http://127.0.0.1:{port}"
        yield state
