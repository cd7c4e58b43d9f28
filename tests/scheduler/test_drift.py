"""Job drift: the digest of a rendered job ignores what changes on purpose (count, affinities, the scheduler's
address) and changes with everything else; stamped jobs stay valid Nomad jobs."""

from __future__ import annotations

import dataclasses

from chutes import __version__
from chutes.scheduler import drift
from chutes.scheduler.render import render_chute_job
from tests.scheduler.test_render import RELEASE, SETTINGS, manifest
from tests.support.nomad_openapi import assert_valid


def test_the_digest_ignores_count_affinities_and_the_address_but_not_the_rest() -> None:
    base = drift.stamp(render_chute_job(manifest(), RELEASE, SETTINGS))
    assert_valid("Job", base)
    digest = base["Meta"][drift.SPEC_META]
    assert base["Meta"][drift.RUNTIME_META] == __version__
    assert drift.registered_url(base) == SETTINGS.scheduler_url

    scaled = drift.stamp(render_chute_job(manifest(), dataclasses.replace(RELEASE, count=7), SETTINGS))
    placed = drift.stamp(render_chute_job(manifest(), dataclasses.replace(RELEASE, preferred_model="a100"), SETTINGS))
    moved = drift.stamp(
        render_chute_job(manifest(), RELEASE, dataclasses.replace(SETTINGS, scheduler_url="http://10.0.0.9:8700"))
    )
    assert scaled["Meta"][drift.SPEC_META] == digest
    assert placed["Meta"][drift.SPEC_META] == digest
    assert moved["Meta"][drift.SPEC_META] == digest  # the address is checked by asking it, not by the digest
    assert drift.registered_url(moved) == "http://10.0.0.9:8700"

    other_checks = drift.stamp(render_chute_job(manifest(), RELEASE, dataclasses.replace(SETTINGS, check_interval_s=9)))
    other_runtime = drift.stamp(
        render_chute_job(manifest(), RELEASE, dataclasses.replace(SETTINGS, runtime_command=("python3.12", "-m", "x")))
    )
    assert other_checks["Meta"][drift.SPEC_META] != digest
    assert other_runtime["Meta"][drift.SPEC_META] != digest
    assert drift.drifted({"Meta": {drift.SPEC_META: digest}}, digest) is False
    assert drift.drifted({"Meta": {}}, digest) is True  # registered before digests existed


def test_the_digest_covers_the_secrets_template_by_name_only() -> None:
    """Credentials live in the job's Nomad Variable: the digest hashes the template (which names them), so a
    new secret name is a new rendering, while rendering again gives the same digest and no value is hashed."""
    base = drift.stamp(render_chute_job(manifest(), RELEASE, SETTINGS))
    again = drift.stamp(render_chute_job(manifest(), dataclasses.replace(RELEASE), SETTINGS))
    assert again["Meta"][drift.SPEC_META] == base["Meta"][drift.SPEC_META]
    [task] = base["TaskGroups"][0]["Tasks"]
    assert [t["DestPath"] for t in task["Templates"]] == ["secrets/chutes.env"]
    assert not {"CHUTES_INSTANCE_TOKEN", "CHUTES_INVOKE_SECRET", *RELEASE.secret_names} & set(task["Env"])

    renamed = dataclasses.replace(RELEASE, secret_names=(*RELEASE.secret_names, "WANDB_KEY"))
    added = drift.stamp(render_chute_job(manifest(), renamed, SETTINGS))
    assert added["Meta"][drift.SPEC_META] != base["Meta"][drift.SPEC_META]
    fewer = drift.stamp(render_chute_job(manifest(), dataclasses.replace(RELEASE, secret_names=()), SETTINGS))
    assert fewer["Meta"][drift.SPEC_META] != base["Meta"][drift.SPEC_META]
