"""The dev stack: devcluster → agents → scheduler → gateway, each a supervised child, each waited on until healthy.

State (the devcluster's, the scheduler's SQLite database, the keys, the logs, the ports) lives in one data
directory; a given one is kept between runs, with the same ports when they are free, and a temporary one is
removed at the end. Once up, ``supervise`` restarts a part that dies (``chutes.dev.supervise``), with the same
command line, environment and env file, so with the same tokens.

Keys are generated here: an admin key (the scheduler bootstraps it from ``CHUTES_ADMIN_KEY``), a key with the
``gateway`` role for the gateway, a user whose name matches the examples' ``username="demo"`` by default, and
the key that seals chute secrets (``CHUTES_SECRETS_KEY``).

The devcluster always runs with ACLs (``chutes.dev.acl``), whether instances run in containers or not, and
optionally over mutual TLS (``StackTLS``): management tokens for Nomad and Consul (written to the data
directory as ``nomad_token`` and ``consul_token``) and a least-privilege token per part. Secrets reach the
parts through 0600 files named by ``CHUTES_ENV_FILE`` (``chutes.core.envfile``), never through their environment or
command line, which any process of the same user could read in ``/proc``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from chutes.client import ChutesAPIError, Client
from chutes.core.cluster_tls import ClusterTLS, Service
from chutes.dev.acl import ACLSetupError, PartTokens, new_secret, provision
from chutes.dev.containers import (
    ContainerPlan,
    ContainersMode,
    ContainersUnavailable,
    plan_containers,
    remove_leftovers,
)
from chutes.dev.nodes import DEFAULT_NODES, NodeSpec, merge
from chutes.dev.process import Child, ChildFailed, read_port_file, wait_for
from chutes.dev.registry import (
    BUILDER_META,
    BuildsMode,
    BuildsPlan,
    BuildsUnavailable,
    host_ca_bundle,
    plan_builds,
    start_registry,
    stop_registry,
)
from chutes.dev.supervise import StablePorts, Supervisor, become_subreaper
from chutes.dev.tls import StackTLS

DEFAULT_USERNAME = "demo"
ADMIN_USERNAME = "admin"
SECRETS_FILE = "secrets.json"


class DevStackError(RuntimeError):
    """The stack could not start; the message says which part and why, the hint what to look at."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass
class StackInfo:
    """Where everything is, once the stack is up (what ``--ready-file`` receives, as JSON)."""

    api_url: str
    gateway_url: str
    nomad_addr: str
    consul_addr: str
    api_key: str
    username: str
    data_dir: str
    logs_dir: str
    nodes: list[dict[str, Any]] = field(default_factory=list)
    local_gpus: int = 0
    pid: int = field(default_factory=os.getpid)
    containers: bool = False  # instances with a built image run in containers (podman)
    builds: bool = False  # `chutes build` works: buildah and a local registry
    registry: str | None = None  # that registry, 127.0.0.1:PORT
    #: management tokens of the devcluster's ACLs (for the nomad and consul CLIs)
    nomad_token: str = ""
    consul_token: str = ""
    #: wildcard domain of host addresses (<username>-<slug>.<domain>), if any
    domain: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _free_port() -> int:
    """A loopback port free right now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_key() -> str:
    """An API key in the scheduler's format: ``cnk_`` and 43 URL-safe characters."""
    return "cnk_" + secrets.token_urlsafe(32)


def new_secrets_key() -> str:
    """A ``CHUTES_SECRETS_KEY``: 32 random bytes, URL-safe base64."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def executable(name: str) -> str:
    """A console script of this installation: beside the running interpreter first, then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise DevStackError(f"{name} is not installed", hint="install the project (`make install`) in this Python")
    return found


def local_gpu_count() -> int:
    """How many NVIDIA GPUs NVML sees on this machine (0 without a driver, a GPU or the NVML library)."""
    try:
        from chutes.agent.sources import probe_local
    except ImportError:
        return 0
    try:
        inventory = probe_local()
    except Exception:
        return 0
    return len(inventory.gpus) if inventory is not None else 0


