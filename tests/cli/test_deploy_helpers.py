"""What ``chutes deploy`` prints at the end: example bodies from input schemas and a curl line that works."""

from __future__ import annotations

import json
import shlex

from chutes.commands.deploy import curl_line, example_body
from chutes.loader import load_chute


def test_example_bodies_of_the_hello_cords() -> None:
    chute = load_chute("examples/hello.py:chute").chute
    bodies = {c.public_api_path: example_body(c.spec().input_schema) for c in chute.cords}
    assert bodies["/hello"] == {"name": "world"}
    assert bodies["/count"] == {"to": 5, "delay": 0.05}


def test_example_body_fills_required_fields_by_type() -> None:
    schema = {
        "properties": {
            "text": {"type": "string"},
            "n": {"type": "integer", "minimum": 3},
            "mode": {"enum": ["fast", "slow"]},
            "opt": {"type": "string"},
        },
        "required": ["text", "n", "mode"],
    }
    assert example_body(schema) == {"text": "hello", "n": 3, "mode": "fast"}
    assert example_body(None) == {}


def test_curl_line_is_valid_shell() -> None:
    chute = load_chute("examples/hello.py:chute").chute
    count = next(c.spec() for c in chute.cords if c.public_api_path == "/count")
    line = curl_line("http://127.0.0.1:8200/demo/hello/count", "cnk_abc", count)
    argv = shlex.split(line)
    assert argv[:2] == ["curl", "-N"]
    assert "Authorization: Bearer cnk_abc" in argv
    assert json.loads(argv[argv.index("-d") + 1]) == {"to": 5, "delay": 0.05}
