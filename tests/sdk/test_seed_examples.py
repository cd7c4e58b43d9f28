"""Every example of the seed document ("Understanding Chutes") loads and gives the expected manifest."""

from pathlib import Path
from typing import Any

import pytest

from chutes.chute import Chute
from chutes.loader import load_chute
from chutes.manifest import Manifest

SEED = Path(__file__).parent / "seed"
ALL_SCHEDULABLE_16GB = 25  # catalog models with >= 16 GB, without the unschedulable mi300x


def load(module: str, attr: str = "chute") -> Chute:
    return load_chute(f"{SEED / module}.py:{attr}").chute


def manifest_of(module: str) -> Manifest:
    manifest = load(module).manifest()
    assert Manifest.model_validate_json(manifest.model_dump_json()) == manifest
    return manifest


def cords(manifest: Manifest) -> dict[str, dict[str, Any]]:
    return {c.name: c.model_dump() for c in manifest.cords}


def test_basic_structure() -> None:
    chute = load("seed_basic_structure")
    manifest = manifest_of("seed_basic_structure")
    assert (manifest.username, manifest.name, manifest.concurrency) == ("myuser", "my-ai-app", 4)
    assert manifest.tagline == "My awesome AI application"
    assert manifest.readme == "# My AI App\nThis app does amazing things!"
    assert manifest.image.ref == "myuser/my-ai-app:1.0"
    dockerfile = (manifest.image.dockerfile or "").splitlines()
    assert dockerfile[0] == "FROM nvidia/cuda:12.2-devel-ubuntu22.04"
    assert dockerfile[-1] == "RUN pip install torch transformers"
    selector = manifest.node_selector
    assert (selector.gpu_count, selector.min_vram_gb_per_gpu) == (1, 16)
    assert len(selector.eligible_gpus) == ALL_SCHEDULABLE_16GB
    assert selector.hourly_price_usd == pytest.approx(0.20)
    predict = cords(manifest)["predict"]
    assert (predict["path"], predict["public_api_path"], predict["public_api_method"]) == (
        "/predict",
        "/predict",
        "POST",
    )
    assert predict["input_schema"]["properties"] == {"text": {"title": "Text", "type": "string"}}
    assert predict["input_schema"]["required"] == ["text"]
    assert predict["output_content_type"] == "application/json" and predict["stream"] is False
    assert [h.__name__ for h in chute.startup_hooks] == ["initialize_model"]


def test_read_only_properties_of_the_document() -> None:
    chute = load("seed_basic_structure")
    assert chute.name == "my-ai-app" and chute.username == "myuser"
    assert chute.uid == manifest_of("seed_basic_structure").chute_id
    assert chute.tagline == "My awesome AI application" and chute.readme.startswith("# My AI App")
    assert chute.node_selector.gpu_count == 1
    assert str(chute.image).startswith("FROM nvidia/cuda")
    assert [c.name for c in chute.cords] == ["predict"] and chute.jobs == []


def test_constructor_parameters_and_methods() -> None:
    chute = load("seed_constructor")
    manifest = manifest_of("seed_constructor")
    assert (manifest.name, manifest.concurrency, manifest.revision) == ("my-awesome-app", 8, "v1.2.0")
    assert manifest.tagline == "Fast text generation with custom models"
    assert "## Features" in manifest.readme
    assert manifest.image.model_dump() == {"ref": "nvidia/cuda:12.2-runtime-ubuntu22.04", "dockerfile": None}
    selector = manifest.node_selector
    assert selector.include == ["a100", "h100"] and selector.exclude == ["k80", "p100"]
    assert selector.eligible_gpus == ["a100", "h100"]
    assert selector.hourly_price_usd == pytest.approx(2 * 1.20)
    predict = cords(manifest)["predict"]
    assert predict["public_api_path"] == "/predict" and predict["output_content_type"] == "application/json"
    assert predict["input_schema"]["title"] == "MyInputSchema"
    assert chute.cords[0].takes_model is True
    assert [h.__name__ for h in chute.startup_hooks] == ["load_model"]
    assert [h.__name__ for h in chute.shutdown_hooks] == ["cleanup"]


def test_the_other_image_forms() -> None:
    custom = load("seed_constructor", "chute_with_custom_image")
    assert custom.image_spec().model_dump() == {
        "ref": "myuser/my-image:1.0",
        "dockerfile": "FROM parachutes/python:3.12",
    }
    template = load("seed_constructor", "chute_with_template_image")
    assert template.image_spec().model_dump() == {"ref": "chutes/vllm:latest", "dockerfile": None}


def test_job() -> None:
    manifest = manifest_of("seed_job")
    assert manifest.cords == []
    assert [j.model_dump() for j in manifest.jobs] == [
        {"name": "train_model", "timeout": 3600, "upload": True, "ports": []}
    ]
    (job,) = load("seed_job").jobs
    assert job.input_model is not None and list(job.input_model.model_fields) == ["training_data"]


def test_advanced_usage() -> None:
    chute = load("seed_advanced")
    manifest = manifest_of("seed_advanced")
    table = cords(manifest)
    cached = table["cached_predict"]
    assert (cached["path"], cached["public_api_path"]) == ("/cached_predict", "/cached-predict")
    secure = table["secure_endpoint"]
    assert secure["public_api_path"] == "/secure-endpoint"
    assert list(secure["input_schema"]["properties"]) == ["data"]  # the Depends parameter is not an input
    assert secure["output_schema"] is None and secure["output_content_type"] is None
    assert [h.__name__ for h in chute.startup_hooks] == ["setup", "configure"]


def test_best_practices() -> None:
    chute = load("seed_best_practices")
    manifest = manifest_of("seed_best_practices")
    assert list(cords(manifest)) == ["predict"]
    assert [h.__name__ for h in chute.startup_hooks] == ["initialize", "optimize"]
    assert [h.__name__ for h in chute.shutdown_hooks] == ["cleanup"]


def test_input_validation() -> None:
    manifest = manifest_of("seed_input_validation")
    predict = cords(manifest)["predict"]
    assert predict["public_api_path"] == "/predict"
    properties = predict["input_schema"]["properties"]
    assert properties["text"]["minLength"] == 1 and properties["text"]["maxLength"] == 1000
    assert properties["temperature"]["maximum"] == 2.0
    cord = load("seed_input_validation").cords[0]
    assert cord.input_model is not None and cord.takes_model is True
    with pytest.raises(ValueError):
        cord.input_model.model_validate({"text": ""})


def test_common_patterns() -> None:
    table = cords(manifest_of("seed_common_patterns"))
    batch = table["batch_predict"]
    assert batch["public_api_path"] == "/batch-predict"
    assert batch["input_schema"]["properties"]["texts"] == {
        "items": {"type": "string"},
        "title": "Texts",
        "type": "array",
    }
    assert batch["output_schema"]["type"] == "array" and batch["output_content_type"] == "application/json"
    stream = table["stream_generate"]
    assert stream["stream"] is True and stream["public_api_path"] == "/stream"
    assert stream["output_content_type"] == "text/event-stream"
    assert stream["input_schema"]["required"] == ["prompt"]


def test_the_readme_example_loads(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = text.split("## SDK in brief", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "readme_chute.py").write_text(code)
    manifest = load_chute(f"{tmp_path / 'readme_chute.py'}:chute").chute.manifest()
    assert [(c.public_api_path, c.stream) for c in manifest.cords] == [("/hello", False), ("/count", True)]
