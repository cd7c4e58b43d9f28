import uuid

import pytest

from chutes.identity import InvalidNameError, chute_id, slugify, validate_chute_name, validate_username


def test_chute_id_matches_the_chutes_formula() -> None:
    assert chute_id("myuser", "my-ai-app") == str(uuid.uuid5(uuid.NAMESPACE_OID, "myuser::chute::my-ai-app"))


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("unsloth/Llama-3.2-1B-Instruct", "unsloth-llama-3-2-1b-instruct"),
        ("my_app", "my-app"),
        ("--A--", "a"),
    ],
)
def test_slug(name: str, slug: str) -> None:
    assert slugify(name) == slug


@pytest.mark.parametrize("name", ["", "a b", "x" * 129, "../etc", "a//b", "$(rm -rf)", "---", "a/./b"])
def test_bad_chute_names_name_the_rule(name: str) -> None:
    with pytest.raises(InvalidNameError, match="invalid chute name"):
        validate_chute_name(name)


@pytest.mark.parametrize("name", ["Upper", "-lead", "a" * 64, "sp ace", ""])
def test_bad_usernames_name_the_rule(name: str) -> None:
    with pytest.raises(InvalidNameError, match="lower-case letters"):
        validate_username(name)
