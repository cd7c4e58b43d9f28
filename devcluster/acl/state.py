"""Tokens and policies of one ACL system (the devcluster has two: Nomad's and Consul's), and who a secret is.

A token is ``management`` (everything) or ``client`` (its policies' rules). The system is bootstrapped once
(``POST /v1/acl/bootstrap``), or from the start with a management secret the operator chose
(``--nomad-token``/``--consul-token``, or their ``-file`` forms). Everything here is persisted with the rest of
the devcluster's state, so tokens keep working across restarts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar

from chutes.devcluster.acl.policy import ConsulRules, NomadRules
from chutes.devcluster.acl.rules import RulesError

R = TypeVar("R", NomadRules, ConsulRules)
MANAGEMENT, CLIENT = "management", "client"


class ACLError(Exception):
    """A refused ACL request: HTTP ``status`` and the product's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Policy:
    id: str
    name: str
    description: str
    rules: str
    create_index: int
    modify_index: int


@dataclass
class Token:
    accessor_id: str
    secret_id: str
    name: str
    type: str
    policies: list[str]  # policy ids
    create_time: float
    expiration_time: float | None
    create_index: int
    modify_index: int
    local: bool = False

    def expired(self, now: float) -> bool:
        return self.expiration_time is not None and now >= self.expiration_time


@dataclass
class Identity:
    """Who made a request: a token (or the anonymous one) and what it may do."""

    token: Token | None
    management: bool
    rules: Any  # NomadRules | ConsulRules

    @property
    def anonymous(self) -> bool:
        return self.token is None


