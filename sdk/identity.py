"""Names and identities shared by every part: usernames, chute names, chute ids and URL slugs.

The rules are the contract in DESIGN.md ("Chute identity"); each check raises InvalidNameError with a
message that names the rule, so a user knows what to change.
"""

from __future__ import annotations

import re
import uuid

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
CHUTE_NAME_RE = re.compile(r"^[A-Za-z0-9._/-]{1,128}$")
_SLUG_SEPARATORS = re.compile(r"[^a-z0-9]+")


class InvalidNameError(ValueError):
    """A username or chute name that breaks the naming rules."""


def validate_username(username: str) -> str:
    """Return ``username`` unchanged if valid, else raise InvalidNameError naming the rule."""
    if not isinstance(username, str) or not USERNAME_RE.fullmatch(username):
        raise InvalidNameError(
            f"invalid username {username!r}: use 1-63 characters of lower-case letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    return username


def validate_chute_name(name: str) -> str:
    """Return ``name`` unchanged if valid, else raise InvalidNameError naming the rule."""
    if not isinstance(name, str) or not CHUTE_NAME_RE.fullmatch(name):
        raise InvalidNameError(
            f"invalid chute name {name!r}: use 1-128 characters of letters, digits, '-', '_', '.' or '/'"
        )
    if not slugify(name):
        raise InvalidNameError(f"invalid chute name {name!r}: it must contain at least one letter or digit")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise InvalidNameError(
            f"invalid chute name {name!r}: '/' must separate non-empty parts, none of them '.' or '..'"
        )
    return name


def chute_id(username: str, name: str) -> str:
    """The chute's stable id: uuid5(NAMESPACE_OID, "<username>::chute::<name>"), as Chutes computes it."""
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{username}::chute::{name}"))


def slugify(name: str) -> str:
    """A chute name's URL slug: lower-cased, each run of other characters than a-z0-9 made one '-', trimmed."""
    return _SLUG_SEPARATORS.sub("-", name.lower()).strip("-")


#: the longest DNS label: a longer ``<username>-<slug>`` can never be a host name
MAX_HOST_LABEL = 63


def host_label(username: str, slug: str) -> str | None:
    """The wildcard host label of a chute, ``<username>-<slug>`` (DESIGN.md, "Invocation addresses").

    None when it cannot be a DNS label (over 63 characters). Usernames and slugs may both contain '-', so one
    label can split into several (username, slug) pairs: the scheduler gives each label to one chute at most.
    """
    label = f"{username}-{slug}"
    return label if len(label) <= MAX_HOST_LABEL else None
