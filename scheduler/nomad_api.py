"""Nomad's HTTP API for the scheduler: python-nomad, off the event loop, with domain errors.

python-nomad is synchronous (requests), so every call runs in this client's own thread pool (blocking queries
hold a thread for up to their wait, and must not starve ``asyncio.to_thread``'s shared pool). Where python-nomad
has gaps, its own requester (same session, token, namespace and region) makes the raw call:

- job scale (``POST /v1/job/:id/scale``): python-nomad has no method;
- blocking queries (``?index=&wait=``): python-nomad drops the ``X-Nomad-Index`` header;
- dispatch idempotency: python-nomad sends the token in the body, Nomad reads it from the query string;
- log streaming: python-nomad reads the whole body, so it cannot follow; httpx streams it instead.

Errors become ``NomadUnavailable`` (connection, timeout, 5xx), ``NomadForbidden`` (403), ``JobNotFound`` and
friends (404), ``IndexConflict`` (a register with EnforceIndex that lost a race) or ``NomadRejected`` (other 4xx),
each with a message that says what to do.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncGenerator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
import requests
from nomad.api import exceptions as nomad_exc
from nomad.api.base import Requester

from chutes.core.blocking import parse_index
from chutes.core.cluster_tls import ClusterTLS, explain, python_nomad

T = TypeVar("T")

DEFAULT_ADDR = "http://127.0.0.1:4646"
_INDEX_CONFLICT = "Enforcing job modify index"


# -- errors -------------------------------------------------------------------------------------------------


class NomadError(Exception):
    """Any failure talking to Nomad; ``hint`` says what to do about it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class NomadUnavailable(NomadError):
    """Nomad could not be reached, timed out or failed internally (retry later)."""


class NomadRejected(NomadError):
    """Nomad refused the request as invalid; ``detail`` is its own explanation."""

    def __init__(self, message: str, detail: str, status: int, hint: str = "") -> None:
        super().__init__(message, hint)
        self.detail = detail
        self.status = status


def scaling_blocked(exc: NomadError) -> bool:
    """Nomad refused a scale because a deployment of the job is active (it answers 400 until that ends)."""
    return isinstance(exc, NomadRejected) and "blocked due to active deployment" in exc.detail


class NomadForbidden(NomadRejected):
    """The ACL token is missing or lacks a capability."""


class IndexConflict(NomadRejected):
    """A register with EnforceIndex found another JobModifyIndex: someone else changed the job first."""


class NomadNotFound(NomadError):
    """The object does not exist (any more)."""


class JobNotFound(NomadNotFound):
    pass


class AllocationNotFound(NomadNotFound):
    pass


class EvaluationNotFound(NomadNotFound):
    pass


class VariableConflict(NomadRejected):
    """A variable write or delete with ``cas`` lost: ``current_index`` is the variable's ModifyIndex now (0: none).

    The message never carries the variable's items (Nomad's 409 body holds them).
    """

    def __init__(self, path: str, current_index: int) -> None:
        super().__init__(f"variable {path}: changed concurrently (ModifyIndex {current_index})", "cas", 409,
                         "read it again and retry")  # fmt: skip
        self.current_index = current_index


# -- values -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Indexed(Generic[T]):
    """The answer of a blocking query: the value and the ``X-Nomad-Index`` to pass to the next one."""

    index: int
    value: T


@dataclass(frozen=True, slots=True)
class RegisterResult:
    eval_id: str | None  # None when no evaluation was created (e.g. a parameterized job)
    job_modify_index: int
    warnings: str = ""