@dataclass
class ACLState(Generic[R]):
    """One ACL system: enabled or not, bootstrapped or not, its tokens and policies."""

    parse_rules: Callable[[str], R]
    merge_rules: Callable[[list[R]], R]
    enabled: bool = False
    bootstrap_index: int = 0  # 0: not bootstrapped
    index: int = 1
    policies: dict[str, Policy] = field(default_factory=dict)  # by id
    tokens: dict[str, Token] = field(default_factory=dict)  # by accessor id
    _by_secret: dict[str, Token] = field(default_factory=dict)
    _compiled: dict[str, R] = field(default_factory=dict)
    on_change: list[Callable[[], None]] = field(default_factory=list)

    @classmethod
    def nomad(cls) -> ACLState[NomadRules]:
        return ACLState(NomadRules.parse, NomadRules.merged)

    @classmethod
    def consul(cls) -> ACLState[ConsulRules]:
        return ACLState(ConsulRules.parse, ConsulRules.merged)

    # -- changes

    def _changed(self) -> int:
        self.index += 1
        for callback in self.on_change:
            callback()
        return self.index

    def bootstrap(self, secret: str | None = None, name: str = "Bootstrap Token", any_secret: bool = False) -> Token:
        """The first management token; ACLError(400) once done."""
        if self.bootstrap_index:
            raise ACLError(400, f"ACL bootstrap already done (reset index: {self.bootstrap_index})")
        token = self.create_token(name, MANAGEMENT, [], secret=secret, any_secret=any_secret)
        self.bootstrap_index = token.create_index
        return token

    def ensure_management(self, secret: str, name: str) -> Token:
        """A management token with ``secret`` (the operator's, given on the command line), created once."""
        existing = self._by_secret.get(secret)
        if existing is not None:
            return existing
        # The devcluster takes any string here (Nomad and Consul want UUIDs): tests use short ones.
        if not self.bootstrap_index:
            return self.bootstrap(secret, name, any_secret=True)
        return self.create_token(name, MANAGEMENT, [], secret=secret, any_secret=True)

    def put_policy(self, name: str, rules: str, description: str = "", policy_id: str | None = None) -> Policy:
        if not name or len(name) > 128 or not all(c.isalnum() or c in "-_" for c in name):
            raise ACLError(400, f"Invalid Name: {name!r} (letters, digits, '-' and '_', at most 128)")
        try:
            compiled = self.parse_rules(rules)
        except RulesError as exc:
            raise ACLError(400, f"Failed to parse ACL rules: {exc}") from None
        clash = self.policy_by_name(name)
        if policy_id is None:
            policy_id = clash.id if clash is not None else str(uuid.uuid4())
        elif clash is not None and clash.id != policy_id:
            raise ACLError(400, f"Invalid Policy: A Policy with Name {name!r} already exists")
        old = self.policies.get(policy_id)
        index = self._changed()
        policy = Policy(policy_id, name, description, rules, old.create_index if old else index, index)
        self.policies[policy_id] = policy
        self._compiled[policy_id] = compiled
        return policy

    def delete_policy(self, policy_id: str) -> bool:
        if self.policies.pop(policy_id, None) is None:
            return False
        self._compiled.pop(policy_id, None)
        for token in self.tokens.values():
            if policy_id in token.policies:
                token.policies.remove(policy_id)
        self._changed()
        return True

    def create_token(
        self,
        name: str,
        type_: str,
        policy_ids: list[str],
        *,
        secret: str | None = None,
        accessor: str | None = None,
        ttl_s: float | None = None,
        local: bool = False,
        any_secret: bool = False,
    ) -> Token:
        if type_ not in (MANAGEMENT, CLIENT):
            raise ACLError(400, f"Token type must be client or management, not {type_!r}")
        if type_ == CLIENT and not policy_ids:
            raise ACLError(400, "client token missing policies")
        missing = [p for p in policy_ids if p not in self.policies]
        if missing:
            raise ACLError(400, f"policy not found: {missing[0]}")
        for value, what in ((None if any_secret else secret, "SecretID"), (accessor, "AccessorID")):
            if value is not None:
                try:
                    uuid.UUID(value)
                except ValueError:
                    raise ACLError(400, f"invalid {what}: must be a UUID") from None
        if secret is not None and secret in self._by_secret:
            raise ACLError(400, "Invalid Token: SecretID is already in use")
        if accessor is not None and accessor in self.tokens:
            raise ACLError(400, "Invalid Token: AccessorID is already in use")
        now = time.time()
        index = self._changed()
        token = Token(
            accessor_id=accessor or str(uuid.uuid4()),
            secret_id=secret or str(uuid.uuid4()),
            name=name,
            type=type_,
            policies=list(dict.fromkeys(policy_ids)),
            create_time=now,
            expiration_time=now + ttl_s if ttl_s else None,
            create_index=index,
            modify_index=index,
            local=local,
        )
        self.tokens[token.accessor_id] = token
        self._by_secret[token.secret_id] = token
        return token

    def update_token(self, accessor: str, name: str, policy_ids: list[str]) -> Token:
        token = self.tokens.get(accessor)
        if token is None:
            raise ACLError(404, "ACL token not found")
        missing = [p for p in policy_ids if p not in self.policies]
        if missing:
            raise ACLError(400, f"policy not found: {missing[0]}")
        token.name = name
        token.policies = list(dict.fromkeys(policy_ids))
        token.modify_index = self._changed()
        return token

    def delete_token(self, accessor: str) -> bool:
        token = self.tokens.pop(accessor, None)
        if token is None:
            return False
        self._by_secret.pop(token.secret_id, None)
        self._changed()
        return True

    # -- lookups

    def policy_by_name(self, name: str) -> Policy | None:
        return next((p for p in self.policies.values() if p.name == name), None)

    def token_by_secret(self, secret: str) -> Token | None:
        return self._by_secret.get(secret)

    def resolve(self, secret: str | None) -> Identity:
        """The identity behind ``secret`` (None: anonymous); ACLError(403) for an unknown or expired one."""
        if secret is None:
            return Identity(None, False, self.merge_rules([]))
        token = self._by_secret.get(secret)
        if token is None:
            raise ACLError(403, "ACL token not found")
        if token.expired(time.time()):
            raise ACLError(403, "ACL token expired")
        if token.type == MANAGEMENT:
            return Identity(token, True, self.merge_rules([]))
        rules = [self._compiled[p] for p in token.policies if p in self._compiled]
        return Identity(token, False, self.merge_rules(rules))

    # -- persistence

    def snapshot(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "bootstrap_index": self.bootstrap_index,
            "index": self.index,
            "policies": [asdict(p) for p in self.policies.values()],
            "tokens": [asdict(t) for t in self.tokens.values()],
        }

    def restore(self, data: dict[str, Any]) -> None:
        self.bootstrap_index = int(data.get("bootstrap_index", 0))
        self.index = max(self.index, int(data.get("index", 1)))
        for raw in data.get("policies", []):
            policy = Policy(**raw)
            try:
                self._compiled[policy.id] = self.parse_rules(policy.rules)
            except RulesError:
                continue  # cannot happen for rules this code accepted; never fail a restart over it
            self.policies[policy.id] = policy
        for raw in data.get("tokens", []):
            token = Token(**raw)
            self.tokens[token.accessor_id] = token
            self._by_secret[token.secret_id] = token
