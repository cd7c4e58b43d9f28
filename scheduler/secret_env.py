"""What a chute's secrets become in Nomad (pure): the Variable's items and the ``template`` that reads them.

Per Nomad job of a chute (``chute-<id>``, and ``chute-<id>-job-<name>`` for its jobs) one Variable at
``nomad/jobs/<job id>``, which Nomad's workload identity lets only that job's tasks read. Its items:

- each user secret under its own name (an environment variable name);
- ``CHUTES_INVOKE_SECRET``;
- ``CHUTES_INSTANCE_TOKEN_<version>`` for every stored version of the chute (``version`` = the bundle sha256's
  first 12 hex digits), so that writing a new version's token changes nothing for the instances of the old one;
- in the variable of a chute's *job* (``chute-<id>-job-<name>``), ``CHUTES_RUN_TOKEN_<run id>`` for each of its
  runs that has not finished: a run's token lives here from just before its dispatch until it finishes, never
  in the job or in the dispatch (whose ``Meta`` carries only the run id).

The job's task gets one ``template`` (``env = true``, ``change_mode = "restart"``) that lists the variables it
needs by name: the instance token of *its* version, the invoke secret and the user secrets the chute has. Item
values are stored already escaped for the env file the template renders (go-envparse's double-quoted form), so
the template stays a plain lookup and any printable value survives unchanged. A job's task has a second one
(``change_mode = "noop"``) that picks its own run's token by the run id in its ``NOMAD_META_run_id``: other
runs' tokens coming and going, or its own leaving once the run has finished, never restart a run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# Set by the platform or Nomad, or able to redirect what the runtime loads: never a user secret.
RESERVED_PREFIXES = ("CHUTES_", "NOMAD_", "CONSUL_", "VAULT_", "NVIDIA_")
RESERVED_NAMES = frozenset(
    {"CUDA_VISIBLE_DEVICES", "PATH", "HOME", "PWD", "HOSTNAME", "LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONPATH",
     "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH"}
)  # fmt: skip
MAX_VALUE_BYTES = 16 * 1024
MAX_SECRETS = 64
NOMAD_VARIABLE_LIMIT = 64 * 1024
INVOKE_SECRET_KEY = "CHUTES_INVOKE_SECRET"  # noqa: S105 - an item name
TOKEN_KEY_PREFIX = "CHUTES_INSTANCE_TOKEN_"  # noqa: S105 - an item name
RUN_TOKEN_KEY_PREFIX = "CHUTES_RUN_TOKEN_"  # noqa: S105 - an item name
RUN_TEMPLATE_DEST = "secrets/run.env"
VERSION_CHARS = 12
TEMPLATE_DEST = "secrets/chutes.env"
TEMPLATE_SPLAY_S = 5  # Nomad's default; a real cluster restarts each allocation after a random delay below it
_NS = 1_000_000_000
_ALLOWED_CONTROL = {"\n", "\t"}


class SecretInputError(ValueError):
    """A secret name or value that cannot be used; the message says why, ``hint`` what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def validate_name(name: str) -> str:
    """An environment variable name the platform does not reserve; SecretInputError otherwise."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        shown = name if isinstance(name, str) and len(name) <= 80 and name.isprintable() else "that name"
        raise SecretInputError(
            f"invalid secret name {shown!r}: use 1-64 letters, digits and '_', not starting with a digit",
            "secrets become environment variables, e.g. HF_TOKEN",
        )
    if name.upper().startswith(RESERVED_PREFIXES) or name.upper() in RESERVED_NAMES:
        raise SecretInputError(
            f"the secret name {name!r} is reserved (the platform or Nomad sets it)",
            f"pick another name; reserved: {', '.join(p + '*' for p in RESERVED_PREFIXES)}, "
            f"{', '.join(sorted(RESERVED_NAMES))}",
        )
    return name


def validate_value(value: str) -> str:
    """Printable text (newlines and tabs allowed), 1 byte to 16 KiB in UTF-8; SecretInputError otherwise."""
    if not value:
        raise SecretInputError("the secret value is empty", "give a value with --value, --from-file or stdin")
    if len(value.encode()) > MAX_VALUE_BYTES:
        raise SecretInputError(f"the secret value is over {MAX_VALUE_BYTES} bytes", "store a smaller value")
    bad = next((c for c in value if (ord(c) < 32 or ord(c) == 127) and c not in _ALLOWED_CONTROL), None)
    if bad is not None:
        raise SecretInputError(
            f"the secret value contains the control character U+{ord(bad):04X}",
            "values are text: printable characters, newlines and tabs",
        )
    return value


def escape(value: str) -> str:
    """``value`` for the inside of a double-quoted go-envparse value (``\\\\``, ``\\"``, ``\\n``, ``\\t``)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")


