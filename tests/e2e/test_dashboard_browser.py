"""The dashboard in a real browser (Debian's Chromium driven by Playwright) on the embedded stack: devcluster,
two simulated GPU nodes with their agents, ``chutes-scheduler`` (loops on) and ``chutes-gateway``.

One stack and one browser for the module; the tests run in order as one user's session would: a wrong key,
sign in, deploy from the CLI and watch the events arrive, try a streaming cord, the node page with the GPU
taken and the placement verdicts, usage growing, scale to zero from the page, sign out, and another user who
cannot see the private chute. Screenshots of every page go to the module's temporary folder.

Where podman, buildah and the local base image are present, the scheduler builds images (a docker-registry on
a loopback port, one node with the builder meta), and an image built on the stack is shown in the Images page
and on its own page with its build log, followed live; elsewhere that test checks the page says builds are off
and is skipped (failed under CHUTES_REQUIRE_CONTAINERS=1, as the other container tests).

Chromium: ``scripts/setup-browser.sh`` installs it (CI runs it); without it these tests are skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from chutes.client import Client
from chutes.identity import chute_id
from tests.support.containers import (
    BASE_IMAGE,
    CA_BUNDLE,
    containers_missing,
    ensure_containers_conf,
    local_registry,
    require_containers,
)
from tests.support.polling import poll_until
from tests.support.stack import Scheduler, Stack, _exe, free_port, scheduler_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CHROMIUM = os.environ.get("CHUTES_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM}: run scripts/setup-browser.sh", allow_module_level=True)

CHUTE = """\
import asyncio

from chutes.chute import Chute, NodeSelector

chute = Chute(
    username="alice",
    name="dash-demo",
    tagline="{tagline}",
    readme="<img src=x onerror=alert(1)> a readme, shown as text",
    image="python:3.12",
    node_selector=NodeSelector(gpu_count=1, include=["a100"]),
    concurrency=2,
    max_instances=2,
    shutdown_after_seconds=600,
)


@chute.cord(public_api_path="/hello")
async def hello(self, name: str = "world") -> dict:
    print("hello called for", name, flush=True)
    return {{"greeting": f"hello {{name}}"}}


@chute.cord(public_api_path="/count")
async def count(self, frames: int = 4, delay: float = 0.5):
    for i in range(frames):
        yield {{"i": i}}
        await asyncio.sleep(delay)
"""
CID = chute_id("alice", "dash-demo")
IMAGE_CHUTE = f"""\
from chutes.chute import Chute, NodeSelector
from chutes.image import Image

