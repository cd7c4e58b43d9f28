"""Encryption at rest of chute secrets: AES-256-GCM (``cryptography``) with the key in ``CHUTES_SECRETS_KEY``.

The key is 32 random bytes, written as URL-safe base64 (``chutes-scheduler secrets-key`` prints a new one;
``chutes dev`` keeps one in its data directory). Each value is sealed with a fresh 96-bit nonce and bound to
where it belongs (``<chute_id>/<name>`` as associated data), so a ciphertext copied onto another row does not
decrypt. Every row records the key's id (a keyed hash, not the key), so a scheduler started with another key
says so at start-up instead of failing later.

Blob layout: ``b"\\x01" + nonce (12 bytes) + ciphertext and tag``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chutes.core.errors import HintedError

KEY_ENV = "CHUTES_SECRETS_KEY"
KEY_BYTES = 32
NONCE_BYTES = 12
VERSION = b"\x01"
_HINT = f"set {KEY_ENV} to 32 random bytes in URL-safe base64, e.g. the output of `chutes-scheduler secrets-key`"


class SecretsKeyError(HintedError):
    """The secrets key is missing, malformed or not the one the secrets were sealed with; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str = _HINT) -> None:
        super().__init__(message, hint)


def generate_key() -> str:
    """A new key, as ``CHUTES_SECRETS_KEY`` takes it."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def decode_key(text: str) -> bytes:
    raw = text.strip()
    try:
        key = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        raise SecretsKeyError(f"{KEY_ENV} is not URL-safe base64") from None
    if len(key) != KEY_BYTES:
        raise SecretsKeyError(f"{KEY_ENV} decodes to {len(key)} bytes; it must be {KEY_BYTES}")
    return key


class SecretBox:
    """Seals and opens secret values with one key."""

    def __init__(self, key_text: str) -> None:
        key = decode_key(key_text)
        self._aead = AESGCM(key)
        # An id that names the key without revealing it (HMAC of a fixed label).
        self.key_id = hmac.new(key, b"chutes secrets key id", hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"SecretBox(key_id={self.key_id})"

    def seal(self, value: str, context: str) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return VERSION + nonce + self._aead.encrypt(nonce, value.encode(), context.encode())

    def open(self, blob: bytes, context: str) -> str:
        if len(blob) < 1 + NONCE_BYTES + 16 or blob[:1] != VERSION:
            raise SecretsKeyError(f"the stored secret {context} is damaged", "delete the secret and create it again")
        nonce, sealed = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, sealed, context.encode()).decode()
        except InvalidTag:
            raise SecretsKeyError(
                f"cannot decrypt the secret {context}: {KEY_ENV} is not the key it was stored with",
                f"start the scheduler with the {KEY_ENV} the secrets were created with",
            ) from None


def sealed_context(chute_id: str, name: str) -> str:
    """What a chute's secret is bound to (its AES-GCM associated data)."""
    return f"{chute_id}/{name}"


def box_from(key_text: str | None) -> SecretBox | None:
    """The box for a configured key, None when none is configured; SecretsKeyError when it is malformed."""
    return SecretBox(key_text) if key_text else None
