import asyncio
import uuid
from typing import Any

import pytest
from fastapi import FastAPI

import chutes
from chutes.chute import Chute, ChuteError, CompatibilityWarning, DuplicatePath, ManifestError, NodeSelector
from chutes.identity import InvalidNameError
from chutes.image import Image, ImageError
from chutes.manifest import Manifest

from .conftest import new_chute


def test_chute_is_a_fastapi_app_with_defaults() -> None:
    chute = new_chute()
    assert isinstance(chute, FastAPI)
    assert (chute.tagline, chute.readme, chute.revision, chute.standard_template) == ("", "", None, None)
    assert chute.node_selector == NodeSelector()
    assert (chute.concurrency, chute.max_instances, chute.scaling_threshold, chute.shutdown_after_seconds) == (
        1,
        1,
        0.75,
        300,
    )
    assert chute.allow_external_egress is False and chute.passthrough_headers == {}
    assert chute.cords == [] and chute.jobs == []
    assert chute.title == "unit" and chute.docs_url is None and chute.redoc_url is None


def test_fastapi_keyword_arguments_reach_fastapi() -> None:
    chute = new_chute(version="2.0", title="Custom", docs_url="/docs")
    assert (chute.version, chute.title, chute.docs_url) == ("2.0", "Custom", "/docs")


def test_uid_follows_the_chutes_formula() -> None:
    chute = new_chute(username="myuser", name="my-ai-app")
    assert chute.uid == str(uuid.uuid5(uuid.NAMESPACE_OID, "myuser::chute::my-ai-app"))


@pytest.mark.parametrize(
    "attribute",
    ["name", "uid", "username", "tagline", "readme", "node_selector", "image", "cords", "jobs", "standard_template"],
)
def test_read_only_properties(attribute: str) -> None:
    chute = new_chute()
    with pytest.raises(AttributeError):
        setattr(chute, attribute, "x")


def test_cords_and_jobs_are_copies() -> None:
    chute = new_chute()

    @chute.cord()
    def ping(self: Chute) -> str:
        return "pong"

    chute.cords.clear()
    assert chute.cords == [ping]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"username": "MyUser"}, InvalidNameError, "invalid username 'MyUser': use 1-63 characters of lower-case"),
        ({"username": ""}, InvalidNameError, "invalid username"),
        ({"name": "my app"}, InvalidNameError, "invalid chute name 'my app': use 1-128 characters"),
        ({"name": "a/../b"}, InvalidNameError, "none of them '.' or '..'"),
        ({"name": "x" * 129}, InvalidNameError, "1-128 characters"),
        ({"image": "Not An Image"}, ImageError, "invalid image reference"),
        ({"image": 42}, ChuteError, "image must be an image reference"),
        ({"concurrency": 0}, ChuteError, "concurrency must be an integer from 1 to 1024, got 0"),
        ({"concurrency": 2.5}, ChuteError, "concurrency must be an integer"),
        ({"max_instances": 101}, ChuteError, "max_instances must be an integer from 1 to 100"),
        ({"scaling_threshold": 1.5}, ChuteError, "scaling_threshold must be a number from 0 to 1"),
        ({"shutdown_after_seconds": 59}, ChuteError, "shutdown_after_seconds must be an integer from 60 to 604800"),
        ({"tagline": "t" * 1025}, ChuteError, "tagline must be a string of at most 1024 characters"),
        ({"node_selector": {"gpu_count": 9}}, ChuteError, "invalid node_selector: gpu_count"),
        ({"node_selector": "a100"}, ChuteError, "node_selector must be a NodeSelector"),
    ],
)
def test_invalid_constructor_arguments_fail_with_the_rule(kwargs: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error) as exc:
        new_chute(**kwargs)
    assert message in str(exc.value)


def test_node_selector_may_be_a_dict() -> None:
    chute = new_chute(node_selector={"gpu_count": 2, "min_vram_gb_per_gpu": 80, "include": ["a100", "h100"]})
    assert chute.node_selector.eligible_gpus == ["a100", "h100"]


