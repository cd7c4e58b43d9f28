"""State shared by the Nomad and Consul halves: the raft-like index and the on-disk snapshots."""
