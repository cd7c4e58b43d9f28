"""Nomad client nodes: simulated GPU nodes from ``--node NAME=MODEL:COUNT`` and the local machine.

Simulated nodes take their GPUs from ``chutes.core.inventory.simulated_gpus`` so that an agent simulating the same
node id reports the same UUIDs. Each GPU model is one device group named by its NVML name, as the NVIDIA
device plugin fingerprints it, with the ``memory`` attribute in MiB.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

from chutes.core.inventory import GPUInfo, simulated_gpus
from chutes.devcluster.nomad.attributes import Attribute

log = logging.getLogger(__name__)

NOMAD_VERSION = "1.9.7"
DATACENTER = "dc1"
NODE_POOL = "default"
SIM_CPU_MHZ = 64_000
SIM_MEMORY_MB = 512 * 1024


def node_uuid(name: str) -> str:
    """A stable node ID derived from the node's name (the same across devcluster restarts)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"chutes-devcluster-node/{name}"))


@dataclass
class DeviceInstance:
    id: str
    healthy: bool = True
    pci_bus_id: str = ""
    index: int | None = None  # NVML index, to name the GPU to a container runtime (CDI "nvidia.com/gpu=<index>")


@dataclass
class DeviceGroup:
    vendor: str
    type: str
    name: str
    attributes: dict[str, Attribute]
    instances: list[DeviceInstance]

    def id_tuple(self) -> str:
        return f"{self.vendor}/{self.type}/{self.name}"

    def to_json(self) -> dict[str, Any]:
        return {
            "Vendor": self.vendor,
            "Type": self.type,
            "Name": self.name,
            "Attributes": {k: v.to_json() for k, v in self.attributes.items()},
            "Instances": [
                {"ID": i.id, "Healthy": i.healthy, "HealthDescription": "", "Locality": {"PciBusID": i.pci_bus_id}}
                for i in self.instances
            ],
        }


