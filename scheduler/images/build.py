"""An image build as Nomad sees it (pure): the context the build task fetches, its job, and reading its log.

The job ``chutes-build-<image id>`` is a batch job with one ``raw_exec`` task on a node that can build
(``${meta.<key>} = <value>``, or a node class): a POSIX shell script that fetches the build context from the
scheduler, runs ``buildah bud`` (OCI isolation; the only host path given to RUN steps is the CA bundle, read
only), then ``buildah push --digestfile`` to the registry, and prints the digest on its last line. The build's
credential (and the registry's, when one is configured) is never in the job: a ``template`` reads them from the
job's Nomad Variable (``nomad/jobs/chutes-build-<image id>``), as chute tasks read theirs (``secret_env``). The
script takes the token into a header file with a shell builtin, so it is never on a command line either.

The context the task fetches is the user's context with two changes: the Dockerfile ends with the runtime
layer (this package's wheel at the scheduler's exact code, installed into the image's Python), and the wheel
sits under ``.chutes/runtime/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from chutes.image.pack import DOCKERFILE, Context, write_archive
from chutes.scheduler.images.wheel import RuntimeWheel
from chutes.scheduler.secret_env import escape, variable_path

JOB_PREFIX = "chutes-build-"
GROUP = "build"
TASK = "build"
TOKEN_ITEM = "CHUTES_BUILD_TOKEN"  # noqa: S105 - an item name
AUTH_ITEM = "CHUTES_REGISTRY_AUTH"
DIGEST_MARK = "CHUTES_BUILD_DIGEST"
STEP_MARK = "==> "
RUNTIME_DIR = ".chutes/runtime"
TEMPLATE_DEST = "secrets/build.env"
_NS = 1_000_000_000
_DIGEST_RE = re.compile(rf"^{DIGEST_MARK} (sha256:[0-9a-f]{{64}})$")
_REGISTRY_RE = re.compile(r"^[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
_META_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_INTERPOLATION = re.compile(r"\$\{")

# Runs on the builder node. No "${": Nomad would interpolate it (see render.py). Everything goes to stdout, so
# the log reads in order; "==> " marks the platform's own steps, buildah prints "STEP n/m: ..." for the others.
BUILD_SCRIPT = r"""set -eu
exec 2>&1
step() { echo "==> $*"; }
W="$NOMAD_TASK_DIR/build"
rm -rf "$W" && mkdir -p "$W/context"
umask 077
printf 'Authorization: Bearer %s\n' "$CHUTES_BUILD_TOKEN" > "$NOMAD_SECRETS_DIR/auth.header"
unset CHUTES_BUILD_TOKEN
step "fetching the build context"
curl -fsS --retry 3 --retry-connrefused -H "@$NOMAD_SECRETS_DIR/auth.header" -o "$W/context.tar.gz" \
  "$CHUTES_BUILD_CONTEXT_URL"
rm -f "$NOMAD_SECRETS_DIR/auth.header"
tar -xzf "$W/context.tar.gz" -C "$W/context" --no-same-owner
umask 022
set -- --layers --force-rm --isolation "$CHUTES_BUILD_ISOLATION" -t "$CHUTES_IMAGE_TAG"
set -- "$@" -f "$W/context/.chutes/Dockerfile"
if [ -n "$CHUTES_BUILD_CA_BUNDLE" ]; then
  set -- "$@" -v "$CHUTES_BUILD_CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro"
fi
if [ -n "$CHUTES_REGISTRY_AUTH" ]; then
  printf '%s' "$CHUTES_REGISTRY_AUTH" > "$NOMAD_SECRETS_DIR/auth.json"
  export REGISTRY_AUTH_FILE="$NOMAD_SECRETS_DIR/auth.json"
