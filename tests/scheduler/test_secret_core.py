"""The pure parts of chute secrets: sealing at rest (AES-GCM), names and values, the Variable's items and the
template that reads them, rendered by the devcluster's template engine and read back as Nomad reads env files."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chutes.devcluster.nomad.templates import parse, parse_env, render
from chutes.scheduler.secret_box import SecretBox, SecretsKeyError, decode_key, generate_key, sealed_context
from chutes.scheduler.secret_env import (
    MAX_VALUE_BYTES,
    SecretInputError,
    env_template,
    escape,
    token_key,
    validate_name,
    validate_value,
    variable_items,
)
from tests.support.nomad_openapi import assert_valid

SHA = hashlib.sha256(b"v1").hexdigest()
OLD = hashlib.sha256(b"v0").hexdigest()


def test_sealed_values_open_with_their_key_and_place_only() -> None:
    key = generate_key()
    box = SecretBox(key)
    blob = box.seal("hf_abc", sealed_context("chute-1", "HF_TOKEN"))
    assert b"hf_abc" not in blob and blob[:1] == b"\x01"
    assert box.open(blob, sealed_context("chute-1", "HF_TOKEN")) == "hf_abc"
    assert box.seal("hf_abc", "c/n") != box.seal("hf_abc", "c/n"), "a fresh nonce each time"
    with pytest.raises(SecretsKeyError, match="not the key it was stored with"):
        box.open(blob, sealed_context("chute-2", "HF_TOKEN"))  # moved to another chute: refused
    with pytest.raises(SecretsKeyError, match="not the key it was stored with"):
        SecretBox(generate_key()).open(blob, sealed_context("chute-1", "HF_TOKEN"))
    with pytest.raises(SecretsKeyError, match="damaged"):
        box.open(b"\x02" + blob[1:], "c/n")
    assert SecretBox(key).key_id == box.key_id != SecretBox(generate_key()).key_id
    assert key not in repr(box) and box.key_id not in key


@pytest.mark.parametrize(
    ("text", "message"),
    [("not base64!!", "not URL-safe base64"), ("c2hvcnQ", "decodes to 5 bytes"), ("A" * 64, "decodes to 48 bytes")],
)
def test_malformed_keys_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(SecretsKeyError, match=message) as info:
        SecretBox(text)
    assert "CHUTES_SECRETS_KEY" in info.value.hint
    assert len(decode_key(generate_key().rstrip("="))) == 32  # padding is optional


@pytest.mark.parametrize("name", ["HF_TOKEN", "api_key", "_X", "A" * 64])
def test_environment_variable_names_are_secret_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "invalid"), ("1ABC", "invalid"), ("HF-TOKEN", "invalid"), ("a/b", "invalid"), ("../x", "invalid"),
        ("A\x00B", "invalid"), ("A" * 65, "invalid"), ("é", "invalid"), ("A B", "invalid"),
        ("CHUTES_INVOKE_SECRET", "reserved"), ("chutes_x", "reserved"), ("NOMAD_TOKEN", "reserved"),
        ("NVIDIA_VISIBLE_DEVICES", "reserved"), ("CUDA_VISIBLE_DEVICES", "reserved"), ("LD_PRELOAD", "reserved"),
        ("PATH", "reserved"), ("pythonpath", "reserved"),
    ],
)  # fmt: skip
def test_hostile_or_reserved_names_are_refused(name: str, why: str) -> None:
    with pytest.raises(SecretInputError, match=why):
        validate_name(name)


def test_values_are_text() -> None:
    assert validate_value("line1\nline2\ttab 'q' \"d\" \\ $x ${y} {{ .z }} ünï").startswith("line1")
    for bad, why in (
        ("", "empty"),
        ("a\x00b", "U\\+0000"),
        ("a\rb", "U\\+000D"),
        ("x" * (MAX_VALUE_BYTES + 1), "over"),
    ):
        with pytest.raises(SecretInputError, match=why):
            validate_value(bad)


def test_items_hold_every_version_token_and_escaped_values() -> None:
    items = variable_items("inv", {SHA: "cit_new", OLD: "cit_old"}, {"HF_TOKEN": 'a"b\\c\nd'})
    assert items == {
        "HF_TOKEN": 'a\\"b\\\\c\\nd',
        "CHUTES_INVOKE_SECRET": "inv",
        token_key(SHA): "cit_new",
        token_key(OLD): "cit_old",
    }
    with pytest.raises(SecretInputError, match="64 KiB"):
        variable_items("inv", {}, {f"S{i}": "x" * 16000 for i in range(5)})
    # What NomadClient.put_variable sends is a Variable as Nomad's OpenAPI spec has it.
    assert_valid("Variable", {"Path": "nomad/jobs/chute-x", "Items": items, "Namespace": "default"})


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1))
def test_any_valid_value_survives_the_template_and_the_env_file(value: str) -> None:
    try:
        validate_value(value)
    except SecretInputError:
        return
    items = variable_items("inv", {SHA: "cit_tok"}, {"HF_TOKEN": value})
    rendered = render(parse(env_template("chute-x", SHA, ["HF_TOKEN"])), lambda ns, path: items, "default")
    env = parse_env(rendered)
    assert env == {"HF_TOKEN": value, "CHUTES_INVOKE_SECRET": "inv", "CHUTES_INSTANCE_TOKEN": "cit_tok"}


def test_an_instance_of_an_older_version_renders_the_same_after_a_new_token_arrives() -> None:
    template = parse(env_template("chute-x", OLD, []))
    before = variable_items("inv", {OLD: "cit_old"}, {})
    after = variable_items("inv", {OLD: "cit_old", SHA: "cit_new"}, {})
    assert render(template, lambda ns, p: before, "default") == render(template, lambda ns, p: after, "default")
    assert escape("plain") == "plain"
