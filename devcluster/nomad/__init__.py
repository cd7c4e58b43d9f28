"""The Nomad half of the devcluster: jobs, evaluations, placement, allocations, nodes, raw_exec execution."""