fi
unset CHUTES_REGISTRY_AUTH
step "building $CHUTES_IMAGE_TAG"
timeout --kill-after=10 "$CHUTES_BUILD_TIMEOUT" buildah bud "$@" "$W/context" || {
  code=$?
  if [ "$code" -eq 124 ]; then echo "chutes: the build ran past its time limit ($CHUTES_BUILD_TIMEOUT s)"; fi
  exit "$code"
}
step "pushing $CHUTES_IMAGE_TAG"
buildah push --tls-verify="$CHUTES_REGISTRY_TLS_VERIFY" --digestfile "$W/digest" "$CHUTES_IMAGE_TAG" "docker://$CHUTES_IMAGE_TAG"
rm -rf "$W/context" "$W/context.tar.gz"
echo "CHUTES_BUILD_DIGEST $(cat "$W/digest")"
"""

NO_PYTHON_EXIT = 3
# The runtime layer, after the user's instructions. `python3 -m chutes.runtime` is what chute tasks run, so an
# image whose Python is only `python` (Image.with_python installs python3.X and links `python`) gets a python3.
_NO_PYTHON = (
    "chutes: this image has no Python (python3 or python), so the runtime cannot be installed: build it with "
    "Image(...).with_python(...) or from a base image that has Python 3.10+"
)
_RUNTIME_STEPS = (
    'PY="$(command -v python3 || command -v python || true)"',
    'if [ -z "$PY" ]; then echo "{no_python_text}" >&2; exit {no_python}; fi',
    'command -v python3 >/dev/null || ln -s "$PY" "$(dirname "$PY")/python3"',
    '"$PY" -m pip --version >/dev/null 2>&1 || "$PY" -m ensurepip >/dev/null 2>&1 || '
    '{{ echo "{no_python_text} (its Python has no pip)" >&2; exit {no_python}; }}',
    "PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 "
    '"$PY" -m pip install --no-cache-dir /tmp/chutes-runtime/{wheel}',
    "rm -rf /tmp/chutes-runtime",
    """"$PY" -c 'import chutes.runtime; print("chutes runtime {version} installed")'""",
)
RUNTIME_LAYER = (
    "USER root\nCOPY {runtime_dir}/ /tmp/chutes-runtime/\nRUN set -e; "
    + "; \\\n    ".join(_RUNTIME_STEPS)
    + '\nLABEL io.chutes.runtime="{version}"\n'
)


class BuildRenderError(ValueError):
    """A setting or value that cannot go into a build job; the message names it."""


@dataclass(frozen=True, slots=True)
class BuildSettings:
    """Deployment-wide settings of build jobs (from the scheduler's configuration)."""

    scheduler_url: str
    registry: str
    registry_tls_verify: bool = True
    ca_bundle: str | None = None
    timeout_s: int = 1800
    node_meta_key: str | None = "chutes_builder"  # None: any node (use node_class, or no constraint)
    node_meta_value: str = "true"
    node_class: str | None = None
    isolation: str = "oci"
    datacenters: tuple[str, ...] = ("dc1",)
    region: str | None = None
    namespace: str | None = None
    cpu_mhz: int = 2000
    memory_mb: int = 4096
    disk_mb: int = 10240


def build_job_id(image_id: str) -> str:
    return f"{JOB_PREFIX}{image_id}"


def check_registry(registry: str) -> str:
    registry = registry.strip().rstrip("/")
    if not _REGISTRY_RE.fullmatch(registry):
        raise BuildRenderError(f"CHUTES_REGISTRY {registry!r} is not host[:port][/path] (e.g. 127.0.0.1:5000)")
    return registry


def target_ref(registry: str, username: str, name: str, tag: str) -> str:
    """Where an image is pushed: ``<registry>/<username>/<name>:<tag>`` (pinned by digest once pushed)."""
    return f"{check_registry(registry)}/{username}/{name}:{tag}"


def last_user(dockerfile: str) -> str | None:
    users = [line[5:].strip() for line in dockerfile.split("\n") if line.startswith("USER ")]
    return users[-1] if users else None


def build_dockerfile(dockerfile: str, wheel: RuntimeWheel) -> str:
    """The user's Dockerfile followed by the runtime layer (and the user's USER again, if it had one)."""
    layer = RUNTIME_LAYER.format(
        runtime_dir=RUNTIME_DIR,
        wheel=wheel.filename,
        version=wheel.version,
        no_python=NO_PYTHON_EXIT,
        no_python_text=_NO_PYTHON,
    )
    text = dockerfile.rstrip("\n") + "\n" + layer
    user = last_user(dockerfile)
    if user is not None:
        text += f"USER {user}\n"
    return text


def build_context(context: Context, wheel: RuntimeWheel) -> bytes:
    """The archive the build task fetches: the user's files, the final Dockerfile and the runtime wheel."""
    files = dict(context.files)
    files[DOCKERFILE] = (build_dockerfile(context.dockerfile, wheel).encode(), False)
    files[f"{RUNTIME_DIR}/{wheel.filename}"] = (wheel.content, False)
    return write_archive(files)


def variable_items(token: str, registry_auth: str | None) -> dict[str, str]:
    """The items of the build job's Variable (values escaped for the env file the template renders)."""
    items = {TOKEN_ITEM: escape(token)}
    items[AUTH_ITEM] = escape(registry_auth or "")
    return items


def env_template(job_id: str) -> str:
    lines = "\n".join(f'{name}="{{{{ index . "{name}" }}}}"' for name in (TOKEN_ITEM, AUTH_ITEM))
    return f'{{{{ with nomadVar "{variable_path(job_id)}" }}}}\n{lines}\n{{{{ end }}}}\n'


def _literal(value: str, what: str) -> str:
    if _INTERPOLATION.search(value) or any(ord(c) < 32 for c in value):
        raise BuildRenderError(f"the {what} contains '${{' or control characters: {value!r}")
    return value


def render_build_job(image_id: str, ref: str, username: str, settings: BuildSettings) -> dict[str, Any]:
    """The batch job that builds and pushes image ``image_id`` to ``ref`` (a tag; the digest comes back)."""
    if not re.fullmatch(r"[0-9a-f]{64}", image_id):
        raise BuildRenderError("an image id is 64 lower-case hex digits")
    job_id = build_job_id(image_id)
    env = {
        "CHUTES_BUILD_CONTEXT_URL": _literal(
            f"{settings.scheduler_url.rstrip('/')}/v1/internal/images/{image_id}/context", "scheduler URL"
        ),
        "CHUTES_IMAGE_TAG": _literal(ref, "image reference"),
        "CHUTES_BUILD_TIMEOUT": str(int(settings.timeout_s)),
        "CHUTES_BUILD_ISOLATION": _literal(settings.isolation, "isolation"),
        "CHUTES_REGISTRY_TLS_VERIFY": "true" if settings.registry_tls_verify else "false",
        "CHUTES_BUILD_CA_BUNDLE": _literal(settings.ca_bundle or "", "CA bundle path"),
    }
    task: dict[str, Any] = {
        "Name": TASK,
        "Driver": "raw_exec",
        "Config": {"command": "/bin/sh", "args": ["-c", BUILD_SCRIPT]},
        "Env": env,
        "Templates": [
            {
                "EmbeddedTmpl": env_template(job_id),
                "DestPath": TEMPLATE_DEST,
                "Envvars": True,
                "ChangeMode": "noop",
                "Perms": "0600",
            }
        ],
        "KillSignal": "SIGTERM",
        "KillTimeout": 15 * _NS,
        "Resources": {"CPU": settings.cpu_mhz, "MemoryMB": settings.memory_mb},
        "LogConfig": {"MaxFiles": 2, "MaxFileSizeMB": 20},
    }
    constraints: list[dict[str, str]] = []
    if settings.node_meta_key:
        if not _META_KEY_RE.fullmatch(settings.node_meta_key):
            raise BuildRenderError(f"invalid builder node meta key {settings.node_meta_key!r}")
        constraints.append(
            {
                "LTarget": f"${{meta.{settings.node_meta_key}}}",
                "Operand": "=",
                "RTarget": _literal(settings.node_meta_value, "builder node meta value"),
            }
        )
    if settings.node_class:
        constraints.append(
            {"LTarget": "${node.class}", "Operand": "=", "RTarget": _literal(settings.node_class, "node class")}
        )
    job: dict[str, Any] = {
        "ID": job_id,
        "Name": job_id,
        "Type": "batch",
        "Priority": 50,
        "Datacenters": [_literal(dc, "datacenter") for dc in settings.datacenters],
        "Meta": {"managed_by": "chutes", "image_id": image_id, "username": username},
        "Constraints": constraints,
        "TaskGroups": [
            {
                "Name": GROUP,
                "Count": 1,
                # A failed build is reported, not retried: its log says why, and a retry would fail the same way.
                "RestartPolicy": {"Attempts": 0, "Interval": 600 * _NS, "Delay": 15 * _NS, "Mode": "fail"},
                "ReschedulePolicy": {"Attempts": 0, "Interval": 0, "Unlimited": False},
                "EphemeralDisk": {"SizeMB": settings.disk_mb},
                "Meta": {"image_id": image_id},
                "Tasks": [task],
            }
        ],
    }
    if settings.region:
        job["Region"] = _literal(settings.region, "region")
    if settings.namespace:
        job["Namespace"] = _literal(settings.namespace, "namespace")
    return job


@dataclass(frozen=True)
class BuildOutcome:
    """What a finished build's log says: the pushed digest, or the step that failed and the last lines."""

    digest: str | None
    failed_step: str | None
    tail: tuple[str, ...]


def read_log(text: str, tail_lines: int = 30) -> BuildOutcome:
    """The digest is the script's last line (a RUN step printing a look-alike earlier does not count)."""
    lines = [line for line in text.replace("\r", "\n").split("\n") if line.strip()]
    digest = None
    if lines:
        match = _DIGEST_RE.match(lines[-1].strip())
        digest = match.group(1) if match else None
    step = None
    for line in lines:
        if line.startswith(STEP_MARK) or re.match(r"^STEP \d+/\d+: ", line):
            step = line.removeprefix(STEP_MARK)
    return BuildOutcome(digest, None if digest else step, tuple(lines[-tail_lines:]))


def variable_job_path(image_id: str) -> str:
    return variable_path(build_job_id(image_id))