def variable_path(nomad_job_id: str) -> str:
    """The Variable a Nomad job's tasks read (Nomad's implicit access for that job)."""
    return f"nomad/jobs/{nomad_job_id}"


def token_key(bundle_sha256: str) -> str:
    return TOKEN_KEY_PREFIX + bundle_sha256[:VERSION_CHARS]


def run_token_key(run_id: str) -> str:
    return RUN_TOKEN_KEY_PREFIX + run_id


def variable_items(
    invoke_secret: str,
    tokens: Mapping[str, str],
    secrets: Mapping[str, str],
    run_tokens: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The items of a chute's Variable: ``tokens`` maps bundle sha256 → instance token, ``secrets`` name → value,
    ``run_tokens`` (a job's variable) run id → run token of each run that has not finished."""
    if len(secrets) > MAX_SECRETS:
        raise SecretInputError(f"a chute may have at most {MAX_SECRETS} secrets", "delete some")
    items = {validate_name(name): escape(value) for name, value in secrets.items()}
    items[INVOKE_SECRET_KEY] = escape(invoke_secret)
    for sha, token in tokens.items():
        items[token_key(sha)] = escape(token)
    for run_id, token in (run_tokens or {}).items():
        items[run_token_key(run_id)] = escape(token)
    if sum(len(k.encode()) + len(v.encode()) for k, v in items.items()) > NOMAD_VARIABLE_LIMIT:
        raise SecretInputError(
            "the chute's secrets (with the tokens of its unfinished job runs) are over Nomad's 64 KiB limit for "
            "one variable",
            "store fewer or smaller secrets, or let running job runs finish before starting more",
        )
    return items


def env_template(nomad_job_id: str, bundle_sha256: str, secret_names: Iterable[str]) -> str:
    """The template text: one ``NAME="value"`` line per variable, each looked up by its item name."""
    lines = [
        f'CHUTES_INSTANCE_TOKEN="{{{{ index . "{token_key(bundle_sha256)}" }}}}"',
        f'CHUTES_INVOKE_SECRET="{{{{ index . "{INVOKE_SECRET_KEY}" }}}}"',
    ]
    lines += [f'{name}="{{{{ index . "{name}" }}}}"' for name in sorted(validate_name(n) for n in secret_names)]
    body = "\n".join(lines)
    return f'{{{{ with nomadVar "{variable_path(nomad_job_id)}" }}}}\n{body}\n{{{{ end }}}}\n'


def run_env_template(nomad_job_id: str, run_id_meta: str) -> str:
    """The template text of a job's run token: the item named after the run id of the dispatch's meta."""
    key = f'(printf "{RUN_TOKEN_KEY_PREFIX}%s" (env "NOMAD_META_{run_id_meta}"))'
    line = f'CHUTES_RUN_TOKEN="{{{{ index . {key} }}}}"'
    return f'{{{{ with nomadVar "{variable_path(nomad_job_id)}" }}}}\n{line}\n{{{{ end }}}}\n'


def run_template_block(nomad_job_id: str, run_id_meta: str) -> dict[str, Any]:
    """A job task's second ``Templates`` entry: its run's token (``noop``: a run is never restarted for it)."""
    return {
        "EmbeddedTmpl": run_env_template(nomad_job_id, run_id_meta),
        "DestPath": RUN_TEMPLATE_DEST,
        "Envvars": True,
        "ChangeMode": "noop",
        "Perms": "0600",
    }


def template_block(nomad_job_id: str, bundle_sha256: str, secret_names: Iterable[str]) -> dict[str, Any]:
    """The task's ``Templates`` entry (Nomad's JSON field names)."""
    return {
        "EmbeddedTmpl": env_template(nomad_job_id, bundle_sha256, secret_names),
        "DestPath": TEMPLATE_DEST,
        "Envvars": True,
        "ChangeMode": "restart",
        "Splay": TEMPLATE_SPLAY_S * _NS,
        "Perms": "0600",
    }
