"""Checking a deploy upload: the manifest (schema, names, NodeSelector, ownership) and the bundle (size, gzip,
tar, safe paths, entrypoint), before anything is stored. Every refusal is a 4xx with the reason."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from chutes.bundle import BundleError, BundleMeta, safe_extract
from chutes.core.edge import strictjson
from chutes.manifest import Manifest
from chutes.scheduler.api.errors import APIError
from chutes.scheduler.store.users import Principal


@dataclass(frozen=True)
class Upload:
    """A validated deploy request."""

    manifest: Manifest
    bundle: bytes
    sha256: str
    meta: BundleMeta
    image_ref: str | None = None  # a built image (ref@digest) the chute's instances run


def _manifest_errors(exc: ValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors = [{"loc": ["manifest", *map(str, e["loc"])], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'manifest'}: {e['msg']}" for e in errors[:10])
    return f"invalid manifest: {detail}", errors


def parse_manifest(
    text: str, principal: Principal, max_depth: int = strictjson.DEFAULT_MAX_DEPTH, *, any_username: bool = False
) -> Manifest:
    """The manifest, validated (the NodeSelector's eligible GPUs and price are recomputed, never trusted).

    ``any_username`` (dev stacks: ``dev_adopt_users``) accepts a manifest whose username is not the caller's.
    """
    try:
        data = strictjson.loads(text, max_depth)
    except strictjson.JSONTooDeep as exc:
        raise APIError(
            422, f"the manifest is not acceptable: {exc}", "send the output of `chutes inspect --json`"
        ) from None
    except ValueError as exc:
        raise APIError(422, f"the manifest is not JSON: {exc}", "send the output of `chutes inspect --json`") from None
    if not isinstance(data, dict):
        raise APIError(422, "the manifest must be a JSON object", "send the output of `chutes inspect --json`")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        detail, errors = _manifest_errors(exc)
        raise APIError(422, detail, "fix the chute definition and deploy again", extra={"errors": errors}) from None
    if manifest.username != principal.username and not principal.is_admin and not any_username:
        raise APIError(
            403,
            f"the manifest's username {manifest.username!r} is not yours ({principal.username!r})",
            f"set username={principal.username!r} in the Chute",
        )
    return manifest


def check_bundle(data: bytes, max_bytes: int) -> tuple[str, BundleMeta]:
    """sha256 and metadata of a bundle that passes every check (size, gzip, tar, safe paths, entrypoint)."""
    if not data:
        raise APIError(422, "the bundle is empty", "build it with chutes.bundle.build_bundle")
    if len(data) > max_bytes:
        raise APIError(413, f"the bundle is {len(data)} bytes, over the {max_bytes}-byte limit", "bundle less code")
    with tempfile.TemporaryDirectory(prefix="chutes-bundle-") as tmp:
        try:
            meta = safe_extract(data, tmp)
        except BundleError as exc:
            raise APIError(422, f"invalid bundle: {exc}", exc.hint or "build it with chutes.bundle") from None
    return hashlib.sha256(data).hexdigest(), meta


async def validate_upload(
    manifest_text: str,
    bundle: bytes,
    principal: Principal,
    max_bytes: int,
    max_depth: int = strictjson.DEFAULT_MAX_DEPTH,
    *,
    any_username: bool = False,
) -> Upload:
    manifest = parse_manifest(manifest_text, principal, max_depth, any_username=any_username)
    sha256, meta = await asyncio.to_thread(check_bundle, bundle, max_bytes)
    return Upload(manifest=manifest, bundle=bundle, sha256=sha256, meta=meta)
