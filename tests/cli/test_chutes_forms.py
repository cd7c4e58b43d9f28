"""The real Chutes CLI's forms, as this CLI takes them (the ones needing deployed chutes are in
tests/e2e/test_compat_dev.py): keys create --admin, share --chute-id/--user-id, list paging, unknown options."""

from __future__ import annotations

import json

import pytest

from chutes.commands.manage import named, page_of
from tests.cli.conftest import Scheduler
from tests.cli.test_cli import run

pytestmark = pytest.mark.timeout(60)


def test_keys_create_admin_is_a_full_access_key_of_your_account(scheduler: Scheduler) -> None:
    key = scheduler.new_user("keyholder")
    conn = ["--api-url", scheduler.url, "--api-key", key]
    created = run("keys", "create", "--admin", "--name", "ci", "--json", *conn)
    assert created.returncode == 0, created.stderr
    answer = json.loads(created.stdout)
    assert answer["role"] == "user" and answer["api_key"].startswith("cnk_")
    # The new key works for the account, as the key that made it.
    me = run("whoami", "--json", "--api-url", scheduler.url, "--api-key", answer["api_key"])
    assert json.loads(me.stdout)["username"] == "keyholder"
    clash = run("keys", "create", "--admin", "--role", "gateway", *conn)
    assert clash.returncode == 2 and "--admin is Chutes' full-access key" in clash.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["share"], "--chute-id"),
        (["share", "--chute-id", "c"], "--user-id"),
        (["share", "hello", "bob", "--chute-id", "other"], "given twice"),
        (["deploy", "x.py:chute", "--public-please"], "No such option: --public-please"),
        (["chutes", "list", "--limit", "0"], "--limit"),
        (["chutes", "list", "--pages", "1"], "No such option: --pages"),
    ],
)
def test_misused_forms_fail_with_the_usual_message(args: list[str], message: str) -> None:
    result = run(*args, "--api-url", "http://127.0.0.1:9", "--api-key", "k")
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_list_filter_and_pages_as_in_chutes() -> None:
    rows = [{"name": n} for n in ("alpha", "beta", "gamma", "Alphabet", "delta")]
    assert [r["name"] for r in named(rows, "alpha")] == ["alpha", "Alphabet"]
    assert named(rows, None) == rows
    assert [r["name"] for r in page_of(rows, 2, 0)] == ["alpha", "beta"]
    assert [r["name"] for r in page_of(rows, 2, 2)] == ["delta"]
    assert page_of(rows, 2, 3) == []
