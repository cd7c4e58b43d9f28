"""Chute files written for the real Chutes SDK load here and give the cords the real SDK would produce.

Each file of tests/sdk/corpus/ uses constructs public chute files use (see its README); it is loaded as
``chutes inspect`` loads it. Where this platform takes a construct differently it says so with a
CompatibilityWarning, and where it refuses one, the message names the rule and the fix.
"""

import asyncio
import warnings
from pathlib import Path
from typing import Any

import pytest

from chutes.chute import Chute, CompatibilityWarning
from chutes.loader import LoadError, load_chute

CORPUS = Path(__file__).parent / "corpus"


def load(name: str) -> tuple[Chute, list[str]]:
    """The chute of corpus file ``name`` and the CompatibilityWarnings loading it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chute = load_chute(f"{CORPUS / name}.py:chute").chute
    return chute, [str(w.message) for w in caught if issubclass(w.category, CompatibilityWarning)]


def cords(chute: Chute) -> dict[str, tuple[Any, ...]]:
    """name → (path, public method, public path, stream, passthrough, passthrough path, port, upstream method)."""
    return {
        c.name: (
            c.path,
            c.public_api_method,
            c.public_api_path,
            c.stream,
            c.passthrough,
            c.passthrough_path,
            c.passthrough_port,
            c.method,
        )
        for c in chute.cords
    }


def plain(path: str, public: str, method: str = "POST") -> tuple[Any, ...]:
    return (path, method, public, False, False, None, None, "POST")


def engine(path: str, public: str, upstream: str, *, stream: bool = False, get: bool = False) -> tuple[Any, ...]:
    verb = "GET" if get else "POST"
    return (path, verb, public, stream, True, upstream, 10101, verb)


# The OpenAI-style cords of the real vLLM template (chutes/chute/template/vllm.py).
VLLM_CORDS = {
    "chat_stream": engine("/chat_stream", "/v1/chat/completions", "/v1/chat/completions", stream=True),
    "chat": engine("/chat", "/v1/chat/completions", "/v1/chat/completions"),
    "completion_stream": engine("/completion_stream", "/v1/completions", "/v1/completions", stream=True),
    "completion": engine("/completion", "/v1/completions", "/v1/completions"),
    "do_tokenize": engine("/do_tokenize", "/tokenize", "/tokenize"),
    "do_detokenize": engine("/do_detokenize", "/detokenize", "/detokenize"),
    "get_models": engine("/get_models", "/v1/models", "/v1/models", get=True),
}


def test_every_corpus_file_is_covered() -> None:
    files = {p.stem for p in CORPUS.glob("*.py")} - {"__init__"}
    tested = {
        "image_run_command",
        "entrypoint_string",
        "node_selector_typo",
        "trailing_slash",
        "hardening_flags",
        "vllm_package_import",
        "sglang_package_import",
        "embedding_package_import",
        "diffusion_version",
        "initialize_and_fastapi",
        "job_kwargs",
        "unknown_gpu",
    }
    assert files == tested


def test_multi_line_run_commands_and_list_entrypoint() -> None:
    chute, warned = load("image_run_command")
    assert warned == []
    assert cords(chute) == {"transcribe": plain("/transcribe", "/transcribe")}
    dockerfile = chute.manifest().image.dockerfile
    assert dockerfile is not None
    assert (
        "RUN apt-get update && \\\n        apt-get install -y --no-install-recommends ffmpeg libsndfile1 && \\\n"
        in (dockerfile)
    )
    assert "# clean up" not in dockerfile  # comment lines inside a continuation are dropped, as Docker does
    assert "RUN pip install --no-cache-dir \\\n    openai-whisper==20240930 \\\n    soundfile" in dockerfile
    assert "Python-3.10.15.tgz" in dockerfile  # with_python()'s default is the real SDK's
    assert dockerfile.endswith('ENTRYPOINT ["python", "-m", "chutes"]')


def test_entrypoint_as_one_string() -> None:
    chute, warned = load("entrypoint_string")
    assert warned == []
    assert cords(chute) == {"echo": plain("/echo", "/echo")}
    assert chute.manifest().image.dockerfile.endswith('ENTRYPOINT ["python", "-m", "chutes.entrypoint"]')  # type: ignore[union-attr]


def test_node_selector_typos_are_ignored_with_the_closest_field_named() -> None:
    chute, warned = load("node_selector_typo")
    assert cords(chute) == {"ping": plain("/ping", "/ping", "GET")}
    assert any("'min_vram_gpu_per_gpu'" in w and "did you mean 'min_vram_gb_per_gpu'?" in w for w in warned)
    assert any("'dynamic'" in w for w in warned)
    selector = chute.node_selector
    assert (selector.gpu_count, selector.min_vram_gb_per_gpu) == (2, 16)  # as the real SDK: the typo is not applied


def test_public_paths_differing_by_a_trailing_slash() -> None:
    chute, warned = load("trailing_slash")
    # The real SDK keeps both at POST /generate (its first cord answers there); here the second cord
    # answers at its own path, and the warning says so.
    assert cords(chute) == {
        "generate": plain("/generate", "/generate"),
        "generate_slash": plain("/generate_slash", "/generate_slash"),
    }
    assert len(warned) == 1 and "'generate_slash' at POST /generate_slash" in warned[0]
    chute.manifest()  # a valid manifest: no two cords share an address


def test_hardening_flags_are_accepted() -> None:
    chute, warned = load("hardening_flags")
    assert warned == []
    assert cords(chute) == {"run": plain("/run", "/v1/run")}
    assert (chute.lock_modules, chute.tee, chute.encrypted_fs) == (True, True, True)
    assert chute.node_selector.eligible_gpus == ["h100", "h200"]


def test_vllm_template_from_the_package_with_helpers_and_request_models() -> None:
    chute, warned = load("vllm_package_import")
    assert warned == []
    assert cords(chute) == VLLM_CORDS
    assert chute.name == "unsloth/Llama-3.2-1B-Instruct" and chute.standard_template == "vllm"
    assert chute.revision == "9b58d4a36161a1e49ecf0a69d20b2736fef8e438" and chute.concurrency == 16


def test_sglang_template_from_the_package() -> None:
    chute, _ = load("sglang_package_import")
    expected = {k: v for k, v in VLLM_CORDS.items() if k not in ("do_tokenize", "do_detokenize")}
    assert cords(chute) == expected


def test_embedding_template_from_the_package() -> None:
    chute, _ = load("embedding_package_import")
    assert cords(chute) == {
        "embed": engine("/embed", "/v1/embeddings", "/v1/embeddings"),
        "get_models": engine("/get_models", "/v1/models", "/v1/models", get=True),
    }


def test_diffusion_template_with_version_tee_and_minified_input() -> None:
    chute, warned = load("diffusion_version")
    assert warned == []
    assert cords(chute) == {"generate": plain("/generate", "/generate")}
    (generate,) = chute.cords
    assert generate.output_content_type == "image/jpeg"
    assert generate.minimal_input_schema is not None
    assert generate.minimal_input_schema["properties"]["prompt"]["default"] == "a beautiful mountain landscape"
    assert chute.standard_template == "diffusion" and chute.concurrency == 2 and chute.tee is False


def test_initialize_and_fastapi_parameters() -> None:
    chute, warned = load("initialize_and_fastapi")
    assert warned == []
    assert cords(chute) == {"secure": plain("/secure", "/secure")}
    (secure,) = chute.cords
    assert secure.input_model is not None and list(secure.input_model.model_fields) == ["text"]
    assert secure.dependant is not None and secure.dependant.request_param_name == "request"
    asyncio.run(chute.initialize())
    asyncio.run(chute.initialize())
    assert chute.loaded == 1  # type: ignore[attr-defined]  # startup hooks ran once


def test_job_taking_job_data() -> None:
    chute, warned = load("job_kwargs")
    assert warned == [] and chute.cords == []
    (job,) = chute.jobs
    assert job.spec().model_dump() == {"name": "render", "timeout": 600, "upload": True, "ports": []}
    assert job.input_model is not None and job.input_model.model_config.get("extra") == "allow"


def test_an_unknown_gpu_id_is_refused_with_the_rule_and_the_fix() -> None:
    with pytest.raises(LoadError) as info:
        load("unknown_gpu")
    message = str(info.value)
    assert "unknown GPU id 'rtx4090ti' (did you mean '4090'?)" in message
    assert "only on the GPU models of its catalog" in message and "use one of: 3090, 4090" in message
