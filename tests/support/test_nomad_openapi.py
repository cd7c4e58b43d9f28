from tests.support import nomad_openapi


def test_strict_validation_rejects_unknown_fields_and_accepts_a_minimal_job() -> None:
    nomad_openapi.require_spec()
    job = {
        "ID": "example",
        "Name": "example",
        "Type": "service",
        "Datacenters": ["dc1"],
        "TaskGroups": [
            {
                "Name": "instance",
                "Count": 1,
                "Tasks": [{"Name": "runtime", "Driver": "raw_exec", "Config": {"command": "/bin/true"}}],
            }
        ],
    }
    nomad_openapi.assert_valid("Job", job)
    job["TaskGroups"][0]["Tasks"][0]["Drvier"] = "docker"
    problems = nomad_openapi.errors("Job", job)
    assert any("Drvier" in p for p in problems), problems
    assert nomad_openapi.errors("JobRegisterRequest", {"Job": {"ID": 5}})