def test_hooks_run_in_priority_then_declaration_order() -> None:
    chute = new_chute()
    calls: list[str] = []

    @chute.on_startup()
    async def load(self: Chute) -> None:
        calls.append("load")

    @chute.on_startup(priority=10)
    def early(self: Chute) -> None:
        calls.append("early")

    @chute.on_startup()
    def after_load(self: Chute) -> None:
        calls.append("after_load")

    @chute.on_shutdown(priority=90)
    def last(self: Chute) -> None:
        pass

    @chute.on_shutdown(priority=1)
    def first(self: Chute) -> None:
        pass

    assert chute.startup_hooks == [early, load, after_load]
    assert chute.shutdown_hooks == [first, last]
    assert load.__name__ == "load"  # the decorator hands the function back unchanged
    for hook in chute.startup_hooks:
        result = hook(chute)
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    assert calls == ["early", "load", "after_load"]
    with pytest.raises(ChuteError, match="on_startup priority"):
        chute.on_startup(priority="high")  # type: ignore[arg-type]


def test_manifest_for_a_prebuilt_image() -> None:
    chute = new_chute(
        tagline="t",
        readme="# r",
        revision="v1.2.0",
        concurrency=8,
        max_instances=3,
        scaling_threshold=0.5,
        shutdown_after_seconds=600,
        allow_external_egress=True,
    )

    @chute.cord(public_api_path="/predict")
    async def predict(self: Chute, text: str) -> dict[str, Any]:
        return {}

    manifest = chute.manifest()
    assert isinstance(manifest, Manifest)
    assert manifest.chute_id == chute.uid
    assert manifest.sdk_version == chutes.__version__
    assert manifest.image.model_dump() == {"ref": "python:3.12-slim", "dockerfile": None}
    assert (manifest.tagline, manifest.readme, manifest.revision) == ("t", "# r", "v1.2.0")
    assert (manifest.concurrency, manifest.max_instances, manifest.scaling_threshold) == (8, 3, 0.5)
    assert manifest.shutdown_after_seconds == 600 and manifest.allow_external_egress is True
    assert [c.name for c in manifest.cords] == ["predict"]
    assert Manifest.model_validate_json(manifest.model_dump_json()) == manifest


def test_manifest_for_a_built_image_carries_its_dockerfile() -> None:
    image = Image(username="tester", name="unit-image", tag="1.0").from_base("python:3.12-slim").run_command("true")
    chute = new_chute(image=image)

    @chute.cord()
    def ping(self: Chute) -> str:
        return "pong"

    spec = chute.manifest().image
    assert spec.ref == "tester/unit-image:1.0"
    assert spec.dockerfile == "FROM python:3.12-slim\nRUN true"


def test_a_chute_without_cords_or_jobs_has_no_manifest() -> None:
    with pytest.raises(ManifestError, match="a chute needs at least one cord or one job") as exc:
        new_chute().manifest()
    assert exc.value.hint and "@chute.cord" in exc.value.hint


def test_manifest_revalidates_attributes_changed_after_construction() -> None:
    chute = new_chute()

    @chute.cord()
    def ping(self: Chute) -> str:
        return "pong"

    chute.concurrency = 0
    with pytest.raises(ManifestError, match="concurrency"):
        chute.manifest()


def test_lock_modules_takes_a_bool_as_in_chutes_or_module_names() -> None:
    assert new_chute(lock_modules=True).lock_modules is True
    assert new_chute(lock_modules=False).lock_modules is False
    assert new_chute(lock_modules=("os", "sys")).lock_modules == ["os", "sys"]
    assert new_chute().lock_modules is None
    with pytest.raises(ChuteError, match="lock_modules must be"):
        new_chute(lock_modules="os")


def test_same_public_path_written_the_same_way_is_still_refused() -> None:
    chute = new_chute()

    @chute.cord(public_api_path="/x")
    async def first(self: Any) -> None: ...

    with pytest.raises(DuplicatePath, match="already uses"):

        @chute.cord(public_api_path="/x")
        async def second(self: Any) -> None: ...

    with pytest.warns(CompatibilityWarning, match="trailing '/'"):

        @chute.cord(public_api_path="/x/")
        async def third(self: Any) -> None: ...

    assert [(c.name, c.public_api_path) for c in chute.cords] == [("first", "/x"), ("third", "/third")]


def test_initialize_runs_sync_and_async_startup_hooks_in_order_until_they_succeed() -> None:
    chute = new_chute()
    ran: list[str] = []
    failures = [RuntimeError("weights missing")]

    @chute.on_startup(priority=10)
    def first(self: Any) -> None:
        ran.append("sync")

    @chute.on_startup(priority=20)
    async def second(self: Any) -> None:
        if failures:
            raise failures.pop()
        ran.append("async")

    with pytest.raises(RuntimeError, match="weights missing"):
        asyncio.run(chute.initialize())
    asyncio.run(chute.initialize())
    asyncio.run(chute.initialize())
    assert ran == ["sync", "sync", "async"]
