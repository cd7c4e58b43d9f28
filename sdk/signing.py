"""Gateway → instance request signatures (DESIGN.md, "Gateway → instance signature").

Header ``X-Chutes-Signature: t=<unix>,v1=<hex hmac-sha256>`` over ``t \\n METHOD \\n path \\n sha256(body)``
with the instance's ``CHUTES_INVOKE_SECRET``. Pure functions; the runtime adds replay protection on top.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

SIGNATURE_HEADER = "X-Chutes-Signature"
MAX_SKEW_SECONDS = 60


class SignatureError(ValueError):
    """A signature that is missing, malformed, wrong or stale; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class ParsedSignature:
    timestamp: int
    digest: str


def _message(timestamp: int, method: str, path: str, body: bytes) -> bytes:
    body_hash = hashlib.sha256(body).hexdigest()
    return f"{timestamp}\n{method.upper()}\n{path}\n{body_hash}".encode()


def sign(secret: str, method: str, path: str, body: bytes, timestamp: int | None = None) -> str:
    """The header value that signs one request."""
    ts = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), _message(ts, method, path, body), hashlib.sha256).hexdigest()
    return f"t={ts},v1={digest}"


def parse(header: str | None) -> ParsedSignature:
    """Parse a header value; a missing header is 401, a malformed one 403."""
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header", 401)
    fields: dict[str, str] = {}
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or key in fields:
            raise SignatureError(f"malformed {SIGNATURE_HEADER} header", 403)
        fields[key] = value
    ts, digest = fields.get("t", ""), fields.get("v1", "")
    # isascii: str.isdigit() accepts "²" and other digits that int() refuses (a header is latin-1 text).
    if not (ts.isascii() and ts.isdigit()) or len(ts) > 12 or len(digest) != 64:
        raise SignatureError(f"malformed {SIGNATURE_HEADER} header", 403)
    try:
        bytes.fromhex(digest)
    except ValueError:
        raise SignatureError(f"malformed {SIGNATURE_HEADER} header", 403) from None
    return ParsedSignature(int(ts), digest.lower())


def verify(
    secret: str,
    header: str | None,
    method: str,
    path: str,
    body: bytes,
    now: float | None = None,
    max_skew: int = MAX_SKEW_SECONDS,
) -> ParsedSignature:
    """Check a signature in constant time; raises SignatureError (401 missing, 403 wrong or stale)."""
    parsed = parse(header)
    current = time.time() if now is None else now
    if abs(current - parsed.timestamp) > max_skew:
        raise SignatureError("stale signature: timestamp is more than 60 s from the instance's clock", 403)
    expected = hmac.new(secret.encode(), _message(parsed.timestamp, method, path, body), hashlib.sha256)
    if not hmac.compare_digest(expected.hexdigest(), parsed.digest):
        raise SignatureError("wrong signature", 403)
    return parsed