@dataclass(frozen=True, slots=True)
class DispatchResult:
    dispatched_job_id: str
    eval_id: str | None


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The parts of a Nomad evaluation the scheduler acts on."""

    id: str
    job_id: str
    status: str  # blocked | pending | complete | failed | canceled
    status_description: str
    failed_tg_allocs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    queued_allocations: Mapping[str, int] = field(default_factory=dict)
    blocked_eval: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Evaluation:
        return cls(
            id=data.get("ID", ""),
            job_id=data.get("JobID", ""),
            status=data.get("Status", ""),
            status_description=data.get("StatusDescription") or "",
            failed_tg_allocs=data.get("FailedTGAllocs") or {},
            queued_allocations=data.get("QueuedAllocations") or {},
            blocked_eval=data.get("BlockedEval") or None,
        )

    @property
    def placement_failed(self) -> bool:
        return bool(self.failed_tg_allocs)

    def explanation(self) -> str:
        """Why Nomad could not place, one line per task group, from its allocation metrics."""
        return "; ".join(
            f"{group}: {explain_metric(metric)}" for group, metric in sorted(self.failed_tg_allocs.items())
        )


@dataclass(frozen=True, slots=True)
class NomadVariable:
    """A Nomad Variable as read (``items`` are secrets: never log or show them)."""

    path: str
    items: Mapping[str, str] = field(repr=False)
    modify_index: int = 0


def explain_metric(metric: Mapping[str, Any]) -> str:
    """E.g. "0 of 3 nodes: 2 filtered by ${meta.chutes_gpu_model} set_contains_any a100, 1 exhausted (devices)"."""
    evaluated = metric.get("NodesEvaluated") or 0
    parts = [f"{n} filtered by {reason}" for reason, n in sorted((metric.get("ConstraintFiltered") or {}).items())]
    parts += [f"{n} exhausted ({dim})" for dim, n in sorted((metric.get("DimensionExhausted") or {}).items())]
    if not parts and metric.get("NodesFiltered"):
        parts.append(f"{metric['NodesFiltered']} filtered")
    if not evaluated:
        parts.append("no node is ready in the job's datacenters")
    coalesced = metric.get("CoalescedFailures") or 0
    more = f" ({coalesced + 1} allocations)" if coalesced else ""
    return f"0 of {evaluated} nodes{more}: " + (", ".join(parts) or "no reason given")


def allocation_gpu_ids(alloc: Mapping[str, Any], task: str | None = None) -> list[str]:
    """The GPU (device instance) IDs a full allocation holds, from ``AllocatedResources``."""
    tasks = ((alloc.get("AllocatedResources") or {}).get("Tasks")) or {}
    ids: list[str] = []
    for name, resources in tasks.items():
        if task is not None and name != task:
            continue
        for device in (resources or {}).get("Devices") or []:
            if (device.get("Type") or "gpu") == "gpu":
                ids += device.get("DeviceIDs") or []
    return ids


def allocation_port(alloc: Mapping[str, Any], label: str) -> int | None:
    """The host port Nomad gave the allocation for ``label``."""
    shared = ((alloc.get("AllocatedResources") or {}).get("Shared")) or {}
    for port in shared.get("Ports") or []:
        if port.get("Label") == label:
            return int(port["Value"])
    for network in shared.get("Networks") or []:
        for port in (network.get("DynamicPorts") or []) + (network.get("ReservedPorts") or []):
            if port.get("Label") == label:
                return int(port["Value"])
    return None


# -- client -------------------------------------------------------------------------------------------------


class _Raw(Requester):  # type: ignore[misc]
    """python-nomad's requester for any path: same session, token, namespace and region handling."""

    ENDPOINT = ""

    def _endpoint_builder(self, *args: str) -> str:
        return f"{self.version}/" + "/".join(a for a in args if a)


