"""Which Consul registrations are instances Nomad runs (pure; chutes.core.registrations)."""

from __future__ import annotations

from chutes.core.registrations import AllocView, alloc_id_of, verify

A1 = "11111111-2222-3333-4444-555555555555"
A2 = "66666666-7777-8888-9999-000000000000"
JOB = "chute-c1"


def _alloc(alloc_id: str, job: str = JOB, client: str = "running", port: int = 25000, ip: str = "10.0.0.5") -> dict:
    return {
        "ID": alloc_id, "JobID": job, "DesiredStatus": "run", "ClientStatus": client,
        "AllocatedResources": {"Shared": {"Ports": [{"Label": "http", "Value": port, "HostIP": ip}]}},
    }  # fmt: skip


def test_alloc_id_of_nomad_service_ids_only() -> None:
    assert alloc_id_of(f"_nomad-task-{A1}-runtime-chute-c1-http") == A1
    assert alloc_id_of("chute-c1-handmade") is None
    assert alloc_id_of("_nomad-task-notauuid-runtime") is None


def test_only_running_allocations_of_the_job_at_their_own_address_are_kept() -> None:
    allocs = {A1: AllocView.of(_alloc(A1)), A2: AllocView.of(_alloc(A2, job="chute-other"))}
    real = (f"_nomad-task-{A1}-runtime-chute-c1-http", "10.0.0.5", 25000)
    found = [
        real,
        ("rogue", "10.0.0.5", 25000),  # not Nomad's id
        (f"_nomad-task-{A1}-runtime-chute-c1-copy", "10.0.0.9", 25000),  # the real allocation, another host
        (f"_nomad-task-{A1}-runtime-chute-c1-port", "10.0.0.5", 31337),  # ... another port
        (f"_nomad-task-{A2}-runtime-chute-c1-http", "10.0.0.5", 25000),  # another job's allocation
    ]
    kept, unknown = verify(JOB, found, allocs)
    assert kept == [real] and unknown == []


def test_unknown_or_starting_allocations_wait_and_stopped_ones_are_dropped() -> None:
    new = (f"_nomad-task-{A2}-runtime-chute-c1-http", "10.0.0.5", 25000)
    kept, unknown = verify(JOB, [new], {})
    assert kept == [] and unknown == [new]
    starting = {A2: AllocView.of(_alloc(A2, client="pending"))}
    assert verify(JOB, [new], starting) == ([], [new])
    stopped = {A2: AllocView.of(_alloc(A2, client="complete"))}
    assert verify(JOB, [new], stopped) == ([], [])