def _ok(url: str, headers: dict[str, str] | None = None, tls: ClusterTLS | None = None) -> bool:
    try:
        if tls is None:
            return httpx.get(url, headers=headers, timeout=2.0).status_code == 200
        with tls.httpx_client(timeout=2.0) as http:
            return http.get(url, headers=headers).status_code == 200
    except httpx.HTTPError:
        return False


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (created 0600, replaced atomically)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


class DevStack:
    """Start, watch and stop the platform's processes on this machine."""

    def __init__(
        self,
        *,
        data_dir: Path | None = None,
        nodes: list[NodeSpec] | None = None,
        username: str = DEFAULT_USERNAME,
        use_local_gpus: bool = True,
        timeout: float = 60.0,
        echo: Callable[[str], None] = print,
        tls: StackTLS | None = None,
        containers: ContainersMode = "auto",
        domain: str | None = None,
        builds: BuildsMode = "auto",
    ) -> None:
        self.keep_data = data_dir is not None
        self.data_dir = (data_dir or Path(tempfile.mkdtemp(prefix="chutes-dev-"))).resolve()
        self.extra_nodes = nodes or []
        self.username = username
        self.use_local_gpus = use_local_gpus
        self.timeout = timeout
        self.echo = echo
        self.domain = domain
        self.tls = tls  # mutual TLS to the devcluster (chutes.dev.tls)
        self.children: list[Child] = []
        self.info: StackInfo | None = None
        self.containers_mode: ContainersMode = containers
        self.containers = ContainerPlan(False, "containers: not decided yet")
        self.builds_mode: BuildsMode = builds
        self.builds = BuildsPlan(False, "builds: not decided yet")
        self.registry: str | None = None
        self._registry_proc: subprocess.Popen[bytes] | None = None
        self._lock_handle: IO[str] | None = None
        self.supervisor = Supervisor(echo)
        self.ports = StablePorts(self.data_dir / "run" / "ports.json", echo)

    # -- paths and keys

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    def _secrets(self) -> dict[str, str]:
        path = self.data_dir / SECRETS_FILE
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            loaded = {}
        data = {k: str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
        fresh = {
            "admin_key": new_key,
            "nomad_token": new_secret,
            "consul_token": new_secret,
            "secrets_key": new_secrets_key,  # seals chute secrets in the scheduler's store (CHUTES_SECRETS_KEY)
        }
        missing = [name for name in fresh if name not in data]
        for name in missing:
            data[name] = fresh[name]()
        if missing:
            self._save_secrets(data)
        # The management tokens, for the nomad and consul CLIs: NOMAD_TOKEN=$(cat <data dir>/nomad_token)
        for name in ("nomad_token", "consul_token"):
            _write_private(self.data_dir / name, data[name] + "\n")
        return data

    def _save_secrets(self, data: dict[str, str]) -> None:
        _write_private(self.data_dir / SECRETS_FILE, json.dumps(data))

    def _env_file(self, name: str, values: dict[str, str]) -> dict[str, str]:
        """A child's secrets in a 0600 file; the child's environment only names it (``CHUTES_ENV_FILE``)."""
        path = self.data_dir / "run" / f"{name}.env"
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(path, "".join(f"{k}={v}\n" for k, v in values.items()))
        return {"CHUTES_ENV_FILE": str(path)}

    def _child(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        tls_env = self.tls.client_env() if self.tls is not None else {}
        child = Child(name=name, argv=argv, env={**tls_env, **(env or {})}, log_path=self.logs_dir / f"{name}.log")
        child.start()
        self.children.append(child)
        return child

    def _keep_port(self, child: Child, name: str, flag: str, port: int) -> None:
        """Restart ``child`` on the port it got (not 0 again), and ask for it again next time."""
        argv = list(child.argv)
        argv[argv.index(flag) + 1] = str(port)
        child.argv = argv
        self.ports.record(name, port)

    def _port_file(self, name: str) -> Path:
        path = self.data_dir / "run" / f"{name}.port"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        return path

    # -- the parts, in order

    def plan_nodes(self) -> tuple[list[NodeSpec], int]:
        """The nodes to run: this machine's GPUs where NVML sees some, else the default simulated nodes."""
        gpus = local_gpu_count() if self.use_local_gpus else 0
        if gpus:
            local = NodeSpec(socket.gethostname().split(".")[0].lower() or "local", None, gpus)
            return merge((local,), self.extra_nodes), gpus
        return merge(DEFAULT_NODES, self.extra_nodes), 0

    def _start_devcluster(self, nodes: list[NodeSpec], keys: dict[str, str]) -> tuple[str, str]:
        ports_file = self._port_file("devcluster")
        argv = [executable("chutes-devcluster"), "--nomad-port", str(self.ports.ask("nomad"))]
        argv += ["--consul-port", str(self.ports.ask("consul"))]
        # ACLs on, with the management tokens read from files (not visible in the process's argv or environ).
        argv += ["--nomad-token-file", str(self.data_dir / "nomad_token")]
        argv += ["--consul-token-file", str(self.data_dir / "consul_token")]
        local = [node for node in nodes if not node.simulated]
        argv += ["--local-node-name", local[0].name] if local else ["--no-local-node"]
        for node in nodes:
            if node.simulated:
                argv += ["--node", node.flag()]
        argv += ["--ports-file", str(ports_file), "--data-dir", str(self.data_dir / "devcluster")]
        argv += self.tls.devcluster_args() if self.tls is not None else []
        argv += self.containers.devcluster_args()
        child = self._child("devcluster", argv)
        wait_for(lambda: isinstance(read_port_file(ports_file), dict), what="listening", child=child, timeout=30)
        ports = read_port_file(ports_file)
        assert isinstance(ports, dict)
        scheme = "https" if self.tls is not None else "http"
        nomad, consul = f"{scheme}://127.0.0.1:{ports['nomad']}", f"{scheme}://127.0.0.1:{ports['consul']}"
        management = {"X-Nomad-Token": keys["nomad_token"]}
        wait_for(
            lambda: (
                _ok(f"{nomad}/v1/nodes", management, self._tls("nomad"))
                and _ok(f"{consul}/v1/status/leader", tls=self._tls())
            ),
            what="answering",
            child=child,
            timeout=self.timeout,
        )
        self._keep_port(child, "nomad", "--nomad-port", ports["nomad"])
        self._keep_port(child, "consul", "--consul-port", ports["consul"])
        tasks = self.data_dir / "devcluster" / "tasks.json"
        self.supervisor.watch(
            child,
            on_death=lambda: _reap_tasks(tasks),
            is_up=lambda: _ok(f"{nomad}/v1/nodes", management, self._tls("nomad")),
        )
        return nomad, consul

    def _cluster_tokens(self, nomad: str, consul: str, keys: dict[str, str]) -> dict[str, PartTokens]:
        try:
            parts = provision(nomad, consul, keys["nomad_token"], keys["consul_token"], keys, tls=self._tls())
        except (ACLSetupError, httpx.HTTPError) as exc:
            raise DevStackError(
                f"cannot set up the devcluster's ACL tokens: {exc}", hint=f"see {self.logs_dir}"
            ) from None
        self._save_secrets(keys)
        return parts

    def _start_agents(self, nodes: list[NodeSpec], nomad: str, consul: str, tokens: PartTokens) -> None:
        env = {"NOMAD_ADDR": nomad, "CONSUL_HTTP_ADDR": consul}
        env |= self._env_file("agent", {"NOMAD_TOKEN": tokens.nomad, "CONSUL_HTTP_TOKEN": tokens.consul})
        started: list[tuple[NodeSpec, Child]] = []
        for node in nodes:
            argv = [executable("chutes-agent"), "run", "--node-id", node.name]
            if node.model is not None:
                argv += ["--simulate", f"{node.model}:{node.count}"]
            child = self._child(f"agent-{node.name}", argv, env)
            self.supervisor.watch(child)
            started.append((node, child))
        seen = {"X-Consul-Token": tokens.consul}
        for node, child in started:
            wait_for(
                lambda node=node: _ok(f"{consul}/v1/kv/chutes/nodes/{node.name}", seen, self._tls()),  # type: ignore[misc]
                what="publishing its inventory",
                child=child,
                timeout=self.timeout,
            )

    def _tls(self, service: Service = "consul") -> ClusterTLS | None:
        return self.tls.client(service) if self.tls is not None else None

    def _start_scheduler(
        self,
        nomad: str,
        consul: str,
        keys: dict[str, str],
        tokens: PartTokens,
        gateway_url: str | None = None,
    ) -> str:
        port_file = self._port_file("scheduler")
        argv = [
            executable("chutes-scheduler"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.ports.ask("scheduler")),
            "--port-file",
            str(port_file),
            "--data-dir",
            str(self.data_dir / "scheduler"),
            "--nomad-addr",
            nomad,
            "--consul-addr",
            consul,
        ]
        env = {
            "CHUTES_ADMIN_USERNAME": ADMIN_USERNAME,
            "CHUTES_RUNTIME_PYTHON": sys.executable,
            # A chute file written for another username deploys for a local user of that name (dev only).
            "CHUTES_DEV_ADOPT_USERS": "1",
            **self.containers.scheduler_env(),
        }
        if self.registry:
            env |= {"CHUTES_REGISTRY": self.registry, "CHUTES_REGISTRY_TLS_VERIFY": "false"}
            ca_bundle = host_ca_bundle()
            if ca_bundle:
                env["CHUTES_BUILD_CA_BUNDLE"] = ca_bundle
        if gateway_url:
            env["CHUTES_GATEWAY_URL"] = gateway_url  # the dashboard's "try a cord" form calls it
        env |= self._env_file(
            "scheduler",
            {
                "CHUTES_ADMIN_KEY": keys["admin_key"],
                "CHUTES_SECRETS_KEY": keys["secrets_key"],
                "NOMAD_TOKEN": tokens.nomad,
                "CONSUL_HTTP_TOKEN": tokens.consul,
            },
        )
        return self._serve_http("scheduler", self._child("scheduler", argv, env), port_file)

    def _gateway_key(self, api_url: str, keys: dict[str, str]) -> str:
        """A key with the gateway role (the gateway never holds the admin key); kept while it works."""
        stored = keys.get("gateway_key")
        if stored:
            with Client(api_url, stored) as client, contextlib.suppress(ChutesAPIError):
                client.me()
                return stored
        with Client(api_url, keys["admin_key"]) as admin:
            try:
                created = admin.create_key("gateway", role="gateway")
            except ChutesAPIError as exc:
                raise DevStackError(f"cannot create the gateway's key: {exc}", hint=f"see {self.logs_dir}") from None
        keys["gateway_key"] = str(created["api_key"])
        self._save_secrets(keys)
        return keys["gateway_key"]

    def _start_gateway(
        self, api_url: str, nomad: str, consul: str, gateway_key: str, tokens: PartTokens, port: int
    ) -> str:
        port_file = self._port_file("gateway")
        argv = [
            executable("chutes-gateway"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--port-file",
            str(port_file),
            "--scheduler-url",
            api_url,
            "--consul-addr",
            consul,
            "--nomad-addr",  # instances are checked against Nomad's allocations
            nomad,
            # Usage records wait on disk until the scheduler has them: a gateway killed hard loses none.
            "--spool-dir",
            str(self.data_dir / "gateway-spool"),
        ]
        if self.domain:
            argv += ["--domain", self.domain]
        env = self._env_file(
            "gateway",
            {"CHUTES_GATEWAY_KEY": gateway_key, "NOMAD_TOKEN": tokens.nomad, "CONSUL_HTTP_TOKEN": tokens.consul},
        )
        return self._serve_http("gateway", self._child("gateway", argv, env), port_file)

    def _serve_http(self, name: str, child: Child, port_file: Path) -> str:
        """The URL of an HTTP server ``child`` once its port file names its port and ``/healthz`` answers; it
        keeps that port across restarts and is watched from then on."""
        wait_for(lambda: isinstance(read_port_file(port_file), int), what="listening", child=child, timeout=30)
        port = read_port_file(port_file)
        assert isinstance(port, int)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _ok(f"{url}/healthz"), what="healthy", child=child, timeout=self.timeout)
        self._keep_port(child, name, "--port", port)
        self.supervisor.watch(child, is_up=lambda: _ok(f"{url}/healthz"))
        return url

    def _user_key(self, api_url: str, keys: dict[str, str]) -> str:
        """The dev user's key: the one kept in the data directory if it still works, else a new user."""
        stored = keys.get("user_key")
        if stored and keys.get("username") == self.username:
            with Client(api_url, stored) as client, contextlib.suppress(ChutesAPIError):
                client.me()
                return stored
        with Client(api_url, keys["admin_key"]) as admin:
            if self.username == ADMIN_USERNAME:
                return keys["admin_key"]
            try:
                created = admin.create_user(self.username)
            except ChutesAPIError as exc:
                raise DevStackError(
                    f"cannot create the user {self.username!r}: {exc}",
                    hint=f"its key was lost: pick another --username, or remove {self.data_dir}",
                ) from None
        key = str(created["api_key"])
        keys.update(user_key=key, username=self.username)
        self._save_secrets(keys)
        return key

    def _start_registry(self) -> None:
        """The local registry builds push to (and the docker driver pulls from), on a stable loopback port."""
        try:
            proc, address = start_registry(self.data_dir / "registry", self.ports.ask("registry") or None)
        except (OSError, RuntimeError) as exc:
            raise DevStackError(f"the local registry did not start: {exc}", hint="see docker-registry's log") from None
        self._registry_proc, self.registry = proc, address
        self.ports.record("registry", int(address.rsplit(":", 1)[1]))
        self.echo(f"  registry {address} (images built by `chutes build` are pushed here)")

    def _mark_builder(self, nomad: str, keys: dict[str, str], node_name: str) -> None:
        """Give one node the builder node meta, as an operator would a build-capable node of a real cluster."""
        headers = {"X-Nomad-Token": keys["nomad_token"]}
        tls = self._tls("nomad")
        with tls.httpx_client(timeout=10.0) if tls is not None else httpx.Client(timeout=10.0) as http:
            nodes = http.get(f"{nomad}/v1/nodes", headers=headers).json()
            node_id = next((n["ID"] for n in nodes if n.get("Name") == node_name), None)
            if node_id is None:
                raise DevStackError(f"node {node_name} is not in the devcluster", hint=f"see {self.logs_dir}")
            answer = http.post(
                f"{nomad}/v1/client/metadata",
                headers=headers,
                json={"NodeID": node_id, "Meta": {BUILDER_META[0]: BUILDER_META[1]}},
            )
            if answer.status_code != 200:
                raise DevStackError(f"cannot mark node {node_name} as a builder: {answer.text[:200]}")
        self.echo(f"  node {node_name} builds images (node meta {BUILDER_META[0]}={BUILDER_META[1]})")

    # -- lifecycle

    def start(self) -> StackInfo:
        """Start every part and wait until each is healthy; on failure stop what started and raise."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock()
        become_subreaper()  # orphans of dead parts are re-parented here and reaped
        try:
            keys = self._secrets()
            try:
                self.containers = plan_containers(self.containers_mode)
            except ContainersUnavailable as exc:
                raise DevStackError(str(exc), hint=exc.hint) from None
            self.echo(self.containers.message)
            try:
                self.builds = plan_builds(self.builds_mode)
            except BuildsUnavailable as exc:
                raise DevStackError(str(exc), hint=exc.hint) from None
            self.echo(self.builds.message)
            if self.builds.enabled:
                self._start_registry()
            nodes, local_gpus = self.plan_nodes()
            if local_gpus:
                self.echo(f"GPU: {local_gpus} NVIDIA GPU(s) found through NVML; they are node {nodes[0].name}")
            else:
                self.echo("GPU: none found on this machine; using simulated GPU nodes (instances run on the CPU)")
            for node in nodes:
                self.echo(f"  node {node}")
            self.echo("starting the devcluster (Nomad and Consul APIs, with ACLs) ...")
            nomad, consul = self._start_devcluster(nodes, keys)
            parts = self._cluster_tokens(nomad, consul, keys)
            if self.registry:
                self._mark_builder(nomad, keys, nodes[0].name)
            self.echo("starting the agents ...")
            self._start_agents(nodes, nomad, consul, parts["agent"])
            # The gateway's port is chosen first so that the scheduler (started before it) knows its address;
            # the gateway starts after the scheduler, which makes its gateway-role key.
            gateway_port = self.ports.ask("gateway") or _free_port()
            self.echo("starting the scheduler ...")
            api_url = self._start_scheduler(nomad, consul, keys, parts["scheduler"], f"http://127.0.0.1:{gateway_port}")
            self.echo("starting the gateway ...")
            gateway_key = self._gateway_key(api_url, keys)
            gateway_url = self._start_gateway(api_url, nomad, consul, gateway_key, parts["gateway"], gateway_port)
            api_key = self._user_key(api_url, keys)
        except ChildFailed as exc:
            self.keep_data = True  # keep the logs to read
            self.stop()
            raise DevStackError(str(exc), hint=exc.hint) from None
        except BaseException:
            self.stop()
            raise
        self.info = StackInfo(
            api_url=api_url,
            gateway_url=gateway_url,
            nomad_addr=nomad,
            consul_addr=consul,
            api_key=api_key,
            username=self.username,
            data_dir=str(self.data_dir),
            logs_dir=str(self.logs_dir),
            nodes=[{"name": n.name, "model": n.model, "count": n.count, "simulated": n.simulated} for n in nodes],
            local_gpus=local_gpus,
            containers=self.containers.enabled,
            builds=self.registry is not None,
            registry=self.registry,
            nomad_token=keys["nomad_token"],
            consul_token=keys["consul_token"],
            domain=self.domain,
        )
        return self.info

    def check(self) -> Child | None:
        """The first child that has exited, if any."""
        for child in self.children:
            if child.exited() is not None:
                return child
        return None

    def _lock(self) -> None:
        """One stack per data directory: a second one would share the devcluster's and the scheduler's files."""
        handle = (self.data_dir / "lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise DevStackError(
                f"another `chutes dev` is using {self.data_dir}",
                hint="stop it first, or give this one another --data-dir",
            ) from None
        self._lock_handle = handle

    def stop(self, timeout: float = 15.0, *, remove: bool = True) -> None:
        """Stop the children in reverse order (the devcluster last, so it stops its tasks); remove a temp dir."""
        for child in reversed(self.children):
            child.stop(timeout)
        self.children.clear()
        if self._registry_proc is not None:
            stop_registry(self._registry_proc)
            self._registry_proc = None
        if self.containers.enabled:
            # A devcluster that had to be killed could not stop its containers: none may outlive the stack.
            remove_leftovers(self.data_dir / "devcluster")
        if self._lock_handle is not None:
            self._lock_handle.close()  # releases the lock
            self._lock_handle = None
        if remove and not self.keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> DevStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def supervise(stack: DevStack, interval: float = 0.25) -> None:
    """Keep every part running until KeyboardInterrupt (Ctrl-C or SIGTERM): a part that dies is restarted."""
    while True:
        stack.supervisor.poll()
        time.sleep(interval)


def _reap_tasks(tasks_json: Path) -> None:
    """Kill the tasks a dead devcluster left running (its restart starts them again in their allocations)."""
    from chutes.devcluster.nomad.executor import ProcessTable

    ProcessTable(tasks_json).reap_leftovers()
