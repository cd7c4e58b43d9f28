from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chutes.chute import Chute

CHUTES_DIR = Path(__file__).parent / "chutes"


def new_chute(**overrides: Any) -> Chute:
    """A valid chute with no cords; keyword arguments override the constructor's."""
    kwargs: dict[str, Any] = {"username": "tester", "name": "unit", "image": "python:3.12-slim"}
    kwargs.update(overrides)
    return Chute(**kwargs)


@pytest.fixture
def chute() -> Chute:
    return new_chute()
