"""Services and checks: what Consul's agent, catalog and health endpoints read and write.

One registry holds every node's services (the devcluster is one Consul agent standing in for the agents of
all its Nomad nodes). Each mutation bumps the shared index under the topics ``services`` (the service list),
``svc:<name>`` (that service's instances and health) and ``checks``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from chutes.devcluster.consul.records import CRITICAL, DATACENTER, PASSING, Check, Service
from chutes.devcluster.state.index import IndexStore

SERF_CHECK = "serfHealth"


def node_uuid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"chutes-devcluster-consul-node/{name}"))


class Catalog:
    """The service and check tables, with the health views over them."""

    def __init__(self, index: IndexStore, local_node: str) -> None:
        self.index = index
        self.local_node = local_node
        self.nodes: dict[str, str] = {local_node: node_uuid(local_node)}
        self.services: dict[str, Service] = {}
        self.checks: dict[str, Check] = {}
        # service ID -> its check IDs (insertion-ordered), so a service's checks cost O(its checks), not O(all).
        self._by_service: dict[str, dict[str, None]] = {}
        # Services and checks changed since the snapshot journal last took them.
        self.unsaved_services: set[str] = set()
        self.unsaved_checks: set[str] = set()
        # Called with every check that has just turned critical (sessions bound to it are invalidated).
        self.on_critical: list[Callable[[Check], None]] = []
        # Called with every check registered or removed (the check runner starts or stops it).
        self.on_check_added: list[Callable[[Check], None]] = []
        self.on_check_removed: list[Callable[[Check], None]] = []
        self.on_change: list[Callable[[], None]] = []

    # -- nodes ---------------------------------------------------------------------------------------------

    def ensure_node(self, name: str) -> None:
        if name not in self.nodes:
            self.nodes[name] = node_uuid(name)
            self._bump("nodes")

    def node_json(self, name: str) -> dict[str, Any]:
        return {
            "ID": self.nodes.get(name) or node_uuid(name),  # not a default argument: uuid5 per entry adds up
            "Node": name,
            "Address": "127.0.0.1",
            "Datacenter": DATACENTER,
            "TaggedAddresses": {"lan": "127.0.0.1", "wan": "127.0.0.1"},
            "Meta": {"consul-network-segment": ""},
            "CreateIndex": 1,
            "ModifyIndex": 1,
        }

    def serf_check_json(self, node: str) -> dict[str, Any]:
        return {
            "Node": node,
            "CheckID": SERF_CHECK,
            "Name": "Serf Health Status",
            "Status": PASSING,
            "Notes": "",
            "Output": "Agent alive and reachable",
            "ServiceID": "",
            "ServiceName": "",
            "ServiceTags": [],
            "Type": "",
            "Definition": {},
            "CreateIndex": 1,
            "ModifyIndex": 1,
        }

    # -- services ------------------------------------------------------------------------------------------

    def register_service(self, service: Service, checks: list[Check], replace_existing_checks: bool = False) -> None:
        """Add or replace ``service`` and its ``checks`` (existing check states are kept when unchanged)."""
        self.ensure_node(service.node)
        old = self.services.get(service.id)
        idx = self.index.index + 1
        service.create_index = old.create_index if old else idx
        service.modify_index = idx
        self.services[service.id] = service
        self.unsaved_services.add(service.id)
        new_ids = {c.check_id for c in checks}
        if replace_existing_checks:
            for check in self.service_checks(service.id):
                if check.check_id not in new_ids:
                    self._drop_check(check.check_id)
        for check in checks:
            check.service_id = service.id
            check.service_name = service.name
            check.service_tags = list(service.tags)
            check.node = service.node
            self._put_check(check)
        topics = ["services", f"svc:{service.name}", "checks"]
        if old is not None and old.name != service.name:
            topics.append(f"svc:{old.name}")
        self._bump(*topics)

    def deregister_service(self, service_id: str) -> bool:
        service = self.services.pop(service_id, None)
        if service is None:
            return False
        self.unsaved_services.add(service_id)
        for check in self.service_checks(service_id):
            self._drop_check(check.check_id)
        self._bump("services", f"svc:{service.name}", "checks")
        return True

    def instances(self, name: str) -> list[Service]:
        return sorted((s for s in self.services.values() if s.name == name), key=lambda s: (s.node, s.id))

    def service_checks(self, service_id: str) -> list[Check]:
        return sorted((self.checks[i] for i in self._by_service.get(service_id, ())), key=lambda c: c.check_id)

    # -- checks --------------------------------------------------------------------------------------------

    def register_check(self, check: Check) -> None:
        if check.service_id:
            service = self.services.get(check.service_id)
            if service is None:
                raise KeyError(check.service_id)
            check.service_name = service.name
            check.service_tags = list(service.tags)
            check.node = service.node
        self._put_check(check)
        self._bump("checks", *([f"svc:{check.service_name}"] if check.service_name else []))

    def deregister_check(self, check_id: str) -> bool:
        check = self.checks.get(check_id)
        if check is None:
            return False
        self._drop_check(check_id)
        self._bump("checks", *([f"svc:{check.service_name}"] if check.service_name else []))
        return True

    def set_status(self, check_id: str, status: str, output: str | None = None) -> bool:
        """Record a check result; bumps the index only when the status changed."""
        check = self.checks.get(check_id)
        if check is None:
            return False
        now = time.monotonic()
        if check.definition.ttl_s is not None:
            check.ttl_deadline = now + check.definition.ttl_s
        if status == check.status:
            # Consul syncs output-only changes lazily (check_update_interval): watchers are not woken for them.
            if output is not None:
                check.output = output
            return True
        was_critical = check.status == CRITICAL
        check.status = status
        if output is not None:
            check.output = output
        if status == CRITICAL:
            check.critical_since = check.critical_since if was_critical else now
        else:
            check.critical_since = None
        check.modify_index = self._bump("checks", *([f"svc:{check.service_name}"] if check.service_name else []))
        self.unsaved_checks.add(check_id)
        if status == CRITICAL and not was_critical:
            for callback in self.on_critical:
                callback(check)
        return True

    def _put_check(self, check: Check) -> None:
        old = self.checks.get(check.check_id)
        idx = self.index.index + 1
        check.create_index = old.create_index if old else idx
        check.modify_index = idx
        if old is not None and old.definition == check.definition:
            check.status, check.output = old.status, old.output
            check.critical_since, check.ttl_deadline = old.critical_since, old.ttl_deadline
        else:
            if old is not None:
                for callback in self.on_check_removed:
                    callback(old)
            now = time.monotonic()
            check.critical_since = now if check.status == CRITICAL else None
            if check.definition.ttl_s is not None:
                check.ttl_deadline = now + check.definition.ttl_s
        self.restore_check(check)
        if old is None or old.definition != check.definition:
            for callback in self.on_check_added:
                callback(check)

    def restore_check(self, check: Check) -> None:
        """Put ``check`` in the tables as it is (no callbacks, no index bump): registration and restore."""
        old = self.checks.get(check.check_id)
        if old is not None and old.service_id != check.service_id:
            self._unlink(old)
        self.checks[check.check_id] = check
        if check.service_id:
            self._by_service.setdefault(check.service_id, {})[check.check_id] = None
        self.unsaved_checks.add(check.check_id)

    def _unlink(self, check: Check) -> None:
        ids = self._by_service.get(check.service_id)
        if ids is not None:
            ids.pop(check.check_id, None)
            if not ids:
                del self._by_service[check.service_id]

    def _drop_check(self, check_id: str) -> None:
        check = self.checks.pop(check_id, None)
        if check is not None:
            self._unlink(check)
            self.unsaved_checks.add(check_id)
            for callback in self.on_check_removed:
                callback(check)

    def _bump(self, *topics: str) -> int:
        idx = self.index.bump(*topics)
        for callback in self.on_change:
            callback()
        return idx

    # -- views ---------------------------------------------------------------------------------------------

    def health_entries(self, name: str, passing: bool = False, tags: list[str] | None = None) -> list[dict[str, Any]]:
        """The ``/v1/health/service/:name`` entries: node, service and every check including ``serfHealth``."""
        out = []
        for service in self.instances(name):
            if tags and not all(t in service.tags for t in tags):
                continue
            checks = [self.serf_check_json(service.node)] + [
                self.check_json(c) for c in self.service_checks(service.id)
            ]
            if passing and any(c["Status"] != PASSING for c in checks):
                continue
            out.append({"Node": self.node_json(service.node), "Service": self.service_json(service), "Checks": checks})
        return out

    def aggregated_status(self, service_id: str) -> str:
        statuses = [c.status for c in self.service_checks(service_id)]
        for status in (CRITICAL, "warning"):
            if status in statuses:
                return status
        return PASSING

    def service_json(self, service: Service) -> dict[str, Any]:
        return {
            "ID": service.id,
            "Service": service.name,
            "Tags": list(service.tags),
            "Address": service.address,
            "Meta": dict(service.meta),
            "Port": service.port,
            "Weights": dict(service.weights),
            "EnableTagOverride": service.enable_tag_override,
            "TaggedAddresses": dict(service.tagged_addresses),
            "Datacenter": DATACENTER,
            "Kind": "",
            "CreateIndex": service.create_index,
            "ModifyIndex": service.modify_index,
        }

    def agent_service_json(self, service: Service) -> dict[str, Any]:
        """The agent endpoints' ``AgentService``: no indexes, ``Kind`` and ``TaggedAddresses`` only when set."""
        out = self.service_json(service)
        for key in ("CreateIndex", "ModifyIndex", "Kind"):
            out.pop(key)
        if not out["TaggedAddresses"]:
            out.pop("TaggedAddresses")
        return out

    def catalog_service_json(self, service: Service) -> dict[str, Any]:
        node = self.node_json(service.node)
        return {
            "ID": node["ID"],
            "Node": service.node,
            "Address": node["Address"],
            "Datacenter": DATACENTER,
            "TaggedAddresses": node["TaggedAddresses"],
            "NodeMeta": node["Meta"],
            "ServiceKind": "",
            "ServiceID": service.id,
            "ServiceName": service.name,
            "ServiceTags": list(service.tags),
            "ServiceAddress": service.address,
            "ServiceTaggedAddresses": dict(service.tagged_addresses),
            "ServiceWeights": dict(service.weights),
            "ServiceMeta": dict(service.meta),
            "ServicePort": service.port,
            "ServiceEnableTagOverride": service.enable_tag_override,
            "CreateIndex": service.create_index,
            "ModifyIndex": service.modify_index,
        }

    def check_json(self, check: Check) -> dict[str, Any]:
        d = check.definition
        definition: dict[str, Any] = {}
        if d.http:
            definition = {"HTTP": d.http, "Method": d.method, "Header": d.header, "Interval": f"{d.interval_s}s"}
        elif d.tcp:
            definition = {"TCP": d.tcp, "Interval": f"{d.interval_s}s"}
        return {
            "Node": check.node,
            "CheckID": check.check_id,
            "Name": check.name,
            "Status": check.status,
            "Notes": check.notes,
            "Output": check.output,
            "ServiceID": check.service_id,
            "ServiceName": check.service_name,
            "ServiceTags": list(check.service_tags),
            "Type": d.kind,
            "Interval": f"{d.interval_s:g}s" if d.interval_s else "",
            "Timeout": f"{d.timeout_s:g}s" if d.kind in ("http", "tcp") else "",
            "Definition": definition,
            "CreateIndex": check.create_index,
            "ModifyIndex": check.modify_index,
        }

    def catalog_services(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {"consul": []}
        for service in self.services.values():
            tags = out.setdefault(service.name, [])
            for tag in service.tags:
                if tag not in tags:
                    tags.append(tag)
        return out
