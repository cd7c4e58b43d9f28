"""ACLs for the devcluster's Nomad and Consul APIs: tokens, policies, and their enforcement on every request.

``rules`` parses policy rules (HCL or JSON, as both products accept them), ``policy`` decides what a set of
policies allows, ``state`` keeps tokens and policies (persisted with the rest of the state), ``needs`` maps
each endpoint to the permission it needs, and ``http`` serves the ``/v1/acl/*`` endpoints and the
middleware that enforces them. See docs/devcluster.md ("ACLs").
"""