class NomadClient:
    """Async access to one Nomad cluster (or the devcluster) at ``address``."""

    def __init__(
        self,
        address: str = DEFAULT_ADDR,
        *,
        token: str | None = None,
        namespace: str | None = None,
        region: str | None = None,
        timeout_s: float = 10.0,
        tls: ClusterTLS | None = None,
        max_threads: int = 16,
    ) -> None:
        self.address = address.rstrip("/")
        self._timeout = timeout_s
        self._token = token
        self._namespace = namespace
        self._region = region
        # NOMAD_CACERT, NOMAD_CLIENT_CERT/KEY, NOMAD_TLS_SERVER_NAME, NOMAD_SKIP_VERIFY (chutes.core.cluster_tls).
        self.tls = tls or ClusterTLS.from_env("nomad")
        self._session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=max_threads)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._nomad = python_nomad(
            self.address,
            token,
            tls=self.tls,
            namespace=namespace,
            region=region,
            timeout=timeout_s,
            session=self._session,
        )
        self._raw = _Raw(**self._nomad.requester_settings)
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="nomad-api")
        self._closed = False

    async def __aenter__(self) -> NomadClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._session.close()

    # -- plumbing --

    async def _call(self, what: str, fn: Callable[[], T], not_found: type[NomadNotFound] | None = None) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, fn)
        except nomad_exc.BaseNomadException as exc:
            raise self._translate(what, exc, not_found) from None
        except requests.RequestException as exc:  # raised outside python-nomad's wrapper (e.g. while streaming)
            raise self._unreachable(what, exc) from None
        except RuntimeError:
            if self._closed:
                raise NomadUnavailable(f"{what}: the Nomad client is closed") from None
            raise

    def _translate(
        self, what: str, exc: nomad_exc.BaseNomadException, not_found: type[NomadNotFound] | None
    ) -> NomadError:
        resp = exc.nomad_resp
        if not isinstance(resp, requests.Response):
            return self._unreachable(what, exc)
        detail = _detail(resp)
        status = resp.status_code
        if _INDEX_CONFLICT in detail:
            return IndexConflict(
                f"{what}: the job changed since it was read ({detail})", detail, status, "read the job again and retry"
            )
        if status == 404 and not_found is not None:
            return not_found(f"{what}: not found ({detail})")
        if status == 403:
            return NomadForbidden(
                f"{what}: Nomad refused the ACL token ({detail})",
                detail,
                status,
                "set NOMAD_TOKEN to a token whose policy allows this (submit-job, read-job, dispatch-job, read-logs)",
            )
        if status >= 500 or status == 429:
            return NomadUnavailable(f"{what}: Nomad answered {status} ({detail})", "retry; check the Nomad servers")
        return NomadRejected(f"{what}: Nomad rejected the request ({detail})", detail, status)

    def _unreachable(self, what: str, exc: BaseException) -> NomadUnavailable:
        """A connection failure; a TLS one names the variable to set (chutes.core.cluster_tls.explain)."""
        tls_error = explain(exc, self.tls, self.address)
        if tls_error is not None:
            return NomadUnavailable(f"{what}: {tls_error}", tls_error.hint or _ADDR_HINT)
        cause = getattr(exc, "nomad_resp", exc)
        return NomadUnavailable(f"{what}: Nomad at {self.address} is unreachable ({cause})", _ADDR_HINT)

    def _raw_call(self, *path: str, method: str, **kwargs: Any) -> requests.Response:
        response: requests.Response = self._raw.request(*path, method=method, **kwargs)
        return response

    # -- jobs --

    async def register_job(
        self, job: Mapping[str, Any], *, enforce_index: int | None = None, preserve_counts: bool = False
    ) -> RegisterResult:
        """Create or update ``job``; with ``enforce_index`` only if its JobModifyIndex still is that (0: create)."""
        body: dict[str, Any] = {"Job": dict(job)}
        if enforce_index is not None:
            body.update(EnforceIndex=True, JobModifyIndex=enforce_index)
        if preserve_counts:
            body["PreserveCounts"] = True
        data = await self._call(f"register job {job.get('ID')}", lambda: self._nomad.jobs.register_job(body))
        return RegisterResult(
            eval_id=data.get("EvalID") or None,
            job_modify_index=int(data.get("JobModifyIndex") or 0),
            warnings=data.get("Warnings") or "",
        )

    async def read_job(self, job_id: str) -> dict[str, Any]:
        """The job; JobNotFound when there is none."""
        data: dict[str, Any] = await self._call(
            f"read job {job_id}", lambda: self._nomad.job.get_job(job_id), JobNotFound
        )
        return data

    async def find_job(self, job_id: str) -> dict[str, Any] | None:
        """The job, or None when there is none."""
        try:
            return await self.read_job(job_id)
        except JobNotFound:
            return None

    async def list_jobs(
        self, prefix: str = "", *, meta: bool = False, filter_: str | None = None
    ) -> list[dict[str, Any]]:
        """Job stubs whose ID starts with ``prefix``; ``meta=True`` includes each job's Meta."""
        data: list[dict[str, Any]] = await self._call(
            "list jobs", lambda: self._nomad.jobs.get_jobs(prefix=prefix or None, filter_=filter_, meta=meta or None)
        )
        return data

    async def deregister_job(self, job_id: str, *, purge: bool = True) -> str | None:
        """Stop the job (and with ``purge`` forget it); the evaluation ID, None for a job that is gone (Nomad
        1.4.6+ answers 200 without an evaluation; older ones 404, which is JobNotFound)."""
        data = await self._call(
            f"deregister job {job_id}", lambda: self._nomad.job.deregister_job(job_id, purge=purge), JobNotFound
        )
        return data.get("EvalID") or None

    async def scale_job(
        self,
        job_id: str,
        count: int,
        *,
        group: str = "instance",
        message: str = "",
        meta: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Set the count of ``group`` (python-nomad gap: ``POST /v1/job/:id/scale``); the evaluation ID."""
        body: dict[str, Any] = {"Count": count, "Target": {"Group": group}, "Message": message, "Error": False}
        if meta:
            body["Meta"] = dict(meta)
        response = await self._call(
            f"scale job {job_id}",
            lambda: self._raw_call("job", job_id, "scale", method="post", json=body),
            JobNotFound,
        )
        data: dict[str, Any] = response.json()
        return data.get("EvalID") or None

    async def dispatch_job(
        self,
        job_id: str,
        payload: bytes = b"",
        *,
        meta: Mapping[str, str] | None = None,
        idempotency_token: str | None = None,
    ) -> DispatchResult:
        """Dispatch the parameterized job once per ``idempotency_token`` (python-nomad gap: the token belongs in
        the query string, where Nomad reads it; dispatching again with the same token returns the same child)."""
        body: dict[str, Any] = {
            "Payload": base64.b64encode(payload).decode() if payload else "",
            "Meta": dict(meta or {}),
        }
        params = {"idempotency_token": idempotency_token} if idempotency_token else None
        response = await self._call(
            f"dispatch job {job_id}",
            lambda: self._raw_call("job", job_id, "dispatch", method="post", json=body, params=params),
            JobNotFound,
        )
        data = response.json()
        return DispatchResult(dispatched_job_id=data["DispatchedJobID"], eval_id=data.get("EvalID") or None)

    async def job_summary(self, job_id: str) -> dict[str, Any]:
        data: dict[str, Any] = await self._call(
            f"read summary of job {job_id}", lambda: self._nomad.job.get_summary(job_id), JobNotFound
        )
        return data

    # -- allocations and evaluations --

    async def job_allocations(self, job_id: str, *, all_: bool = False) -> list[dict[str, Any]]:
        """Allocation stubs of the job (no AllocatedResources: use ``read_allocation`` or ``allocations``)."""
        data: list[dict[str, Any]] = await self._call(
            f"list allocations of job {job_id}",
            lambda: self._nomad.job.get_allocations(job_id, all_=all_ or None),
            JobNotFound,
        )
        return data

    async def allocations(self, *, filter_: str | None = None, resources: bool = True) -> list[dict[str, Any]]:
        """Allocations across jobs, with AllocatedResources (GPU IDs, ports) when ``resources``."""
        data: list[dict[str, Any]] = await self._call(
            "list allocations",
            lambda: self._nomad.allocations.get_allocations(filter_=filter_, resources=resources or None),
        )
        return data

    async def read_allocation(self, alloc_id: str) -> dict[str, Any]:
        data: dict[str, Any] = await self._call(
            f"read allocation {alloc_id}", lambda: self._nomad.allocation.get_allocation(alloc_id), AllocationNotFound
        )
        return data

    async def read_evaluation(self, eval_id: str) -> Evaluation:
        data = await self._call(
            f"read evaluation {eval_id}", lambda: self._nomad.evaluation.get_evaluation(eval_id), EvaluationNotFound
        )
        return Evaluation.from_json(data)

    async def job_evaluations(self, job_id: str) -> list[Evaluation]:
        data = await self._call(
            f"list evaluations of job {job_id}", lambda: self._nomad.job.get_evaluations(job_id), JobNotFound
        )
        return [Evaluation.from_json(e) for e in data]

    async def latest_deployment(self, job_id: str) -> dict[str, Any] | None:
        """The job's latest deployment (``GET /v1/job/:id/deployment``), None when it has none."""
        data: dict[str, Any] | None = await self._call(
            f"read deployment of job {job_id}", lambda: self._nomad.job.get_deployment(job_id), JobNotFound
        )
        return data or None

    # -- nodes --

    async def list_nodes(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = await self._call("list nodes", lambda: self._nomad.nodes.get_nodes())
        return data

    async def read_node(self, node_id: str) -> dict[str, Any]:
        data: dict[str, Any] = await self._call(
            f"read node {node_id}", lambda: self._nomad.node.get_node(node_id), NomadNotFound
        )
        return data

    # -- blocking queries (python-nomad gap) --

    async def blocking_get(
        self, *path: str, index: int = 0, wait_s: float = 30.0, params: Mapping[str, Any] | None = None
    ) -> Indexed[Any]:
        """``GET /v1/<path...>?index=&wait=``: returns once the index passes ``index`` or ``wait_s`` elapses.

        A return does not mean anything changed; compare the index. An index that went backwards (a restarted
        cluster) is answered as is: callers start over from it.
        """
        query = {**(params or {}), "index": max(0, index), "wait": f"{max(0.0, wait_s):g}s"}
        # Nomad adds up to wait/16 of jitter; leave room for it and the transfer before calling it a timeout.
        timeout = wait_s + wait_s / 16 + self._timeout
        not_found = JobNotFound if path and path[0] == "job" else NomadNotFound
        response = await self._call(
            f"watch /{'/'.join(path)}",
            lambda: self._raw_call(*path, method="get", params=query, timeout=timeout),
            not_found,
        )
        return Indexed(index=parse_index(response.headers.get("X-Nomad-Index")), value=response.json())

    # -- logs (python-nomad gap: it cannot stream) --

    async def stream_logs(
        self,
        alloc_id: str,
        *,
        task: str = "runtime",
        stream: str = "stdout",
        follow: bool = False,
        origin: str = "start",
        offset: int = 0,
    ) -> AsyncGenerator[bytes, None]:
        """The task's log as it is written; with ``follow`` until the task ends or the caller stops iterating."""
        if stream not in ("stdout", "stderr"):
            raise ValueError("stream must be stdout or stderr")
        params: dict[str, str] = {
            "task": task,
            "type": stream,
            "follow": "true" if follow else "false",
            "origin": origin,
            "offset": str(offset),
        }
        if self._namespace:
            params["namespace"] = self._namespace
        if self._region:
            params["region"] = self._region
        headers = {"X-Nomad-Token": self._token} if self._token else {}
        url = f"{self.address}/v1/client/fs/logs/{alloc_id}"
        what = f"logs of allocation {alloc_id}"
        timeout = httpx.Timeout(self._timeout, read=None if follow else self._timeout)
        try:
            https = self.address.startswith("https://")
            extensions = {"sni_hostname": self.tls.server_name} if https and self.tls.server_name else None
            async with (
                httpx.AsyncClient(verify=self.tls.ssl_context() if https else True, timeout=timeout) as http,
                http.stream("GET", url, params=params, headers=headers, extensions=extensions) as response,
            ):
                if response.status_code != 200:
                    body = (await response.aread()).decode(errors="replace")
                    raise self._http_error(what, response.status_code, body)
                frames = _FrameDecoder()
                async for chunk in response.aiter_bytes():
                    for data in frames.feed(chunk):
                        yield data
        except httpx.HTTPError as exc:
            raise self._unreachable(what, exc) from None

    # -- variables (the secrets of a chute: nothing here puts items into a message) --

    async def read_variable(self, path: str) -> NomadVariable | None:
        """The variable at ``path`` (in this client's namespace), or None."""
        try:
            data = await self._call(
                f"read variable {path}", lambda: self._nomad.variable.get_variable(path), NomadNotFound
            )
        except NomadNotFound:
            return None
        return NomadVariable(path, dict(data.get("Items") or {}), int(data.get("ModifyIndex") or 0))

    async def put_variable(self, path: str, items: Mapping[str, str], *, cas: int | None = None) -> int:
        """Create or replace the variable (``cas``: only if its ModifyIndex is that, 0: only if absent); the
        ModifyIndex after the write. VariableConflict when ``cas`` lost."""
        body: dict[str, Any] = {"Path": path, "Items": dict(items)}
        if self._namespace:
            body["Namespace"] = self._namespace

        def put() -> Any:
            try:
                return self._nomad.variable.create_variable(path, body, cas=cas)
            except nomad_exc.VariableConflict as exc:
                return _conflict_index(exc)

        data = await self._call(f"write variable {path}", put)
        if isinstance(data, int):
            raise VariableConflict(path, data)
        return int(data.get("ModifyIndex") or 0)

    async def delete_variable(self, path: str, *, cas: int | None = None) -> None:
        """Delete the variable (a missing one is fine); VariableConflict when ``cas`` lost."""

        def delete() -> int | None:
            try:
                self._nomad.variable.delete_variable(path, cas=cas)
            except nomad_exc.VariableConflict as exc:
                return _conflict_index(exc)
            return None

        conflict = await self._call(f"delete variable {path}", delete)
        if conflict is not None:
            raise VariableConflict(path, conflict)

    async def list_variables(self, prefix: str = "") -> list[dict[str, Any]]:
        """Metadata (``Path``, ``ModifyIndex``, ...) of the variables under ``prefix``; never items."""
        data: list[dict[str, Any]] = await self._call(
            "list variables", lambda: self._nomad.variables.get_variables(prefix=prefix)
        )
        return data

    def _http_error(self, what: str, status: int, body: str) -> NomadError:
        detail = _detail_text(body)
        if status == 404:
            return AllocationNotFound(f"{what}: not found ({detail})")
        if status == 403:
            return NomadForbidden(f"{what}: Nomad refused the ACL token ({detail})", detail, status, _ACL_HINT)
        if status >= 500:
            return NomadUnavailable(f"{what}: Nomad answered {status} ({detail})")
        return NomadRejected(f"{what}: Nomad rejected the request ({detail})", detail, status)


def _conflict_index(exc: nomad_exc.BaseNomadException) -> int:
    """The current ModifyIndex from a 409 answer (its body is the variable, items included: read only this)."""
    resp = exc.nomad_resp
    try:
        return int(resp.headers.get("X-Nomad-Index") or resp.json().get("ModifyIndex") or 0)
    except (AttributeError, ValueError, TypeError):
        return 0


_ADDR_HINT = "check NOMAD_ADDR (or --nomad-addr) and that Nomad is running"
_ACL_HINT = "set NOMAD_TOKEN to a token whose policy allows read-logs"


class _FrameDecoder:
    """Nomad's framed log stream: concatenated JSON ``StreamFrame`` objects (``{}`` is a heartbeat)."""

    def __init__(self) -> None:
        self._buffer = ""
        self._decoder = json.JSONDecoder()

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buffer += chunk.decode()
        out: list[bytes] = []
        while True:
            text = self._buffer.lstrip()
            if not text:
                self._buffer = ""
                return out
            try:
                frame, end = self._decoder.raw_decode(text)
            except json.JSONDecodeError:
                self._buffer = text  # an incomplete frame: wait for more
                return out
            self._buffer = text[end:]
            if isinstance(frame, dict) and frame.get("Data"):
                out.append(base64.b64decode(frame["Data"]))


def _detail(resp: requests.Response) -> str:
    return _detail_text(resp.text)


def _detail_text(text: str) -> str:
    """Nomad answers errors as plain text; the devcluster as ``{"detail": ...}``; either way, one line."""
    text = text.strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("detail"), str):
        text = data["detail"]
    return " ".join(text.split())[:2000] or "no detail"
