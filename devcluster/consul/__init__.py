"""The Consul half of the devcluster: agent services and checks, catalog, health, KV, sessions."""