image = Image(username="alice", name="dash-image", tag="1").from_base("{BASE_IMAGE}").run_command(
    "echo built for the dashboard"
)
chute = Chute(username="alice", name="dash-image", image=image, node_selector=NodeSelector(gpu_count=1))
"""
BUILDER_NODE = "gpu-c"


def builds_possible() -> bool:
    """podman, buildah, docker-registry and the local base image: this stack can build images."""
    if containers_missing() is not None:
        return False
    return subprocess.run(["podman", "image", "exists", BASE_IMAGE], capture_output=True).returncode == 0


@dataclass
class World:
    stack: Stack
    sched: Scheduler
    gateway_url: str
    alice: str
    bob: str
    chute_file: Path
    shots: Path
    page: Any  # playwright Page
    context: Any
    builds: bool  # the scheduler builds images (a registry, a builder node)

    def ui(self, fragment: str = "") -> str:
        return f"{self.sched.url}/ui/{fragment}"

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def fits_a_phone(self, name: str) -> None:
        """On a 375 px wide screen the page is no wider than the screen (wide tables scroll in their own box)."""
        self.page.set_viewport_size({"width": 375, "height": 760})
        try:
            self.page.wait_for_timeout(200)
            width = self.page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            self.shot(name)
            assert width[0] <= width[1] + 1, width
        finally:
            self.page.set_viewport_size({"width": 1100, "height": 820})

    def passing(self) -> int:
        return len(self.stack.dc.consul().health.service(f"chute-{CID}", passing=True)[1])

    def deploy(self, tagline: str) -> subprocess.Popen[bytes]:
        """``chutes deploy`` from the CLI, in the background (it follows the deployment until ready)."""
        self.chute_file.write_text(CHUTE.format(tagline=tagline))
        argv = [
            _exe("chutes"),
            "deploy",
            f"{self.chute_file}:chute",
            "--api-url",
            self.sched.url,
            "--api-key",
            self.alice,
        ]
        log = (self.shots / "deploy.log").open("ab")
        return subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("dashboard")
    shots = tmp / "screenshots"
    shots.mkdir()
    builds = builds_possible()
    with contextlib.ExitStack() as resources:
        build_env: dict[str, str] = {}
        if builds:
            ensure_containers_conf()  # before the devcluster starts: its build tasks run buildah with it
            registry = resources.enter_context(local_registry(tmp / "registry"))
            build_env = {"CHUTES_REGISTRY": registry, "CHUTES_REGISTRY_TLS_VERIFY": "false"}
            if CA_BUNDLE.exists():  # pip in the runtime layer, behind a TLS-intercepting proxy
                build_env["CHUTES_BUILD_CA_BUNDLE"] = str(CA_BUNDLE)
        stack = resources.enter_context(scheduler_stack(tmp, nodes=("gpu-b=a100:4", "gpu-c=l40s:2")))
        yield from _world(tmp, shots, stack, build_env)


def _world(tmp: Path, shots: Path, stack: Stack, build_env: dict[str, str]) -> Iterator[World]:
    if build_env:
        nodes = httpx.get(f"{stack.dc.nomad_addr}/v1/nodes", timeout=10).json()
        node_id = next(n["ID"] for n in nodes if n["Name"] == BUILDER_NODE)
        marked = httpx.post(
            f"{stack.dc.nomad_addr}/v1/client/metadata",
            json={"NodeID": node_id, "Meta": {"chutes_builder": "true"}},
            timeout=10,
        )  # as an operator marks a build-capable node
        assert marked.status_code == 200, marked.text
    gateway_port = free_port()  # the scheduler must know the gateway's address for the cord form
    sched = stack.scheduler(
        "sched",
        CHUTES_GATEWAY_URL=f"http://127.0.0.1:{gateway_port}",
        CHUTES_METERING_INTERVAL="1",
        CHUTES_AUTOSCALE_DOWN_DELAY="600",
        **build_env,
    )
    sched.start()
    sched.wait_healthy()
    alice, bob, gateway_key = stack.users_and_gateway_key(sched.url)
    gateway_url = stack.start_gateway(
        sched.url, gateway_key, "--hold-timeout", "60", "--wake-interval", "1", "--metering-interval", "0.5",
        port=gateway_port,
    )  # fmt: skip
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1100, "height": 820}, service_workers="block",
        )  # fmt: skip
        context.set_default_timeout(20_000)
        page = context.pages[0] if context.pages else context.new_page()
        try:
            yield World(
                stack, sched, gateway_url, alice, bob, tmp / "dash_demo.py", shots, page, context, bool(build_env)
            )
        finally:
            context.close()


def expect(locator: Any) -> Any:
    return sync_api.expect(locator)


def test_a_wrong_key_is_refused_with_a_clear_message_then_alice_signs_in(world: World) -> None:
    page = world.page
    page.goto(world.ui())
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    # Keyboard only: the key field has the focus on arrival, Enter submits; the skip link is the first tab stop.
    assert page.evaluate("document.activeElement.id") == "api-key"
    assert page.evaluate("document.querySelector('a[href], button, input, select, textarea').className") == "skip"
    page.keyboard.type("hunter2")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("that is not an API key")
    page.get_by_label("API key").fill("cnk_" + "A" * 43)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("this API key is not valid: it is unknown or has been revoked")
    world.shot("signin-wrong-key")
    page.get_by_label("API key").fill(world.alice)
    page.get_by_label("API key").press("Enter")
    expect(page.get_by_role("heading", name="Chutes", exact=True)).to_be_visible()
    expect(page.locator("#who")).to_contain_text("alice")
    cookie = next(c for c in world.context.cookies() if c["name"] == "chutes_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] == -1  # session only
    assert page.evaluate("document.cookie") == ""  # the page's script cannot read it
    # The first page: everything it loaded, as transferred.
    size = page.evaluate(
        "performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
        ".reduce((s, e) => s + (e.transferSize || e.encodedBodySize || 0), 0)"
    )
    (world.shots / "first-page-bytes.txt").write_text(str(size))
    assert 0 < size < 200 * 1024, size


def test_deploy_from_the_cli_and_watch_the_events_arrive(world: World) -> None:
    page = world.page
    first = world.deploy("first version")
    assert first.wait(180) == 0, (world.shots / "deploy.log").read_text()[-3000:]
    chute_link = page.get_by_role("link", name="dash-demo")
    expect(chute_link).to_be_visible(timeout=15_000)  # the list follows the cluster by itself
    world.fits_a_phone("chutes-narrow")
    world.shot("chutes")
    chute_link.click()
    expect(page.get_by_role("heading", name="dash-demo", level=1)).to_be_visible()
    expect(page.locator(".readme")).to_contain_text("<img src=x onerror=alert(1)>")  # shown as text
    assert page.locator(".readme img").count() == 0
    events = page.locator("#events li")
    expect(events.filter(has_text="ready").first).to_be_visible()
    before = events.count()
    page.evaluate("window.__still_this_page = true")
    second = world.deploy("second version")  # a new version while the page watches
    expect(page.locator("#events li[data-type=accepted]")).to_have_count(2, timeout=30_000)
    expect(page.locator("#events li[data-type=ready]")).to_have_count(2, timeout=120_000)
    assert second.wait(60) == 0
    assert events.count() >= before + 4  # accepted, registered, placed, ..., ready: live, no reload
    assert page.evaluate("window.__still_this_page") is True
    expect(page.locator(".tagline")).to_have_text("second version", timeout=10_000)
    expect(page.locator("#h-inst + div table")).to_contain_text("passing", timeout=30_000)


def test_try_a_streaming_cord_from_the_form(world: World) -> None:
    page = world.page
    page.get_by_label("Cord", exact=True).select_option(label="count — POST /count (streams)")
    page.get_by_label("Input (JSON)").fill('{"frames": 4, "delay": 0.6}')
    page.get_by_role("button", name="Call", exact=True).click()
    output = page.locator("#try-output")
    expect(output).to_contain_text('{"i":0}', timeout=30_000)
    status_at_first_frame = page.locator("#try-status").inner_text()
    assert "done" not in status_at_first_frame  # the first frame was shown before the answer ended
    expect(page.locator("#try-status")).to_contain_text("4 frames", timeout=30_000)
    expect(page.locator("#try-status")).to_contain_text("done")
    assert [int(n) for n in re.findall(r'"i":(\d)', output.inner_text())] == [0, 1, 2, 3]
    page.locator("#h-try").evaluate("e => e.scrollIntoView()")
    world.shot("chute-try")
    world.fits_a_phone("chute-narrow")
    page.get_by_label("Cord", exact=True).select_option(label="hello — POST /hello")
    page.get_by_label("Input (JSON)").fill('{"name": "Ada"}')
    page.get_by_role("button", name="Call", exact=True).click()
    expect(output).to_contain_text('"greeting": "hello Ada"')
    expect(page.locator("#try-status")).to_contain_text("HTTP 200")
    # The instance's logs, followed: the call above printed a line.
    page.get_by_role("button", name="Show logs").click()
    expect(page.locator("#logs")).to_contain_text("hello called for Ada", timeout=30_000)
    page.get_by_role("button", name="Stop logs").click()
    page.evaluate("window.scrollTo(0, 0)")
    world.shot("chute")


def test_the_node_page_shows_the_gpu_taken_and_why_a_chute_fits_where(world: World) -> None:
    page = world.page
    page.get_by_role("link", name="Nodes").click()
    node_b = page.locator("[data-node=gpu-b]")
    expect(node_b.get_by_role("link", name="dash-demo")).to_have_count(1, timeout=15_000)  # one GPU held by it
    expect(node_b).to_contain_text("3 of 4 free")
    expect(page.locator("[data-node=gpu-c]")).to_contain_text("2 of 2 free")
    page.get_by_label("Explain placement for").select_option(label="dash-demo (alice)")
    expect(node_b.locator(".verdict")).to_contain_text("fits: 1x a100")
    expect(page.locator("[data-node=gpu-c] .verdict")).to_contain_text("wrong GPU model")
    expect(page.locator("#placement")).to_contain_text("gpu-b: 1x a100")
    world.shot("nodes")
    world.fits_a_phone("nodes-narrow")


def test_usage_grows_while_the_instance_runs(world: World) -> None:
    page = world.page
    page.get_by_role("link", name="Usage").click()
    live = page.locator("#live-total")
    expect(live).to_contain_text("so far", timeout=20_000)

    def dollars() -> float:
        return float(re.search(r"\$([0-9.]+) so far", live.inner_text()).group(1))  # type: ignore[union-attr]

    first = dollars()
    time.sleep(2.5)
    assert dollars() > first  # the running instance's cost ticks up
    expect(page.locator("#total-calls")).not_to_have_text("0", timeout=30_000)  # the form's calls were metered
    expect(page.locator('figure svg rect.bar:not([height="0"])').first).to_be_visible()
    assert page.locator("table caption", has_text="Usage per day and chute").count() == 1
    world.shot("usage")
    world.fits_a_phone("usage-narrow")


def test_scale_to_zero_from_the_page(world: World) -> None:
    page = world.page
    page.goto(world.ui(f"#/chute/{CID}"))
    expect(page.get_by_role("heading", name="dash-demo", level=1)).to_be_visible()
    page.get_by_label("Instances (0–2)").fill("0")
    page.get_by_role("button", name="Scale", exact=True).click()
    expect(page.locator("#scale-message")).to_contain_text("Scaled to 0 instances")
    expect(page.locator("#events li[data-type=scaled]").last).to_be_visible(timeout=15_000)
    poll_until(lambda: world.passing() == 0, "no instance passing", 60)
    expect(page.locator("#no-instances")).to_have_text("No running instances (scaled to zero, or not placed yet).")
    with Client(world.sched.url, world.alice) as client:
        assert client.get_chute("dash-demo")["desired_instances"] == 0


def test_an_image_built_on_the_stack_and_its_build_log(world: World) -> None:
    page = world.page
    page.get_by_role("link", name="Images").click()
    expect(page.get_by_role("heading", name="Images", exact=True)).to_be_visible()
    if not world.builds:
        expect(page.locator("#builds-state")).to_contain_text("does not build images")  # X-Chutes-Builds: off
        require_containers()  # skips here (fails in CI, where builds must run)
    expect(page.locator("#builds-state")).to_contain_text("built on the cluster")
    chute_file = world.shots.parent / "dash_image.py"
    chute_file.write_text(IMAGE_CHUTE)
    started = subprocess.run(
        [_exe("chutes"), "build", f"{chute_file}:chute", "--json", "--api-url", world.sched.url,
         "--api-key", world.alice],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip  # without --wait: the page follows the build
    assert started.returncode == 0, started.stdout + started.stderr
    image_id = json.loads(started.stdout)["image_id"]
    link = page.get_by_role("link", name="dash-image:1")
    expect(link).to_be_visible(timeout=15_000)  # the list refreshes by itself
    link.click()
    expect(page.get_by_role("heading", name="Image dash-image:1", level=1)).to_be_visible()
    assert page.url.endswith(f"#/image/{image_id}")
    log = page.locator("#build-log")
    expect(log).to_contain_text("==> fetching the build context", timeout=60_000)
    expect(log).to_contain_text("RUN echo built for the dashboard", timeout=60_000)
    expect(page.locator("#image-status")).to_have_text("ready", timeout=240_000)  # follows the build by itself
    ref = page.locator("#image-ref")
    expect(ref).to_contain_text("/alice/dash-image:1@sha256:")
    expect(log).to_contain_text("==> pushing")
    expect(log).to_contain_text("chutes runtime")
    expect(page.locator("#build-log-status")).to_contain_text("The build log ended: ready.", timeout=30_000)
    with Client(world.sched.url, world.alice) as client:
        assert page.locator("#image-ref").inner_text() == client.get_image(image_id)["ref"]
    world.shot("image")
    world.fits_a_phone("image-narrow")
    page.get_by_role("link", name="Images").click()
    row = page.locator("tr", has=page.get_by_role("link", name="dash-image:1"))
    expect(row).to_contain_text("ready")
    expect(row).to_contain_text("@sha256:")
    world.shot("images")


def test_sign_out_then_another_user_cannot_see_the_private_chute(world: World) -> None:
    page = world.page
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_text("You are signed out.")).to_be_visible()
    assert not [c for c in world.context.cookies() if c["name"] == "chutes_session"]
    assert page.evaluate("fetch('/v1/me').then(r => r.status)") == 401
    page.get_by_label("API key").fill(world.bob)
    page.get_by_label("API key").press("Enter")
    expect(page.locator("#who")).to_contain_text("bob")
    expect(page.get_by_text("No chutes yet.")).to_be_visible()
    page.goto(world.ui(f"#/chute/{CID}"))
    expect(page.get_by_role("alert")).to_contain_text(f"chute '{CID}' not found")
    assert page.get_by_text("dash-demo").count() == 0
    world.shot("other-user")
    page.get_by_role("link", name="Nodes").click()
    expect(page.locator("[data-node=gpu-b]")).to_be_visible()
    assert page.get_by_role("option", name="dash-demo (alice)").count() == 0
    page.get_by_role("link", name="Images").click()
    expect(page.get_by_text("No images built yet.")).to_be_visible()  # alice's image is hers
    if os.environ.get("CHUTES_DOCS_SCREENSHOTS"):  # refresh the README's pictures: copy two of this run's
        for shot, name in (("chute-try", "chute"), ("nodes", "nodes")):
            shutil.copy(
                world.shots / f"{shot}.png", Path(os.environ["CHUTES_DOCS_SCREENSHOTS"]) / f"dashboard-{name}.png"
            )
