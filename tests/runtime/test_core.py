"""Pure parts of the runtime: signatures with replay, the limiter, the lifecycle, settings, routes, SSE frames."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

from chutes.core.signing import SignatureError, Signer, sign, verify
from chutes.runtime import sse
from chutes.runtime.config import ClusterEnv, ConfigError, resolve_serve
from chutes.runtime.lifecycle import Lifecycle, Phase
from chutes.runtime.limiter import ConcurrencyLimiter
from chutes.runtime.routes import CordPair, CordRoute, build_routes
from chutes.runtime.signatures import ReplayCache, RequestVerifier

SECRET = "s3cret"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("secret", ["s", "benchmark-invoke-secret", "k" * 64, "long" * 40, "é-ünï"])
def test_precomputed_signer_signs_as_sign_does(secret: str) -> None:
    body = b'{"n": 1}'
    assert Signer(secret).sign("POST", "/x", body, 1700000000, "ab" * 12) == sign(
        secret, "POST", "/x", body, 1700000000, "ab" * 12
    )
    header = Signer(secret).sign("POST", "/x?q=1", body)
    assert verify(secret, header, "POST", "/x?q=1", body).nonce is not None
    with pytest.raises(SignatureError):
        verify(secret + "x", header, "POST", "/x?q=1", body)


def test_valid_signature_passes_and_replay_is_refused_after_commit() -> None:
    clock = Clock(1_000_000.0)
    verifier = RequestVerifier(SECRET, clock=clock)
    header = sign(SECRET, "POST", "/echo", b"{}", timestamp=1_000_000)
    parsed = verifier.check(header, "POST", "/echo", b"{}")
    # Not committed yet (e.g. answered 429): the same signed request may come back.
    verifier.check(header, "POST", "/echo", b"{}")
    verifier.commit(parsed)
    with pytest.raises(SignatureError) as err:
        verifier.check(header, "POST", "/echo", b"{}")
    assert err.value.status == 403 and "replayed" in str(err.value)


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 401),
        ("", 401),
        ("t=1000000,v1=zz", 403),
        (sign("other-secret", "POST", "/echo", b"{}", timestamp=1_000_000), 403),
        (sign(SECRET, "POST", "/other", b"{}", timestamp=1_000_000), 403),
        (sign(SECRET, "POST", "/echo", b"{}", timestamp=1_000_000 - 61), 403),
        (sign(SECRET, "POST", "/echo", b"{}", timestamp=1_000_000 + 61), 403),
    ],
)
def test_refused_signatures(header: str | None, status: int) -> None:
    verifier = RequestVerifier(SECRET, clock=Clock(1_000_000.0))
    with pytest.raises(SignatureError) as err:
        verifier.check(header, "POST", "/echo", b"{}")
    assert err.value.status == status


def test_replay_cache_forgets_signatures_once_they_would_be_stale_anyway() -> None:
    clock = Clock(1_000_000.0)
    verifier = RequestVerifier(SECRET, clock=clock)
    header = sign(SECRET, "POST", "/echo", b"", timestamp=1_000_000)
    verifier.commit(verifier.check(header, "POST", "/echo", b""))
    clock.now += 61
    assert verifier.replay.seen("x", clock.now) is False
    assert len(verifier.replay) == 1  # still inside the window (+1 s slack)
    clock.now += 1.5
    verifier.replay.seen("x", clock.now)
    assert len(verifier.replay) == 0
    with pytest.raises(SignatureError, match="stale"):
        verifier.check(header, "POST", "/echo", b"")


def test_replay_cache_purges_in_expiry_order() -> None:
    cache = ReplayCache()
    cache.add("late", 200.0)
    cache.add("early", 100.0)
    assert cache.seen("early", 150.0) is False
    assert cache.seen("late", 150.0) is True


async def test_limiter_counts_and_waits_for_idle() -> None:
    limiter = ConcurrencyLimiter(2)
    assert limiter.try_acquire() and limiter.try_acquire()
    assert not limiter.try_acquire()
    assert (limiter.in_flight, limiter.available) == (2, 0)
    assert await limiter.wait_idle(0.05) is False
    loop = asyncio.get_running_loop()
    loop.call_later(0.02, limiter.release)
    loop.call_later(0.04, limiter.release)
    assert await limiter.wait_idle(2) is True
    assert limiter.in_flight == 0
    with pytest.raises(RuntimeError):
        limiter.release()
    with pytest.raises(ValueError):
        ConcurrencyLimiter(0)


def test_lifecycle_moves_one_way() -> None:
    life = Lifecycle()
    assert not life.accepting
    assert life.mark_ready() and life.accepting
    assert life.begin_drain() and not life.accepting
    assert not life.begin_drain()  # a second signal starts no second drain
    assert not life.mark_ready()  # a draining instance never becomes ready again
    assert life.mark_stopped() and life.phase is Phase.STOPPED
    failed = Lifecycle()
    assert failed.mark_failed() and not failed.mark_ready() and not failed.accepting


def test_settings_precedence_and_refusal_without_secret() -> None:
    env = {"NOMAD_PORT_http": "24000", "NOMAD_IP_http": "10.0.0.5", "CHUTES_INVOKE_SECRET": "abc"}
    config = resolve_serve(env)
    assert (config.host, config.port, config.invoke_secret, config.dev) == ("10.0.0.5", 24000, "abc", False)
    assert resolve_serve({**env, "CHUTES_HOST": "0.0.0.0"}).host == "0.0.0.0"
    config = resolve_serve(env, host="127.0.0.1", port=9000, invoke_secret="flag")
    assert (config.host, config.port, config.invoke_secret) == ("127.0.0.1", 9000, "flag")
    assert resolve_serve({}, dev=True).host == "127.0.0.1"
    assert resolve_serve({"CHUTES_CORD_TIMEOUT": "2.5"}, dev=True).cord_timeout == 2.5
    with pytest.raises(ConfigError, match="no invoke secret") as err:
        resolve_serve({"NOMAD_PORT_http": "1"})
    assert err.value.hint and "--dev" in err.value.hint
    with pytest.raises(ConfigError, match="NOMAD_PORT_http"):
        resolve_serve({"NOMAD_PORT_http": "http"}, dev=True)
    with pytest.raises(ConfigError, match="cord timeout"):
        resolve_serve({"CHUTES_CORD_TIMEOUT": "-1"}, dev=True)


def test_cluster_env_names_what_is_missing() -> None:
    env = ClusterEnv.from_environ({"CHUTES_SCHEDULER_URL": "http://s:1/", "CHUTES_BUNDLE_SHA256": " AB "})
    assert env.scheduler_url == "http://s:1" and env.bundle_sha256 == "ab"
    with pytest.raises(ConfigError, match="CHUTES_INSTANCE_TOKEN"):
        env.require_bundle_source()


@dataclasses.dataclass
class FakeCord:
    """The contract's attributes, nothing else (the runtime must not need more)."""

    name: str
    func: Callable[..., Any]
    path: str = ""
    public_api_path: str = ""
    public_api_method: str = "POST"
    method: str = "POST"
    stream: bool = False
    passthrough: bool = False
    passthrough_port: int | None = None
    passthrough_path: str | None = None
    output_content_type: str | None = None
    input_model: type[BaseModel] | None = None
    takes_model: bool = False

    def __post_init__(self) -> None:
        self.path = self.path or f"/{self.name}"
        self.public_api_path = self.public_api_path or self.path


