"""``chutes dev``: the whole platform on one machine, as child processes of one supervisor.

``DevStack`` starts the devcluster (Nomad and Consul APIs), one agent per node, the scheduler and the gateway,
waits until each is healthy, and stops them all (no orphans) when asked or when one of them dies.
"""

from chutes.dev.nodes import DEFAULT_NODES, NodeSpec, parse_node
from chutes.dev.stack import DevStack, DevStackError, StackInfo

__all__ = ["DEFAULT_NODES", "DevStack", "DevStackError", "NodeSpec", "StackInfo", "parse_node"]
