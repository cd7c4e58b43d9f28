"""Jobs: run one job method of a chute to completion and report its outcome.

``chutes run FILE:ATTR --job NAME --input input.json --output-dir DIR`` (or, in a cluster, ``python -m
chutes.runtime --job NAME`` with the input from ``$NOMAD_TASK_DIR/payload.json``) runs the startup hooks, the
job (with its ``timeout``), then the shutdown hooks, and writes into the output folder:

- the files the job wrote there itself;
- ``result.json``: the job's return value, when it is not None;
- ``status.json``: ``job``, ``run_id``, ``status`` (``succeeded``, ``failed`` or ``cancelled``), ``error``,
  ``timed_out``, ``started_at`` / ``finished_at`` (ISO 8601, UTC), ``duration`` (seconds) and ``result`` (the
  return value when its JSON is at most 64 KiB, else null: read ``result.json``).

The output folder reaches the job as in Chutes: a job function that declares a parameter ``output_dir`` (or
``**kwargs`` / ``**job_data``) receives the folder's path (a ``str``) there, whatever the input says; every job
also finds it in the environment as ``CHUTES_JOB_OUTPUT_DIR``, and ``TMPDIR`` points at it (as in Chutes: the
temporary files a job leaves are outputs too). The input is validated by the job's input model: an invalid
input fails the run before any hook runs. SIGTERM (Nomad stopping the run) cancels an async job
(``cancelled``); a sync job cannot be interrupted and is abandoned at exit.

In a cluster the folder is then uploaded to ``$CHUTES_SCHEDULER_URL/v1/instances/jobs/$CHUTES_JOB_RUN_ID/outputs``
with ``CHUTES_RUN_TOKEN`` (docs/internal-contracts.md: one multipart POST, parts named ``files``); with
``upload=False`` only ``status.json`` and ``result.json`` are sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx
from pydantic import ValidationError
from pydantic_core import PydanticSerializationError, to_json

from chutes.runtime.config import ConfigError
from chutes.runtime.invoke import FuncKind, call_arguments, call_hook, func_kind, hook_name, run_in_daemon_thread
from chutes.runtime.protocols import ChuteLike, JobLike

log = logging.getLogger("chutes.runtime.jobs")

OUTPUT_DIR_PARAM = "output_dir"
OUTPUT_DIR_ENV = "CHUTES_JOB_OUTPUT_DIR"
RESULT_INLINE_LIMIT = 64 * 1024
UPLOAD_ATTEMPTS = 5


@dataclass(slots=True)
class JobOutcome:
    """What ``status.json`` says about one run."""

    job: str
    run_id: str | None
    status: str
    error: str | None
    timed_out: bool
    started_at: str
    finished_at: str
    duration: float
    result: Any = None

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


class JobFailed(Exception):
    """A run that cannot succeed: invalid input, a failing startup hook, a timeout."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class UploadError(Exception):
    """The scheduler did not take a run's outputs."""

    hint = "the run's files are still in its output folder on the node"


def find_job(chute: ChuteLike, name: str) -> JobLike:
    for job in chute.jobs:
        if job.name == name:
            return job
    names = ", ".join(j.name for j in chute.jobs) or "none"
    raise ConfigError(f"the chute has no job named {name!r} (jobs: {names})")


def input_option(value: str, stdin: TextIO) -> Any:
    """The job input given as ``--input``: JSON text, ``@FILE``, ``-`` (standard input), or a JSON file's path."""
    where = "--input"
    if value == "-":
        text, where = stdin.read(), "the input on stdin"
    elif value.startswith("@"):
        path = Path(value[1:])
        if not path.is_file():
            raise ConfigError(f"job input file {path} does not exist", hint="--input takes JSON, @FILE or -")
        text, where = path.read_text(encoding="utf-8"), str(path)
    elif Path(value).is_file():  # a plain path, as `chutes run --input FILE` always took
        text, where = Path(value).read_text(encoding="utf-8"), value
    else:
        text = value
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(
            f"{where} is not valid JSON: {exc}", hint="--input takes JSON (e.g. '{\"n\": 3}'), @FILE or -"
        ) from None