async def _unary(self: Any) -> None:
    return None


async def _gen(self: Any) -> Any:
    yield 1


def test_routes_serve_each_cord_at_its_public_address_and_at_post_path() -> None:
    routes = build_routes(
        [FakeCord("a", _unary, public_api_path="/v1/a", public_api_method="GET"), FakeCord("b", _gen)], 30.0
    )
    get_a = routes["/v1/a"]["GET"]
    post_a = routes["/a"]["POST"]
    assert isinstance(get_a, CordRoute) and get_a.query_input and not get_a.stream
    assert isinstance(post_a, CordRoute) and not post_a.query_input
    b = routes["/b"]["POST"]
    assert isinstance(b, CordRoute) and b.stream  # generators always stream
    assert set(routes) == {"/v1/a", "/a", "/b"}


def test_a_stream_pair_shares_an_address_and_the_body_picks() -> None:
    routes = build_routes(
        [
            FakeCord("chat", _unary, public_api_path="/v1/chat"),
            FakeCord("chat_stream", _gen, public_api_path="/v1/chat", stream=True),
        ],
        30.0,
    )
    pair = routes["/v1/chat"]["POST"]
    assert isinstance(pair, CordPair)
    assert pair.pick(b'{"stream": true}', b"").name == "chat_stream"
    assert pair.pick(b'{"stream": false}', b"").name == "chat"
    assert pair.pick(b"{}", b"").name == "chat"
    assert pair.pick(b"not json", b"").name == "chat"


def test_conflicting_routes_are_refused() -> None:
    with pytest.raises(ConfigError, match="both claim POST /x"):
        build_routes([FakeCord("a", _unary, path="/x"), FakeCord("b", _unary, public_api_path="/x")], 30.0)
    with pytest.raises(ConfigError, match="serves itself"):
        build_routes([FakeCord("a", _unary, public_api_path="/_ready")], 30.0)
    with pytest.raises(ConfigError, match="passthrough_port"):
        build_routes([FakeCord("a", _unary, passthrough=True)], 30.0)


def test_sse_frames() -> None:
    assert sse.frame({"a": 1}) == b'data: {"a":1}\n\n'
    assert sse.frame("two\nlines") == b'data: "two\\nlines"\n\n'
    assert sse.frame(b"data: [DONE]\n\n") == b"data: [DONE]\n\n"  # bytes: framed by the cord itself
    assert sse.error_frame("boom") == b'event: error\ndata: {"detail":"boom"}\n\n'


def test_the_runtime_help_comes_from_its_declaration() -> None:
    import typer
    from typer.testing import CliRunner

    from chutes.runtime.cli import run
    from chutes.runtime.config import SETTINGS

    app = typer.Typer(add_completion=False)
    app.command()(run)
    text = " ".join(CliRunner().invoke(app, ["--help"], env={"COLUMNS": "300"}).output.split())
    for s in SETTINGS:
        if s.flag:
            assert s.flag in text and (s.env is None or f"env {s.env}" in text), s.name
