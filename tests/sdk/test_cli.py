import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import chutes.commands.build
import chutes.commands.inspect  # noqa: F401  (registers the commands)
from chutes.chute import ChuteError
from chutes.cli import app
from chutes.loader import load_chute

from .conftest import CHUTES_DIR

REPO = Path(__file__).resolve().parents[2]
MUST_SHOW = f"{CHUTES_DIR / 'must_show.py'}:chute"
runner = CliRunner()


def chutes_cli() -> str:
    found = shutil.which("chutes", path=str(Path(sys.executable).parent))
    assert found, "the chutes console script is not installed in this environment"
    return found


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([chutes_cli(), *args], capture_output=True, text=True, timeout=60, cwd=cwd)


@pytest.mark.timeout(60)
def test_must_show_inspect_json_prints_eligible_gpus_and_price() -> None:
    result = run_cli("inspect", MUST_SHOW, "--json")
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert manifest["node_selector"]["eligible_gpus"] == ["a100", "h100"]
    assert manifest["node_selector"]["hourly_price_usd"] == pytest.approx(2 * 1.20)
    ask, words = manifest["cords"]
    assert (ask["name"], ask["stream"], ask["public_api_path"]) == ("ask", False, "/ask")
    assert ask["input_schema"]["title"] == "Question" and ask["input_schema"]["required"] == ["text"]
    assert (words["name"], words["stream"], words["output_content_type"]) == ("words", True, "text/event-stream")
    assert manifest["username"] == "demo" and manifest["name"] == "two-cords"


@pytest.mark.timeout(60)
def test_inspect_summary_is_readable() -> None:
    result = run_cli("inspect", MUST_SHOW)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "demo/two-cords" in out
    assert "GPUs: 2 x at least 80 GB VRAM" in out
    assert "eligible GPUs: a100, h100" in out
    assert "hourly price: $2.40 per instance" in out
    assert "POST /ask" in out and "POST /words" in out


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("args", "error", "hint"),
    [
        (["inspect", "nowhere/app.py:chute"], "Error: no such file: nowhere/app.py", "Hint: use FILE.py:ATTR"),
        (["inspect", "examples/hello.py:nope", "--json"], "Error: examples/hello.py has no attribute 'nope'", "Hint:"),
        (
            ["build", "examples/hello.py:chute", "--api-url", "http://127.0.0.1:9", "--api-key", "cnk_x"],
            "Error: cannot reach",
            "Hint:",
        ),
    ],
)
def test_errors_are_one_line_and_a_hint(args: list[str], error: str, hint: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(error), result.stderr
    assert len(lines) == 2 and lines[1].startswith("Hint:") and hint in lines[1]
    assert "Traceback" not in result.stderr


def test_inspect_json_is_the_manifest() -> None:
    result = runner.invoke(app, ["inspect", str(REPO / "examples" / "hello.py") + ":chute", "--json"])
    assert result.exit_code == 0, result.output
    expected = load_chute(str(REPO / "examples" / "hello.py") + ":chute").chute.manifest()
    assert json.loads(result.stdout) == expected.model_dump(mode="json")


def test_build_writes_the_dockerfile_and_lists_the_context(tmp_path: Path) -> None:
    output = tmp_path / "out" / "Dockerfile"
    ref = f"{CHUTES_DIR / 'with_context.py'}:chute"
    result = runner.invoke(app, ["build", ref, "--dockerfile-only", "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert output.read_text() == (
        "FROM python:3.12-slim\n"
        'ADD ["must_show.py", "/app/must_show.py"]\n'
        'ADD ["__init__.py", "/app/__init__.py"]\n'
        'ENTRYPOINT ["python", "-m", "chutes.runtime"]\n'
    )
    assert f"build context: {CHUTES_DIR}" in result.stdout
    assert "  __init__.py\n  must_show.py\n" in result.stdout
    assert "docker build -t demo/with-context:0.1" in result.stdout

    again = runner.invoke(app, ["build", ref, "--dockerfile-only", "--output", str(output)])
    assert again.exit_code == 1 and isinstance(again.exception, ChuteError)
    assert "already exists" in str(again.exception) and again.exception.hint and "--force" in again.exception.hint
    forced = runner.invoke(app, ["build", ref, "--dockerfile-only", "--output", str(output), "--force"])
    assert forced.exit_code == 0, forced.output


def test_build_of_a_prebuilt_image_has_nothing_to_do(tmp_path: Path) -> None:
    result = runner.invoke(app, ["build", MUST_SHOW, "--dockerfile-only", "--output", str(tmp_path / "Dockerfile")])
    assert result.exit_code == 1 and isinstance(result.exception, ChuteError)
    assert "runs the pre-built image 'python:3.12-slim'" in str(result.exception)
    assert not (tmp_path / "Dockerfile").exists()
