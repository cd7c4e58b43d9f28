"""Hypothesis on the parsers that take untrusted input: they return a value or raise their documented error.

- ``Manifest.model_validate`` / ``model_validate_json`` (what the scheduler does with an upload): a
  ``Manifest`` or ``pydantic.ValidationError``, for mutated valid manifests and for arbitrary JSON.
- ``NodeSelector(...)``: a selector whose ``eligible_gpus`` is non-empty and satisfies every constraint, or
  ``ValidationError``.
- ``chutes.core.signing.parse`` / ``verify`` and the runtime's ``RequestVerifier``: a ``ParsedSignature`` or
  ``SignatureError`` with status 401 or 403, for any header text; a signature verifies only for the exact
  request it signed, and only once.
- ``chutes.identity``: names are valid or ``InvalidNameError``; a valid name's slug is a clean URL label.
- ``chutes.bundle.inspect_bundle`` on arbitrary bytes and gzip'd tars: ``BundleMeta`` or ``BundleError``.
- ``chutes.gateway.routes.parse_target``: a target or None for any host and path.

Examples are bounded (``max_examples``) so the module runs in seconds; no deadline (a loaded 2-core machine
makes timing noise), but pathological inputs that used to backtrack are timed explicitly.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import tarfile
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from chutes import gpus
from chutes.bundle import BundleError, inspect_bundle
from chutes.chute.node_selector import NodeSelector
from chutes.core.signing import SignatureError, parse, sign, verify
from chutes.gateway.routes import parse_target
from chutes.identity import InvalidNameError, chute_id, slugify, validate_chute_name, validate_username
from chutes.manifest import Manifest
from chutes.runtime.signatures import RequestVerifier

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON values of every kind, nested a little; text includes control characters and non-ASCII.
json_floats = st.floats(allow_nan=False, allow_infinity=False)  # what JSON can carry
json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | json_floats | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def valid_manifest() -> dict[str, Any]:
    return {
        "chute_id": chute_id("alice", "echo"),
        "username": "alice",
        "name": "echo",
        "image": {"ref": "python:3.12", "dockerfile": None},
        "node_selector": {"gpu_count": 1, "min_vram_gb_per_gpu": 24},
        "concurrency": 4,
        "cords": [{"name": "echo", "path": "/echo", "public_api_path": "/echo"}],
        "sdk_version": "0.1.0",
    }


MANIFEST_FIELDS = [*sorted(valid_manifest()), "tagline", "readme", "max_instances", "jobs", "scaling_threshold"]
CORD_FIELDS = ["name", "path", "public_api_path", "public_api_method", "stream", "passthrough_port", "input_schema"]


def _check_manifest(data: Any) -> None:
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError:
        return
    # Whatever was accepted is self-consistent and round-trips through JSON.
    assert manifest.chute_id == chute_id(manifest.username, manifest.name)
    assert bool(manifest.cords) != bool(manifest.jobs)
    assert Manifest.model_validate_json(manifest.model_dump_json()) == manifest


@FUZZ
@given(field=st.sampled_from(MANIFEST_FIELDS), value=json_values)
def test_manifest_with_one_field_replaced(field: str, value: Any) -> None:
    data = valid_manifest()
    data[field] = value
    _check_manifest(data)


@FUZZ
@given(field=st.sampled_from(CORD_FIELDS), value=json_values | st.text(alphabet="/._-azAZ09 %$\\{}\n", max_size=40))
def test_manifest_with_one_cord_field_replaced(field: str, value: Any) -> None:
    data = valid_manifest()
    data["cords"][0][field] = value
    _check_manifest(data)


@FEW
@given(username=st.text(max_size=70), name=st.text(max_size=140))
def test_manifest_identity_fields(username: str, name: str) -> None:
    data = valid_manifest()
    data.update(username=username, name=name)
    try:
        data["chute_id"] = chute_id(username, name)
    except Exception as exc:  # chute_id takes any strings
        raise AssertionError(f"chute_id raised {exc!r}") from exc
    _check_manifest(data)


@FEW
@given(raw=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_manifest_from_arbitrary_json_bytes(raw: bytes) -> None:
    with contextlib.suppress(ValidationError):
        Manifest.model_validate_json(raw)


def test_long_hostile_cord_paths_are_refused_quickly() -> None:
    """Regression: the cord path regex once backtracked quadratically (20,000 characters took 65 s)."""
    for path in ("/" + "a" * 100_000 + "!", "/a" * 50_000 + "/", "/" + "_-" * 50_000 + "$"):
        data = valid_manifest()
        data["cords"][0]["path"] = path
        started = time.perf_counter()
        with pytest.raises(ValidationError):
            Manifest.model_validate(data)
        assert time.perf_counter() - started < 1.0


GPU_IDS = sorted(gpus.CATALOG)
gpu_lists = st.none() | st.lists(st.sampled_from(GPU_IDS) | st.text(max_size=12), max_size=5)


@FUZZ
@given(
    gpu_count=st.integers(-2, 12) | json_values,
    min_vram=st.integers(0, 200) | json_values,
    include=gpu_lists,
    exclude=gpu_lists,
    price=st.none() | st.floats(-1, 12, allow_nan=False) | json_values,
)
def test_node_selector(gpu_count: Any, min_vram: Any, include: Any, exclude: Any, price: Any) -> None:
    try:
        selector = NodeSelector.model_validate(
            {
                "gpu_count": gpu_count,
                "min_vram_gb_per_gpu": min_vram,
                "include": include,
                "exclude": exclude,
                "max_hourly_price_per_gpu": price,
            }
        )
    except ValidationError:
        return
    eligible = selector.eligible_gpus
    assert eligible and eligible == sorted(eligible)
    for gpu_id in eligible:
        model = gpus.CATALOG[gpu_id]
        assert model.schedulable and model.vram_gb >= selector.min_vram_gb_per_gpu
        assert selector.include is None or gpu_id in selector.include
        assert gpu_id not in (selector.exclude or [])
        cap = selector.max_hourly_price_per_gpu
        assert cap is None or model.hourly_usd <= cap
    cheapest = min(gpus.CATALOG[g].hourly_usd for g in eligible)
    assert selector.hourly_price_usd == pytest.approx(selector.gpu_count * cheapest)
    # Computed fields sent back are ignored, never trusted.
    again = NodeSelector.model_validate({**selector.model_dump(), "eligible_gpus": ["h200"], "hourly_price_usd": 0})
    assert again.eligible_gpus == eligible


# Header text as an HTTP server hands it over: latin-1, so any code point below 256.
header_text = st.text(alphabet=st.characters(max_codepoint=255), max_size=120)
header_like = st.builds(
    lambda t, d, extra: f"t={t},v1={d}{extra}",
    st.text(alphabet=st.characters(max_codepoint=255), max_size=14) | st.integers(0, 10**13).map(str),
    st.text(alphabet="0123456789abcdefABCDEF \u00b2g", min_size=60, max_size=66),
    st.sampled_from(["", ",", ",v1=", ",t=1", ",x=y", " "]),
)


@FUZZ
@given(header=header_text | header_like)
@example(header="t=\u00b2,v1=" + "a" * 64)  # str.isdigit() accepts "²", int() does not
@example(header="t=1,n=\u0663" * 1 + "0" * 8 + ",v1=" + "a" * 64)
def test_signature_parse_and_verify_any_header(header: str) -> None:
    try:
        parsed = parse(header)
    except SignatureError as exc:
        assert exc.status in (401, 403)
    else:
        assert parsed.timestamp >= 0 and re.fullmatch(r"[0-9a-f]{64}", parsed.digest)
    with pytest.raises(SignatureError) as refused:
        verify("secret", header, "POST", "/echo", b"{}", now=time.time())
    assert refused.value.status in (401, 403)


requests = st.tuples(
    st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=255), min_size=1, max_size=40).map(
        lambda p: "/" + p
    ),
    st.binary(max_size=200),
)


@FUZZ
@given(secret=st.text(min_size=1, max_size=40), request=requests, other=requests, skew=st.integers(-59, 59))
def test_a_signature_verifies_only_its_own_request_and_only_once(
    secret: str, request: tuple[str, str, bytes], other: tuple[str, str, bytes], skew: int
) -> None:
    method, path, body = request
    now = 1_700_000_000
    header = sign(secret, method, path, body, timestamp=now + skew)
    assert verify(secret, header, method, path, body, now=now).timestamp == now + skew
    if (other[0].upper(), *other[1:]) != (method.upper(), path, body):
        with pytest.raises(SignatureError) as wrong:
            verify(secret, header, *other, now=now)
        assert wrong.value.status == 403
    with pytest.raises(SignatureError):
        verify(secret + "x", header, method, path, body, now=now)
    with pytest.raises(SignatureError) as stale:
        verify(secret, header, method, path, body, now=now + skew + 61)
    assert stale.value.status == 403
    verifier = RequestVerifier(secret, clock=lambda: float(now))
    verifier.commit(verifier.check(header, method, path, body))
    with pytest.raises(SignatureError, match="replayed"):
        verifier.check(header, method, path, body)


@FUZZ
@given(username=st.text(max_size=70), name=st.text(max_size=140))
def test_names_are_valid_or_refused_with_the_rule(username: str, name: str) -> None:
    try:
        assert validate_username(username) == username
    except InvalidNameError as exc:
        assert "username" in str(exc)
    try:
        assert validate_chute_name(name) == name
    except InvalidNameError as exc:
        assert "chute name" in str(exc)
    else:
        slug = slugify(name)
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", slug), slug
        assert ".." not in name.split("/") and not name.startswith("/")


def _tar(members: list[tuple[str, bytes, bytes]]) -> bytes:
    """A gzip'd tar; each member is (name, type flag, content or link target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = data.decode("latin-1")
                tar.addfile(info)
            else:
                info.size = len(data) if kind == tarfile.REGTYPE else 0
                tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