def read_input(path: Path | None) -> Any:
    """The job input from a JSON file; an absent or empty file means no input."""
    if path is None or not path.exists():
        return None
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"job input {path} is not valid JSON: {exc}") from exc


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat().replace("+00:00", "Z")


def _arguments(
    chute: ChuteLike, job: JobLike, payload: Any, output_dir: Path
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    model_cls = job.input_model
    if model_cls is None:
        if payload not in (None, {}):
            log.warning("job %s takes no input; ignoring the input given", job.name)
        return (chute,), {}
    if payload is None:
        payload = {}
    if not job.takes_model:
        if not isinstance(payload, dict):
            raise JobFailed(f"the input of job {job.name!r} must be a JSON object, got {type(payload).__name__}")
        extra_allowed = model_cls.model_config.get("extra") == "allow"
        if OUTPUT_DIR_PARAM in model_cls.model_fields or extra_allowed:
            payload = {**payload, OUTPUT_DIR_PARAM: str(output_dir)}
    try:
        model = model_cls.model_validate(payload)
    except ValidationError as exc:
        raise JobFailed(f"invalid input for job {job.name!r}: {exc}") from exc
    return call_arguments(chute, model, job.takes_model)


async def _run_function(job: JobLike, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    kind = func_kind(job.func)
    if kind is FuncKind.ASYNC:
        return await job.func(*args, **kwargs)
    if kind in (FuncKind.ASYNC_GEN, FuncKind.SYNC_GEN):
        raise JobFailed(f"job {job.name!r} is a generator; a job returns its result (or writes files)")
    return await run_in_daemon_thread(lambda: job.func(*args, **kwargs))


@contextlib.contextmanager
def _job_environment(output_dir: Path) -> Iterator[None]:
    """CHUTES_JOB_OUTPUT_DIR and TMPDIR at the output folder while the job runs; the previous values after."""
    names = (OUTPUT_DIR_ENV, "TMPDIR")
    saved = {name: os.environ.get(name) for name in names}
    for name in names:
        os.environ[name] = str(output_dir)
    tempfile.tempdir = None  # tempfile caches the folder it chose: choose again, from TMPDIR
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        tempfile.tempdir = None


def run_job(chute: ChuteLike, job: JobLike, payload: Any, output_dir: Path, run_id: str | None = None) -> JobOutcome:
    """Hooks, job and outcome files (see the module docstring); never raises for a failing job."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with _job_environment(output_dir):
        outcome, result = asyncio.run(_execute(chute, job, payload, output_dir, run_id))
    if result is not None:
        try:
            encoded = to_json(result, indent=2)
        except PydanticSerializationError as exc:
            outcome.status, outcome.error = "failed", f"the job's return value is not JSON-serialisable: {exc}"
        else:
            (output_dir / "result.json").write_bytes(encoded)
            if len(encoded) <= RESULT_INLINE_LIMIT:
                outcome.result = json.loads(encoded)
    (output_dir / "status.json").write_text(json.dumps(asdict(outcome), indent=2) + "\n", encoding="utf-8")
    error = f" ({outcome.error})" if outcome.error else ""
    log.info("job %s: %s in %.3f s%s", job.name, outcome.status, outcome.duration, error)
    return outcome


async def _execute(
    chute: ChuteLike, job: JobLike, payload: Any, output_dir: Path, run_id: str | None
) -> tuple[JobOutcome, Any]:
    started = time.time()
    status, error, timed_out, result = "succeeded", None, False, None
    current = asyncio.current_task()
    loop = asyncio.get_running_loop()
    cancelled_by_signal = False
    hooks_started = False  # shutdown hooks run only for a run whose startup hooks ran

    def on_signal() -> None:
        nonlocal cancelled_by_signal
        cancelled_by_signal = True
        if current is not None:
            current.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        args, kwargs = _arguments(chute, job, payload, output_dir)
        hooks_started = True
        for hook in chute.startup_hooks:
            name = hook_name(hook)
            log.info("startup hook %s: running", name)
            try:
                await call_hook(hook, chute)
            except Exception as exc:
                raise JobFailed(f"startup hook {name} failed: {type(exc).__name__}: {exc}") from exc
        log.info("job %s: running (timeout %s)", job.name, f"{job.timeout} s" if job.timeout else "none")
        try:
            async with asyncio.timeout(job.timeout) as deadline:
                result = await _run_function(job, args, kwargs)
        except TimeoutError as exc:
            if not deadline.expired():
                raise  # a TimeoutError the job raised itself
            raise JobFailed(f"job {job.name!r} timed out after {job.timeout} s", timed_out=True) from exc
    except asyncio.CancelledError:
        if not cancelled_by_signal or current is None:
            raise
        current.uncancel()
        status, error = "cancelled", "the run was stopped (SIGTERM) before the job finished"
    except JobFailed as exc:
        status, error, timed_out = "failed", str(exc), exc.timed_out
        log.error("%s", error, exc_info=None if timed_out else exc.__cause__)
    except Exception as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        log.error("job %s failed: %s", job.name, error, exc_info=exc)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    for hook in chute.shutdown_hooks if hooks_started else ():
        try:
            await call_hook(hook, chute)
        except Exception as exc:
            log.error("shutdown hook %s failed: %s: %s", hook_name(hook), type(exc).__name__, exc, exc_info=exc)
    finished = time.time()
    outcome = JobOutcome(
        job=job.name,
        run_id=run_id,
        status=status,
        error=error,
        timed_out=timed_out,
        started_at=_iso(started),
        finished_at=_iso(finished),
        duration=round(finished - started, 6),
    )
    return outcome, result


def _output_files(output_dir: Path, include_all: bool) -> Iterator[tuple[str, Path]]:
    always = ("status.json", "result.json")
    if not include_all:
        for name in always:
            if (output_dir / name).is_file():
                yield name, output_dir / name
        return
    for path in sorted(output_dir.rglob("*")):
        # Links could point anywhere on the node: only regular files inside the folder are outputs.
        if not path.is_file() or path.is_symlink():
            continue
        relative = path.relative_to(output_dir)
        if any(part.startswith(".") for part in relative.parts):
            log.warning("not uploading hidden output %s (the scheduler keeps no hidden files)", relative)
            continue
        yield relative.as_posix(), path


def upload_outputs(
    scheduler_url: str,
    token: str,
    run_id: str,
    output_dir: Path,
    *,
    include_all: bool,
    transport: httpx.BaseTransport | None = None,
    backoff: Sequence[float] = (1, 2, 4, 8),
) -> list[str]:
    """POST the folder as multipart to the scheduler; returns the names sent. Retries connection errors and 5xx."""
    url = f"{scheduler_url.rstrip('/')}/v1/instances/jobs/{run_id}/outputs"
    files = list(_output_files(output_dir, include_all))
    last, refused = "", False
    with httpx.Client(transport=transport, timeout=httpx.Timeout(60.0, connect=10.0)) as client:
        for attempt in range(UPLOAD_ATTEMPTS):
            with ExitStack() as stack:
                parts = [
                    ("files", (name, stack.enter_context(path.open("rb")), "application/octet-stream"))
                    for name, path in files
                ]
                try:
                    response = client.post(url, files=parts, headers={"Authorization": f"Bearer {token}"})
                except httpx.TransportError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                else:
                    if response.status_code < 300:
                        log.info("uploaded %d output file(s) of run %s", len(files), run_id)
                        return [name for name, _ in files]
                    last = f"HTTP {response.status_code}: {response.text[:500]}"
                    if response.status_code < 500:
                        refused = True
                        break
            if attempt < UPLOAD_ATTEMPTS - 1:
                delay = backoff[min(attempt, len(backoff) - 1)] if backoff else 0
                log.warning("upload of run %s failed (%s); retrying in %g s", run_id, last, delay)
                time.sleep(delay)
    if refused and include_all:
        # The scheduler refused the files (too many, too large): the run's outcome must still reach it.
        log.error("the scheduler refused the outputs of run %s (%s); sending status.json alone", run_id, last)
        upload_outputs(
            scheduler_url, token, run_id, output_dir, include_all=False, transport=transport, backoff=backoff
        )
    raise UploadError(f"uploading the outputs of run {run_id} to {url} failed: {last}")
