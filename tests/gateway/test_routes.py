"""Addressing, cord matching and the access rule (pure)."""

from __future__ import annotations

from chutes.gateway.routes import Identity, Route, RouteInfo, host_label, parse_target, pick_cord, split_label
from chutes.manifest import CordSpec


def _route(**overrides: object) -> Route:
    data: dict[str, object] = {
        "chute_id": "c1",
        "username": "alice",
        "name": "My/Chute",
        "slug": "my-chute",
        "invoke_secret": "s",
        "service": "chute-c1",
        "cords": [
            CordSpec(name="echo", path="/echo", public_api_path="/echo", public_api_method="POST"),
            CordSpec(name="info", path="/info", public_api_path="/v1/info", public_api_method="GET"),
        ],
    }
    data.update(overrides)
    return Route.of(RouteInfo.model_validate(data))


def test_path_address() -> None:
    target = parse_target("gw.example.com", "/alice/my-chute/v1/info", "chutes.test")
    assert target is not None
    assert target.candidates == (("alice", "my-chute"),)
    assert target.path == "/v1/info"


def test_path_address_without_cord_path_is_root() -> None:
    target = parse_target("127.0.0.1:8080", "/alice/my-chute", None)
    assert target is not None and target.path == "/"


def test_not_a_chute_address() -> None:
    assert parse_target("gw", "/healthz", None) is None
    assert parse_target("gw", "/", None) is None
    assert parse_target("gw", "/Alice/x/y", None) is None  # usernames are lower-case
    assert parse_target("gw", "/alice/-x/y", None) is None


def test_host_address_takes_precedence_and_keeps_the_whole_path() -> None:
    target = parse_target("alice-my-chute.chutes.test:443", "/alice/other/echo", "chutes.test")
    assert target is not None
    assert target.path == "/alice/other/echo"
    assert target.candidates == (("alice", "my-chute"), ("alice-my", "chute"))
    assert target.label == "alice-my-chute"


def test_a_host_label_answers_only_by_the_chute_that_owns_it() -> None:
    """acme's chute research-chat and acme-research's chute chat both split out of acme-research-chat: only
    the one the scheduler gave the label to answers (the other deploy is refused, or has no host address)."""
    target = parse_target("acme-research-chat.chutes.test", "/v1/x", "chutes.test")
    assert target is not None and target.label == "acme-research-chat"
    victim = _route(username="acme-research", name="chat", slug="chat", host_label="acme-research-chat")
    intruder = _route(username="acme", name="research-chat", slug="research-chat", host_label=None)
    assert victim.answers(target)
    assert not intruder.answers(target)
    by_path = parse_target("gw", "/acme/research-chat/v1/x", "chutes.test")
    assert by_path is not None and by_path.label is None and intruder.answers(by_path)


def test_an_encoded_slash_is_no_path_separator() -> None:
    # The edge protocol keeps %2F encoded in the path, so it cannot split a segment into two.
    assert parse_target("gw", "/alice%2Fmy-chute/echo", None) is None
    assert parse_target("gw", "/alice/my%2Fchute/echo", None) is None


def test_host_label() -> None:
    assert host_label("Bob-X.Chutes.Test", "chutes.test") == "bob-x"
    assert host_label("a.b.chutes.test", "chutes.test") is None  # one label only
    assert host_label("chutes.test", "chutes.test") is None
    assert host_label("bob-x.other.test", "chutes.test") is None
    assert host_label("bob-x.chutes.test", None) is None
    assert host_label("[::1]:80", "chutes.test") is None


def test_split_label_tries_every_valid_split() -> None:
    assert split_label("a-b-c") == (("a", "b-c"), ("a-b", "c"))
    assert split_label("nodash") == ()
    assert split_label("a--b") == (("a-", "b"),)  # "a" + "-b" is no slug; "a-" is a valid username


def test_cord_by_method_and_path() -> None:
    route = _route()
    echo = route.cords_at("POST", "/echo")
    assert echo is not None and [c.name for c in echo] == ["echo"]
    assert route.cords_at("GET", "/echo") is None
    info = route.cords_at("GET", "/v1/info/")
    assert info is not None and info[0].name == "info"
    assert route.cords_at("POST", "/nope") is None


def test_stream_pair_is_told_apart_by_the_answer_or_query_never_the_body() -> None:
    chat = CordSpec(name="chat", path="/chat", public_api_path="/v1/chat", public_api_method="POST")
    chat_stream = CordSpec(
        name="chat_stream", path="/chat_stream", public_api_path="/v1/chat", public_api_method="POST", stream=True
    )
    route = _route(cords=[chat_stream, chat])
    pair = route.cords_at("POST", "/v1/chat")
    assert pair is not None and len(pair) == 2
    assert pick_cord(pair, "", b"text/event-stream; charset=utf-8").name == "chat_stream"
    assert pick_cord(pair, "", b"application/json").name == "chat"
    assert pick_cord(pair, "", None).name == "chat"  # no answer (an error before the instance answered)
    get_s = CordSpec(name="gs", path="/gs", public_api_path="/g", public_api_method="GET", stream=True)
    get_u = CordSpec(name="gu", path="/gu", public_api_path="/g", public_api_method="GET")
    assert pick_cord((get_u, get_s), "stream=1").name == "gs"
    assert pick_cord((get_u, get_s), "a=b").name == "gu"


def test_access_owner_shared_public() -> None:
    private = _route(shared_with=["carol"])
    assert private.allows(Identity(user_id="1", username="alice"))
    assert private.allows(Identity(user_id="3", username="carol"))
    assert not private.allows(Identity(user_id="2", username="bob"))
    assert not private.allows(Identity(user_id="9", username="root", is_admin=True))
    public = _route(public=True)
    assert public.allows(Identity(user_id="2", username="bob"))


def test_route_info_ignores_unknown_fields() -> None:
    info = RouteInfo.model_validate(
        {"chute_id": "c", "username": "u", "name": "n", "slug": "n", "invoke_secret": "x", "service": "chute-c",
         "something_new": 1}
    )  # fmt: skip
    assert info.concurrency == 1 and info.cords == []
