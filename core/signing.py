"""Gateway → instance request signatures (DESIGN.md, "Gateway → instance signature").

Header ``X-Chutes-Signature: t=<unix>,n=<nonce>,v1=<hex hmac-sha256>`` over
``t \\n n \\n METHOD \\n path \\n sha256(body)`` with the instance's ``CHUTES_INVOKE_SECRET``.

The nonce makes every signature unique: without it two identical calls in the same second (two users calling
a no-input cord, a client retrying) would carry the same signature, and the instance's replay protection would
refuse the second one. The nonce is optional when verifying, so a signature in DESIGN.md's original form
(``t=<unix>,v1=<hex>`` over ``t \\n METHOD \\n path \\n sha256(body)``) still verifies. Pure functions; the
runtime adds replay protection on top.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from binascii import hexlify
from dataclasses import dataclass

from chutes.core.unique import random_hex

try:  # the C form of ``Signer.header`` (core/_hmac.c), built by the install where a compiler and OpenSSL are
    from chutes.core._hmac import HeaderSigner as _NativeSigner
except ImportError:  # not built: the pure-Python form serves, with the same values
    _NativeSigner = None  # type: ignore[assignment,misc]
NATIVE = _NativeSigner is not None  # whether ``Signer.header`` runs in C here

SIGNATURE_HEADER = "X-Chutes-Signature"
MAX_SKEW_SECONDS = 60
_NONCE_RE = re.compile(r"^[0-9a-f]{8,64}$")

# 96 random bits per nonce, without a system call each (``chutes.core.unique``).
_nonces = random_hex(12)
_nonce_hex = _nonces.take_bytes


def new_nonce() -> str:
    """A fresh nonce: 24 lower-case hex digits."""
    return _nonces.take_str()


class SignatureError(ValueError):
    """A signature that is missing, malformed, wrong or stale; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class ParsedSignature:
    timestamp: int
    digest: str
    nonce: str | None = None


def _message(timestamp: int, nonce: str | None, method: str, path: str, body: bytes) -> bytes:
    body_hash = hashlib.sha256(body).hexdigest()
    if nonce is None:
        return f"{timestamp}\n{method.upper()}\n{path}\n{body_hash}".encode()
    return f"{timestamp}\n{nonce}\n{method.upper()}\n{path}\n{body_hash}".encode()


def _stamp(timestamp: int | None, nonce: str | None) -> tuple[int, str]:
    """The signature's time (now unless given) and nonce (a fresh one unless given, then checked)."""
    if nonce is not None and not _NONCE_RE.fullmatch(nonce):
        raise ValueError("nonce must be 8-64 lower-case hex characters")
    return (int(time.time()) if timestamp is None else timestamp), (new_nonce() if nonce is None else nonce)


def sign(
    secret: str, method: str, path: str, body: bytes, timestamp: int | None = None, nonce: str | None = None
) -> str:
    """The header value that signs one request (with a fresh random nonce unless one is given)."""
    ts, n = _stamp(timestamp, nonce)
    # hmac.digest is OpenSSL's one-shot HMAC: a fraction of the cost of an hmac.new object per call.
    digest = hmac.digest(secret.encode(), _message(ts, n, method, path, body), "sha256").hex()
    return f"t={ts},n={n},v1={digest}"


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class Signer:
    """``sign`` for one secret, with the HMAC's keyed inner and outer SHA-256 states computed once (RFC 2104):
    a signature then costs two state copies and three short hashes, the gateway's cost per call. ``header``
    runs in C (core/_hmac.c) where that was built: hashlib's objects cost about 2 µs a call in allocation alone."""

    __slots__ = ("_inner", "_native", "_outer")

    def __init__(self, secret: str) -> None:
        key = secret.encode()
        self._native = None if _NativeSigner is None else _NativeSigner(key)
        if len(key) > 64:  # SHA-256's block size: longer keys are hashed first, as hmac does
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    @property
    def native(self) -> bool:
        """Whether ``header`` runs in C."""
        return self._native is not None

    def sign(self, method: str, path: str, body: bytes, timestamp: int | None = None, nonce: str | None = None) -> str:
        """The same header value as ``sign(secret, method, path, body, timestamp, nonce)``."""
        ts, n = _stamp(timestamp, nonce)
        inner = self._inner.copy()
        inner.update(_message(ts, n, method, path, body))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return f"t={ts},n={n},v1={outer.hexdigest()}"

    def header(self, method_path: bytes, body: bytes) -> bytes:
        """``sign``'s header value as bytes, now and with the next nonce, for a request line given as
        ``b"\\n" + METHOD + b"\\n" + path + b"\\n"`` (the gateway keeps it per cord): the gateway's per-call form,
        without the text round trips."""
        native = self._native
        if native is not None:
            value: bytes = native.header(method_path, body, _nonce_hex())
            return value
        return self.header_at(method_path, body, int(time.time()), _nonce_hex())

    def header_at(self, method_path: bytes, body: bytes, timestamp: int, nonce: bytes) -> bytes:
        """``header`` in pure Python, for a given time and nonce (hex digits)."""
        t = b"%d" % timestamp
        inner = self._inner.copy()
        inner.update(b"".join((t, b"\n", nonce, method_path, hexlify(hashlib.sha256(body).digest()))))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return b"".join((b"t=", t, b",n=", nonce, b",v1=", hexlify(outer.digest())))


def parse(header: str | None) -> ParsedSignature:
    """Parse a header value; a missing header is 401, a malformed one 403."""
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header", 401)
    fields: dict[str, str] = {}
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or key in fields or key not in ("t", "n", "v1"):
            raise SignatureError(f"malformed {SIGNATURE_HEADER} header", 403)
        fields[key] = value
    ts, digest, nonce = fields.get("t", ""), fields.get("v1", ""), fields.get("n")
    # isascii: str.isdigit() accepts "²" and other digits that int() refuses (a header is latin-1 text).
    if not (ts.isascii() and ts.isdigit()) or len(ts) > 12 or len(digest) != 64:
        raise SignatureError(f"malformed {SIGNATURE_HEADER} header", 403)
    if nonce is not None and not _NONCE_RE.fullmatch(nonce):
        raise SignatureError(f"malformed {SIGNATURE_HEADER} header", 403)
    try:
        bytes.fromhex(digest)
    except ValueError:
        raise SignatureError(f"malformed {SIGNATURE_HEADER} header", 403) from None
    return ParsedSignature(int(ts), digest.lower(), nonce)


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
    message = _message(parsed.timestamp, parsed.nonce, method, path, body)
    expected = hmac.new(secret.encode(), message, hashlib.sha256)
    if not hmac.compare_digest(expected.hexdigest(), parsed.digest):
        raise SignatureError("wrong signature", 403)
    return parsed
