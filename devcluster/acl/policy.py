"""What a set of ACL policies allows, decided as Nomad and Consul decide it.

Nomad: ``namespace "<glob>" { policy = deny|read|write|scale, capabilities = [...], variables { path "<glob>"
{ capabilities = [...] } } }`` plus ``node``, ``agent``, ``operator``, ``quota``, ``plugin`` blocks with a
``policy``. A namespace policy expands to capabilities (``read`` → ``list-jobs``, ``read-job``, ...;
``write`` adds ``submit-job``, ``dispatch-job``, ``read-logs``, ``alloc-lifecycle``, ...); an exact namespace
label wins over globs, then the glob closest in length; ``deny`` anywhere wins over what other policies
grant; for ``node``/``agent``/``operator`` the strongest of deny > write > read wins (``maxPrivilege``).

Consul: ``key``/``key_prefix``, ``service``/``service_prefix``, ``node``/``node_prefix``,
``session``/``session_prefix``, ``agent``/``agent_prefix``, ``event``/``query`` (+ ``_prefix``) blocks with a
``policy`` (deny, read, list, write) and top-level ``acl``, ``operator``, ``keyring``, ``mesh``. An exact rule
wins over prefix rules, the longest prefix over shorter ones; between policies, deny over write over read.
Without a matching rule the default policy (deny) applies.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field

from chutes.devcluster.acl.rules import Block, RulesError, parse

DENY, READ, LIST, WRITE = "deny", "read", "list", "write"
_RANK = {"": 0, READ: 1, LIST: 2, WRITE: 3, DENY: 4}  # merge order: the higher wins

NS_READ = frozenset(
    {"list-jobs", "parse-job", "read-job", "csi-list-volume", "csi-read-volume", "list-scaling-policies",
     "read-scaling-policy", "read-job-scaling", "host-volume-read"}
)  # fmt: skip
NS_WRITE = NS_READ | {
    "scale-job", "submit-job", "dispatch-job", "read-logs", "read-fs", "alloc-exec", "alloc-lifecycle",
    "csi-write-volume", "csi-mount-volume", "csi-register-plugin", "submit-recommendation", "host-volume-write",
}  # fmt: skip
NS_SCALE = frozenset({"list-scaling-policies", "read-scaling-policy", "read-job-scaling", "scale-job"})
NS_CAPABILITIES = NS_WRITE | {"deny", "alloc-node-exec", "host-volume-register", "host-volume-create"}
VAR_CAPABILITIES = frozenset({"read", "write", "list", "destroy", "deny"})
NOMAD_POLICIES = {DENY, READ, WRITE}
CONSUL_POLICIES = {DENY, READ, LIST, WRITE}


def _merge(a: str, b: str) -> str:
    return a if _RANK[a] >= _RANK[b] else b


def _policy(block: Block, allowed: set[str], what: str) -> str:
    value = block.attrs.get("policy", "")
    if value and value not in allowed:
        raise RulesError(f"{what}: invalid policy {value!r} (use {', '.join(sorted(allowed))})")
    return str(value)


# -- Nomad -------------------------------------------------------------------------------------------------


@dataclass
class NamespaceRule:
    capabilities: set[str] = field(default_factory=set)
    denied: bool = False
    #: variable path glob -> capabilities
    variables: dict[str, set[str]] = field(default_factory=dict)


@dataclass
class NomadRules:
    """The rules of one or more Nomad policies, merged."""

    namespaces: dict[str, NamespaceRule] = field(default_factory=dict)
    node: str = ""
    agent: str = ""
    operator: str = ""

    @classmethod
    def parse(cls, text: str) -> NomadRules:
        doc = parse(text)
        rules = cls()
        for block in doc.blocks:
            if block.kind == "namespace":
                label = block.labels[0] if block.labels else "default"
                rule = NamespaceRule()
                policy = block.attrs.get("policy", "")
                if policy not in ("", DENY, READ, WRITE, "scale"):
                    raise RulesError(f'namespace "{label}": invalid policy {policy!r} (deny, read, write, scale)')
                rule.capabilities |= {READ: NS_READ, WRITE: NS_WRITE, "scale": NS_SCALE}.get(policy, frozenset())
                caps = block.attrs.get("capabilities", [])
                if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
                    raise RulesError(f'namespace "{label}": capabilities must be a list of strings')
                unknown = sorted(set(caps) - NS_CAPABILITIES)
                if unknown:
                    raise RulesError(f'namespace "{label}": unknown capabilities {unknown}')
                rule.capabilities |= set(caps)
                rule.denied = policy == DENY or "deny" in caps
                for inner in block.blocks:
                    if inner.kind != "variables":
                        continue
                    for path in inner.blocks:
                        glob = path.labels[0] if path.labels else "*"
                        pcaps = set(path.attrs.get("capabilities", []))
                        if pcaps - VAR_CAPABILITIES:
                            raise RulesError(f'variables path "{glob}": unknown capabilities '
                                             f"{sorted(pcaps - VAR_CAPABILITIES)}")  # fmt: skip
                        rule.variables[glob] = pcaps
                rules.namespaces[label] = rule
            elif block.kind in ("node", "agent", "operator"):
                setattr(rules, block.kind, _policy(block, NOMAD_POLICIES, block.kind))
            elif block.kind in ("quota", "plugin", "host_volume", "node_pool"):
                continue  # accepted, nothing in the devcluster needs them
            else:
                raise RulesError(f"unknown Nomad rule {block.kind!r}")
        return rules

    @classmethod
    def merged(cls, all_rules: Iterable[NomadRules]) -> NomadRules:
        out = cls()
        for rules in all_rules:
            for label, rule in rules.namespaces.items():
                have = out.namespaces.setdefault(label, NamespaceRule())
                have.capabilities |= rule.capabilities
                have.denied = have.denied or rule.denied
                for glob, caps in rule.variables.items():
                    have.variables[glob] = have.variables.get(glob, set()) | caps
            for kind in ("node", "agent", "operator"):
                setattr(out, kind, _merge(getattr(out, kind), getattr(rules, kind)))
        return out

    def _namespace(self, namespace: str) -> NamespaceRule | None:
        if namespace in self.namespaces:
            return self.namespaces[namespace]
        matches = [(len(g), g) for g in self.namespaces if fnmatch.fnmatchcase(namespace, g)]
        if not matches:
            return None
        # Nomad picks the glob closest to the name: the longest one.
        return self.namespaces[max(matches)[1]]

    def allows_namespace(self, namespace: str, capability: str) -> bool:
        rule = self._namespace(namespace)
        return rule is not None and not rule.denied and capability in rule.capabilities

    def allows_variable(self, namespace: str, path: str, capability: str) -> bool:
        rule = self._namespace(namespace)
        if rule is None or rule.denied:
            return False
        matches = [(len(g), g) for g in rule.variables if fnmatch.fnmatchcase(path, g)]
        if not matches:
            return False
        caps = rule.variables[max(matches)[1]]
        # Nomad: "read" and "write" each include "list"; "write" does not include "read" (nor "destroy").
        return "deny" not in caps and (capability in caps or (capability == LIST and bool({READ, WRITE} & caps)))

    def allows(self, kind: str, access: str) -> bool:
        """``node``/``agent``/``operator`` at ``read`` or ``write``."""
        have = getattr(self, kind)
        return have != DENY and _RANK.get(have, 0) >= _RANK[access]


# -- Consul ------------------------------------------------------------------------------------------------

CONSUL_SEGMENTS = ("key", "service", "node", "session", "agent", "event", "query")
CONSUL_TOP = ("acl", "operator", "keyring", "mesh", "peering")


@dataclass
class ConsulRules:
    """The rules of one or more Consul policies, merged."""

    exact: dict[str, dict[str, str]] = field(default_factory=lambda: {k: {} for k in CONSUL_SEGMENTS})
    prefix: dict[str, dict[str, str]] = field(default_factory=lambda: {k: {} for k in CONSUL_SEGMENTS})
    top: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> ConsulRules:
        doc = parse(text)
        rules = cls()
        for key, value in doc.attrs.items():
            if key not in CONSUL_TOP:
                raise RulesError(f"unknown Consul rule {key!r}")
            if value not in CONSUL_POLICIES:
                raise RulesError(f"{key}: invalid policy {value!r} (use deny, read, write)")
            rules.top[key] = value
        for block in doc.blocks:
            kind = block.kind
            table = rules.prefix if kind.endswith("_prefix") else rules.exact
            segment = kind.removesuffix("_prefix")
            if segment not in CONSUL_SEGMENTS:
                raise RulesError(f"unknown Consul rule {kind!r}")
            if not block.labels:
                raise RulesError(f'{kind}: a name is required, e.g. {kind} "" {{ policy = "read" }}')
            label = block.labels[0]
            policy = _policy(block, CONSUL_POLICIES, f'{kind} "{label}"')
            table[segment][label] = _merge(table[segment].get(label, ""), policy)
        return rules

    @classmethod
    def merged(cls, all_rules: Iterable[ConsulRules]) -> ConsulRules:
        out = cls()
        for rules in all_rules:
            for segment in CONSUL_SEGMENTS:
                for table, mine in ((out.exact, rules.exact), (out.prefix, rules.prefix)):
                    for label, policy in mine[segment].items():
                        table[segment][label] = _merge(table[segment].get(label, ""), policy)
            for key, policy in rules.top.items():
                out.top[key] = _merge(out.top.get(key, ""), policy)
        return out

    def level(self, segment: str, name: str) -> str:
        """The policy for ``name`` in ``segment``: the exact rule, else the longest matching prefix, else ""."""
        if name in self.exact[segment]:
            return self.exact[segment][name]
        best = ""
        found = ""
        for prefix, policy in self.prefix[segment].items():
            if name.startswith(prefix) and len(prefix) >= len(best):
                best, found = prefix, policy
        return found

    def allows(self, segment: str, name: str, access: str) -> bool:
        have = self.level(segment, name) if segment in CONSUL_SEGMENTS else self.top.get(segment, "")
        if have in ("", DENY):
            return False
        if access == READ:
            return True  # read, list and write all read
        if access == LIST:
            return have in (LIST, WRITE)
        return have == WRITE
