"""Has a chute's Nomad job drifted from what this scheduler would render now? (pure)

Every job the scheduler registers carries ``Meta.chutes_spec``: a digest of its rendered form without what
changes from one registration to the next on purpose (the instance count, which the autoscaler and the scale
API set, and the placement affinities). It also carries ``Meta.chutes_runtime``, the version of this
package, since a new runtime is a new rendering even where no field shows it. When settings or the version
change, the digests differ and the reconciler registers the chute's jobs again.

The scheduler's address (``CHUTES_SCHEDULER_URL``, where instances fetch their bundle) is kept out of the
digest and in ``Meta.chutes_scheduler_url``: several schedulers may each render their own address, and a
leader change must not restart every instance. A job is registered again for its address only when that
address no longer answers (a scheduler restarted on another port), so a restarted instance can always fetch
its bundle.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from chutes import __version__ as runtime_version

SPEC_META = "chutes_spec"
RUNTIME_META = "chutes_runtime"
URL_META = "chutes_scheduler_url"
URL_ENV = "CHUTES_SCHEDULER_URL"
_VOLATILE = ("Count", "Affinities")


def spec_digest(job: dict[str, Any]) -> str:
    """The digest of ``job`` as rendered, ignoring its count, its affinities and the digest itself."""
    canon = copy.deepcopy(job)
    for key in (SPEC_META, URL_META):
        (canon.get("Meta") or {}).pop(key, None)
    canon.pop("Affinities", None)
    for group in canon.get("TaskGroups") or []:
        for key in _VOLATILE:
            group.pop(key, None)
        for task in group.get("Tasks") or []:
            task.pop("Affinities", None)
            (task.get("Env") or {}).pop(URL_ENV, None)
    text = json.dumps(canon, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stamp(job: dict[str, Any]) -> dict[str, Any]:
    """``job`` with the runtime version, the scheduler URL of its tasks and the digest of its rendered form in
    its Meta (changed in place)."""
    meta = job.setdefault("Meta", {})
    meta[RUNTIME_META] = runtime_version
    url = scheduler_url(job)
    if url is not None:
        meta[URL_META] = url
    meta[SPEC_META] = spec_digest(job)
    return job


def scheduler_url(job: dict[str, Any]) -> str | None:
    """The scheduler address the job's tasks fetch their bundle from."""
    for group in job.get("TaskGroups") or []:
        for task in group.get("Tasks") or []:
            url = (task.get("Env") or {}).get(URL_ENV)
            if url:
                return str(url)
    return None


def drifted(stub: dict[str, Any], expected: str) -> bool:
    """Whether a job (a stub listed with its Meta, or a full job) differs from the expected digest."""
    return (stub.get("Meta") or {}).get(SPEC_META) != expected


def registered_url(stub: dict[str, Any]) -> str | None:
    """The scheduler address a registered job's instances use (None for a job registered before it was kept)."""
    url = (stub.get("Meta") or {}).get(URL_META)
    return str(url) if url else None