member_names = st.sampled_from(
    ["app.py", "chutes_bundle.json", "../x.py", "/etc/passwd", "a/../../b", "lib/", "./app.py", "a\x00b", "..", ""]
) | st.text(alphabet=st.characters(max_codepoint=255), max_size=20)
member_kinds = st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE])
META = b'{"entrypoint": "app:chute", "sdk_version": "0.1.0"}'


@FEW
@given(
    members=st.lists(st.tuples(member_names, member_kinds, st.binary(max_size=40)), max_size=5),
    with_meta=st.booleans(),
)
def test_bundle_inspection_of_hostile_tars(members: list[tuple[str, bytes, bytes]], with_meta: bool) -> None:
    if with_meta:
        members = [("chutes_bundle.json", tarfile.REGTYPE, META), *members]
    try:
        data = _tar(members)
    except (ValueError, UnicodeError):
        return  # tarfile itself cannot write this member (e.g. a NUL in a name): nothing to inspect
    try:
        meta = inspect_bundle(data)
    except BundleError:
        return
    assert meta.entrypoint == "app:chute"
    for name, kind, _ in members:
        # Anything accepted is a plain file or folder with a relative path that stays inside.
        assert kind in (tarfile.REGTYPE, tarfile.DIRTYPE), (name, kind)
        assert not name.startswith("/") and ".." not in name.split("/"), name


@FEW
@given(raw=st.binary(max_size=400))
def test_bundle_inspection_of_arbitrary_bytes(raw: bytes) -> None:
    with contextlib.suppress(BundleError):
        inspect_bundle(raw)


@FUZZ
@given(
    host=st.text(alphabet=st.characters(max_codepoint=255), max_size=60),
    path=st.text(alphabet=st.characters(max_codepoint=255), max_size=80).map(lambda p: "/" + p),
    domain=st.none() | st.just("chutes.test"),
)
def test_gateway_target_parsing(host: str, path: str, domain: str | None) -> None:
    target = parse_target(host, path, domain)
    if target is not None:
        assert target.path.startswith("/")
