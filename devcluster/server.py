"""The devcluster process: the Consul and Nomad halves over one index, two HTTP servers, one event loop."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import ssl
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from chutes.devcluster.acl import http as acl_http
from chutes.devcluster.acl.policy import ConsulRules, NomadRules
from chutes.devcluster.acl.state import ACLState
from chutes.devcluster.config import DevclusterConfig
from chutes.devcluster.consul import api_agent, api_kv
from chutes.devcluster.consul.state import ConsulState
from chutes.devcluster.http_util import Handler, error_middleware
from chutes.devcluster.nomad import api as nomad_api
from chutes.devcluster.nomad import api_vars
from chutes.devcluster.nomad.cluster import NomadCluster
from chutes.devcluster.nomad.nodes import Node, local_node, simulated_node
from chutes.devcluster.nomad.podman import DockerDriver, owner_id
from chutes.devcluster.state.index import IndexStore
from chutes.devcluster.state.snapshot import SNAPSHOT_NAME, Snapshotter
from chutes.devcluster.tls import server_context

log = logging.getLogger(__name__)


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror} (use port 0 for a free one)") from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


class Devcluster:
    """Start with :meth:`start`, stop with :meth:`stop`; ``nomad_port``/``consul_port`` are set once started."""

    def __init__(self, config: DevclusterConfig) -> None:
        config.validate()
        self.config = config
        self._own_data_dir = config.data_dir is None
        self.data_dir = config.data_dir or Path(tempfile.mkdtemp(prefix="chutes-devcluster-"))
        self.nomad_port = 0
        self.consul_port = 0
        self._runners: list[web.AppRunner] = []
        self._ssl: ssl.SSLContext | None = None
        self.index: IndexStore
        self.consul: ConsulState
        self.nomad: NomadCluster
        self.snapshots: Snapshotter
        self.nomad_acl: ACLState[NomadRules] = ACLState.nomad()
        self.consul_acl: ACLState[ConsulRules] = ACLState.consul()
        self._unsaved_sections: set[str] = set()

    def _nodes(self) -> list[Node]:
        nodes = [simulated_node(spec.name, spec.model or "", spec.count) for spec in self.config.nodes]
        if self.config.local_node:
            local = local_node(self.config.local_node_name, probe=self.config.probe_gpus)
            if any(n.name == local.name for n in nodes):
                local = local_node(f"{local.name}-local", probe=self.config.probe_gpus)
            nodes.append(local)
        return nodes

    async def start(self) -> None:
        if self.config.tls_cert is not None and self.config.tls_key is not None:
            # Before anything starts: a bad certificate must not leave restored tasks running.
            self._ssl = server_context(self.config.tls_cert, self.config.tls_key, self.config.tls_client_ca)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        nodes = await asyncio.to_thread(self._nodes)
        docker = await DockerDriver.detect(
            self.config.docker_driver, owner_id(self.data_dir), frozenset(self.config.insecure_registries)
        )
        if docker is not None:
            for node in nodes:
                node.add_driver("docker", docker.attributes())
        self.index = IndexStore()
        local = next((n for n in nodes if not n.simulated), nodes[0])
        self.consul = ConsulState(self.index, local.name, self.config.session_min_ttl_s, self.config.reap_interval_s)
        self.nomad = NomadCluster(self.index, self.consul.catalog, self.data_dir, nodes, docker)
        self.snapshots = Snapshotter(self.data_dir / SNAPSHOT_NAME, self._collect, self._delta, self._replay)
        saved = self.snapshots.load()
        if saved is not None:
            self.index.restore(int(saved.get("index", 1)), saved.get("topics", {}))
            self.consul.restore(saved.get("consul", {}))
            self.nomad.state.restore(saved.get("nomad", {}))
            self.nomad_acl.restore(saved.get("acl", {}).get("nomad", {}))
            self.consul_acl.restore(saved.get("acl", {}).get("consul", {}))
            self.nomad.variables.restore(saved.get("variables", []))
            log.info("restored state from %s (index %d)", self.snapshots.path, self.index.index)
        self._setup_acl()
        self.consul.on_change(self.snapshots.mark)
        self.nomad.state.on_change.append(lambda: self._mark("nomad"))
        self.nomad_acl.on_change.append(lambda: self._mark("acl"))
        self.consul_acl.on_change.append(lambda: self._mark("acl"))
        self.nomad.variables.on_persist.append(lambda: self._mark("variables"))
        # A full snapshot now: the journal then starts from the state as restored (and from a clean line).
        self.snapshots.write()
        await self.consul.open()
        await self.nomad.open()
        self.snapshots.start()
        self.consul_port = await self._serve(self._consul_app(), self.config.consul_port)
        self.nomad_port = await self._serve(self._nomad_app(), self.config.nomad_port)
        if self.config.ports_file is not None:
            tmp = self.config.ports_file.with_name(self.config.ports_file.name + ".tmp")
            tmp.write_text(json.dumps(self.ports()))
            tmp.replace(self.config.ports_file)

    def _setup_acl(self) -> None:
        """ACLs on when asked for (or when a management token is given); that token is created if missing."""
        enabled = self.config.acl_enabled
        self.nomad_acl.enabled = self.consul_acl.enabled = enabled
        if self.config.nomad_token:
            self.nomad_acl.ensure_management(self.config.nomad_token, "devcluster management token")
        if self.config.consul_token:
            self.consul_acl.ensure_management(self.config.consul_token, "devcluster management token")
        if enabled:
            log.info("ACLs enforced (default policy deny); Nomad %s, Consul %s",
                     "bootstrapped" if self.nomad_acl.bootstrap_index else "not bootstrapped",
                     "bootstrapped" if self.consul_acl.bootstrap_index else "not bootstrapped")  # fmt: skip

    def ports(self) -> dict[str, int]:
        return {"nomad": self.nomad_port, "consul": self.consul_port}

    def _mark(self, section: str) -> None:
        self._unsaved_sections.add(section)
        self.snapshots.mark()

    def _sections(self, names: set[str]) -> dict[str, Any]:
        """The sections that are saved whole (small, or not tracked record by record)."""
        out: dict[str, Any] = {}
        if "nomad" in names:
            out["nomad"] = self.nomad.state.snapshot()
        if "acl" in names:
            out["acl"] = {"nomad": self.nomad_acl.snapshot(), "consul": self.consul_acl.snapshot()}
        if "variables" in names:
            out["variables"] = self.nomad.variables.snapshot()
        return out

    def _delta(self) -> dict[str, Any] | None:
        """One journal record: the index, the topics and Consul records that changed, whole other sections."""
        record: dict[str, Any] = {"index": self.index.index, "topics": self.index.take_changed()}
        consul = self.consul.delta()
        if consul:
            record["consul"] = consul
        record.update(self._sections(self._unsaved_sections))
        self._unsaved_sections.clear()
        return record

    @staticmethod
    def _replay(saved: dict[str, Any], record: dict[str, Any]) -> None:
        saved["index"] = max(int(saved.get("index", 1)), int(record.get("index", 1)))
        topics = saved.setdefault("topics", {})
        for topic, idx in record.get("topics", {}).items():
            topics[topic] = max(idx, topics.get(topic, 0))
        if "consul" in record:
            ConsulState.replay(saved.setdefault("consul", {}), record["consul"])
        for section in ("nomad", "acl", "variables"):
            if section in record:
                saved[section] = record[section]

    def _collect(self) -> dict[str, Any]:
        self._unsaved_sections.clear()
        return {
            "index": self.index.index,
            "topics": self.index.topics(),
            "consul": self.consul.snapshot(),
            "nomad": self.nomad.state.snapshot(),
            "acl": {"nomad": self.nomad_acl.snapshot(), "consul": self.consul_acl.snapshot()},
            "variables": self.nomad.variables.snapshot(),
        }

    @web.middleware
    async def _persist(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Acknowledged writes are on disk before the client hears back (as raft commits them in Nomad/Consul)."""
        response = await handler(request)
        if request.method in ("PUT", "POST", "DELETE"):
            try:
                self.snapshots.flush()
            except OSError:
                log.exception("writing the snapshot after %s %s failed", request.method, request.path)
        return response

    def _consul_app(self) -> web.Application:
        app = web.Application(
            middlewares=[
                error_middleware("Consul"),
                api_agent.datacenter_middleware,
                self._persist,
                acl_http.consul_middleware(self.consul_acl, lambda: self.consul),
            ],
            client_max_size=2 * 1024 * 1024,
        )
        app[api_agent.CONSUL] = self.consul
        app[acl_http.CONSUL_ACL] = self.consul_acl
        app.add_routes(api_agent.routes)
        app.add_routes(api_kv.routes)
        app.add_routes(acl_http.consul_routes)
        return app

    def _nomad_app(self) -> web.Application:
        app = web.Application(
            middlewares=[
                error_middleware("Nomad"),
                self._persist,
                acl_http.nomad_middleware(self.nomad_acl),
            ],
            client_max_size=8 * 1024 * 1024,
        )
        app[nomad_api.NOMAD] = self.nomad
        app[acl_http.NOMAD_ACL] = self.nomad_acl
        app.add_routes(nomad_api.routes)
        app.add_routes(acl_http.nomad_routes)
        app.add_routes(api_vars.routes)
        return app

    async def _serve(self, app: web.Application, port: int) -> int:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        sock = _listen(self.config.host, port)
        site = web.SockSite(runner, sock, ssl_context=self._ssl)
        await site.start()
        self._runners.append(runner)
        return int(sock.getsockname()[1])

    async def stop(self) -> None:
        """Snapshot first (so allocations restart next time), then stop every task, then the servers."""
        await self.snapshots.stop()
        # The servers go first: no request may persist task states changed by the shutdown itself.
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        await self.nomad.close()
        await self.consul.close()
        if self._own_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
