"""Where the chute comes from: a local ``FILE:ATTR``, or in a cluster the bundle of the instance's version.

In a cluster: ``GET $CHUTES_SCHEDULER_URL/v1/instances/bundle`` with ``Authorization: Bearer
$CHUTES_INSTANCE_TOKEN``; the bytes must hash to ``CHUTES_BUNDLE_SHA256`` (compared in constant time; a
mismatch is fatal, the bytes are never extracted); ``chutes.bundle.safe_extract`` unpacks them into a fresh
``$NOMAD_TASK_DIR/bundle`` (a temporary folder outside Nomad), and the entrypoint named in
``chutes_bundle.json`` is imported from there. Connection errors and 5xx are retried with backoff (the
scheduler may be restarting); 4xx is final.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from chutes.bundle import MAX_BUNDLE_BYTES, safe_extract
from chutes.chute.base import Chute
from chutes.loader import load_chute
from chutes.runtime.config import ClusterEnv

log = logging.getLogger("chutes.runtime.source")

FETCH_ATTEMPTS = 5


class SourceError(Exception):
    """The chute could not be fetched or verified (exit code 1: Nomad restarts the task)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def load_local(ref: str) -> Chute:
    """The chute of ``FILE.py:ATTR`` or ``MODULE:ATTR`` (``chutes.loader``)."""
    return load_chute(ref).chute


def fetch_bundle(
    scheduler_url: str,
    token: str,
    expected_sha256: str,
    *,
    transport: httpx.BaseTransport | None = None,
    backoff: Sequence[float] = (1, 2, 4, 8),
) -> bytes:
    """The bundle bytes, verified against ``expected_sha256``; SourceError when that is impossible."""
    url = f"{scheduler_url.rstrip('/')}/v1/instances/bundle"
    last = ""
    with httpx.Client(transport=transport, timeout=httpx.Timeout(60.0, connect=10.0)) as client:
        for attempt in range(FETCH_ATTEMPTS):
            try:
                data, status = _download(client, url, token)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if status == 200:
                    _verify(data, expected_sha256)
                    return data
                last = f"HTTP {status}: {data[:300].decode('utf-8', 'replace')}"
                if status < 500:
                    break
            if attempt < FETCH_ATTEMPTS - 1:
                delay = backoff[min(attempt, len(backoff) - 1)] if backoff else 0
                log.warning("bundle download failed (%s); retrying in %g s", last, delay)
                time.sleep(delay)
    raise SourceError(
        f"cannot download the bundle from {url}: {last}",
        "check CHUTES_SCHEDULER_URL and CHUTES_INSTANCE_TOKEN (the token is for one chute version)",
    )


def _download(client: httpx.Client, url: str, token: str) -> tuple[bytes, int]:
    with client.stream("GET", url, headers={"Authorization": f"Bearer {token}"}) as response:
        parts: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_BUNDLE_BYTES:
                raise SourceError(f"the bundle from {url} is larger than {MAX_BUNDLE_BYTES // 2**20} MiB")
            parts.append(chunk)
        return b"".join(parts), response.status_code


def _verify(data: bytes, expected_sha256: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(actual, expected_sha256.strip().lower()):
        raise SourceError(
            f"bundle sha256 mismatch: expected {expected_sha256}, got {actual}",
            "the scheduler served other bytes than this instance's version; refusing to run them",
        )


def install_bundle(data: bytes, dest: Path) -> str:
    """Extract into a fresh ``dest`` (a restarted task must not see stale files); returns the entrypoint."""
    if dest.exists():
        shutil.rmtree(dest)
    meta = safe_extract(data, dest)
    return meta.entrypoint


def bundle_dir(env: ClusterEnv) -> Path:
    if env.task_dir is not None:
        return env.task_dir / "bundle"
    return Path(tempfile.mkdtemp(prefix="chutes-bundle-"))


def load_from_environment(env: ClusterEnv, *, transport: httpx.BaseTransport | None = None) -> Chute:
    """Download, verify, extract and import the chute of this instance (see the module docstring)."""
    scheduler_url, token, sha256 = env.require_bundle_source()
    data = fetch_bundle(scheduler_url, token, sha256, transport=transport)
    dest = bundle_dir(env)
    entrypoint = install_bundle(data, dest)
    module, _, attr = entrypoint.partition(":")
    log.info("bundle %s extracted into %s; importing %s", sha256[:12], dest, entrypoint)
    return load_chute(f"{dest / (module + '.py')}:{attr}").chute