@dataclass
class Node:
    id: str
    name: str
    datacenter: str = DATACENTER
    node_class: str = ""
    node_pool: str = NODE_POOL
    status: str = "ready"
    eligibility: str = "eligible"
    drain_strategy: dict[str, Any] | None = None  # Nomad's DrainStrategy (DrainSpec flattened), while draining
    last_drain: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    dynamic_meta: dict[str, str] = field(default_factory=dict)
    devices: list[DeviceGroup] = field(default_factory=list)
    cpu_mhz: int = SIM_CPU_MHZ
    memory_mb: int = SIM_MEMORY_MB
    simulated: bool = True
    create_index: int = 1
    modify_index: int = 1
    # Task drivers and their fingerprinted attributes (``driver.<name>`` and ``driver.<name>.*``).
    drivers: dict[str, dict[str, str]] = field(default_factory=lambda: {"raw_exec": {"driver.raw_exec": "true"}})

    def all_meta(self) -> dict[str, str]:
        return {**self.meta, **self.dynamic_meta}

    def add_driver(self, name: str, attributes: dict[str, str]) -> None:
        """Fingerprint one more task driver: it shows in ``Drivers``, and ``driver.<name>`` = "1" plus its
        ``driver.<name>.*`` attributes in ``Attributes`` (constraints on ``${attr.driver.docker}`` work)."""
        self.drivers[name] = {f"driver.{name}": "true", **attributes}
        self.attributes[f"driver.{name}"] = "1"
        self.attributes.update(attributes)

    def drivers_json(self) -> dict[str, Any]:
        return {
            name: {
                "Attributes": dict(attributes),
                "Detected": True,
                "Healthy": True,
                "HealthDescription": "Healthy",
                "UpdateTime": "2024-01-01T00:00:00Z",
            }
            for name, attributes in self.drivers.items()
        }

    def resources_json(self) -> dict[str, Any]:
        return {
            "Cpu": {"CpuShares": self.cpu_mhz, "TotalCpuCores": max(1, self.cpu_mhz // 1000)},
            "Memory": {"MemoryMB": self.memory_mb},
            "Disk": {"DiskMB": 100 * 1024},
            "Networks": [{"Mode": "host", "Device": "lo", "IP": "127.0.0.1", "CIDR": "127.0.0.1/32", "MBits": 1000}],
            "Devices": [d.to_json() for d in self.devices] or None,
            "MinDynamicPort": 20000,
            "MaxDynamicPort": 32000,
        }

    def reserved_json(self) -> dict[str, Any]:
        return {"Cpu": {"CpuShares": 0}, "Memory": {"MemoryMB": 0}, "Disk": {"DiskMB": 0}, "Networks": {}}

    def stub_json(self, resources: bool = False, os_attrs: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Address": "127.0.0.1",
            "ID": self.id,
            "Datacenter": self.datacenter,
            "Name": self.name,
            "NodeClass": self.node_class,
            "NodePool": self.node_pool,
            "Version": NOMAD_VERSION,
            "Drain": self.drain_strategy is not None,
            "SchedulingEligibility": self.eligibility,
            "Status": self.status,
            "StatusDescription": "",
            "Drivers": self.drivers_json(),
            "HostVolumes": {},
            "LastDrain": self.last_drain,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }
        if os_attrs:
            out["Attributes"] = {k: v for k, v in self.attributes.items() if k.startswith("os.")}
        if resources:
            out["NodeResources"] = self.resources_json()
            out["ReservedResources"] = self.reserved_json()
        return out

    def full_json(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Name": self.name,
            "Datacenter": self.datacenter,
            "HTTPAddr": "127.0.0.1:4646",
            "TLSEnabled": False,
            "Attributes": dict(self.attributes),
            "NodeResources": self.resources_json(),
            "ReservedResources": self.reserved_json(),
            "Links": {},
            "Meta": self.all_meta(),
            "NodeClass": self.node_class,
            "NodePool": self.node_pool,
            "CgroupParent": "",
            "DrainStrategy": self.drain_strategy,
            "SchedulingEligibility": self.eligibility,
            "Status": self.status,
            "StatusDescription": "",
            "StatusUpdatedAt": 0,
            "Events": [
                {"Message": "Node registered", "Subsystem": "Cluster", "Details": None, "CreateIndex": 0},
                *self.events,
            ][-10:],
            "Drivers": self.drivers_json(),
            "HostVolumes": {},
            "HostNetworks": {},
            "CSIControllerPlugins": None,
            "CSINodePlugins": None,
            "LastDrain": self.last_drain,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


def base_attributes(node_id: str, name: str) -> dict[str, str]:
    return {
        "kernel.name": platform.system().lower() or "linux",
        "kernel.version": platform.release(),
        "os.name": "devcluster",
        "os.version": "1",
        "cpu.arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()),
        "cpu.numcores": str(os.cpu_count() or 1),
        "nomad.version": NOMAD_VERSION,
        "driver.raw_exec": "1",
        "unique.hostname": name,
        "unique.network.ip-address": "127.0.0.1",
        "unique.id": node_id,
        "chutes.devcluster": "true",
    }


def gpu_groups(gpus: list[GPUInfo]) -> list[DeviceGroup]:
    """One device group per NVML name, with the attributes the NVIDIA device plugin fingerprints."""
    groups: dict[str, DeviceGroup] = {}
    for gpu in gpus:
        group = groups.get(gpu.name)
        if group is None:
            group = DeviceGroup(
                vendor="nvidia",
                type="gpu",
                name=gpu.name,
                attributes={"memory": Attribute(int(gpu.memory_total_mib), "MiB")},
                instances=[],
            )
            groups[gpu.name] = group
        group.instances.append(
            DeviceInstance(
                id=gpu.uuid,
                healthy=gpu.healthy,
                pci_bus_id=f"00000000:{0x10 + gpu.index:02X}:00.0",
                index=gpu.index,
            )
        )
    return list(groups.values())


def simulated_node(name: str, model: str, count: int) -> Node:
    """A simulated node ``name`` with ``count`` GPUs of catalog ``model`` (UUIDs shared with the agent)."""
    node_id = node_uuid(name)
    gpus = simulated_gpus(name, model, count) if count > 0 else []
    node = Node(id=node_id, name=name, attributes=base_attributes(node_id, name), devices=gpu_groups(gpus))
    if gpus:
        node.devices[0].attributes["driver_version"] = Attribute("550.54.15")
    return node


def local_node(name: str | None = None, probe: bool = True) -> Node:
    """The machine the devcluster runs on; its GPUs come from NVML through the agent's probe where present."""
    hostname = name or socket.gethostname()
    node_id = node_uuid(hostname)
    node = Node(
        id=node_id,
        name=hostname,
        attributes=base_attributes(node_id, hostname),
        cpu_mhz=(os.cpu_count() or 1) * 2000,
        memory_mb=_memory_mb(),
        simulated=False,
    )
    if probe:
        node.devices = _probe_gpus(hostname)
    return node


def _memory_mb() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024))
    except (ValueError, OSError, AttributeError):
        return 8192


def _probe_gpus(hostname: str) -> list[DeviceGroup]:
    try:
        from chutes.agent.sources import probe_local
    except ImportError:
        return []
    try:
        inventory = probe_local(hostname)
    except Exception:  # the probe promises not to raise; a broken driver must not stop the devcluster
        log.warning("NVML probe failed; the local node has no GPUs", exc_info=True)
        return []
    if inventory is None:
        return []
    groups = gpu_groups(inventory.gpus)
    if inventory.driver_version:
        for group in groups:
            group.attributes["driver_version"] = Attribute(inventory.driver_version)
    return groups
