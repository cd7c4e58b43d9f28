import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from chutes.chute import ChuteError, ChutePack, CompatibilityWarning, NodeSelector
from chutes.chute.template import helpers
from chutes.chute.template.diffusion import GenerationInput, build_diffusion_chute, civitai_model
from chutes.chute.template.embedding import build_embedding_chute, pooling_type_for
from chutes.chute.template.openai import ChatCompletionRequest
from chutes.chute.template.sglang import build_sglang_chute, sglang_command
from chutes.chute.template.tei import build_tei_chute, tei_command
from chutes.chute.template.vllm import build_vllm_chute, vllm_command
from chutes.image.standard import DIFFUSION, SGLANG, TEI, VLLM
from chutes.manifest import Manifest

from .conftest import new_chute

MODEL = "unsloth/Llama-3.2-1B-Instruct"
REVISION = "9b58d4a36161a1e49ecf0a69d20b2736fef8e438"
SELECTOR = NodeSelector(gpu_count=2, min_vram_gb_per_gpu=24)


def cord_table(pack: ChutePack) -> list[tuple[Any, ...]]:
    return [
        (c.name, c.public_api_method, c.public_api_path, c.stream, c.passthrough_port, c.passthrough_path, c.method)
        for c in pack.chute.cords
    ]


def test_importing_the_templates_needs_no_gpu_library() -> None:
    code = (
        "import sys\n"
        "import chutes.chute.template.vllm, chutes.chute.template.sglang, chutes.chute.template.embedding\n"
        "import chutes.chute.template.tei, chutes.chute.template.diffusion\n"
        "print([m for m in ('torch', 'vllm', 'sglang', 'diffusers', 'huggingface_hub', 'transformers')"
        " if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_vllm_template() -> None:
    pack = build_vllm_chute(username="demo", model_name=MODEL, node_selector=SELECTOR, revision=REVISION)
    chute = pack.chute
    assert (chute.name, chute.standard_template, chute.revision, chute.concurrency) == (MODEL, "vllm", REVISION, 32)
    assert chute.image == VLLM
    assert cord_table(pack) == [
        ("chat_stream", "POST", "/v1/chat/completions", True, 10101, "/v1/chat/completions", "POST"),
        ("chat", "POST", "/v1/chat/completions", False, 10101, "/v1/chat/completions", "POST"),
        ("completion_stream", "POST", "/v1/completions", True, 10101, "/v1/completions", "POST"),
        ("completion", "POST", "/v1/completions", False, 10101, "/v1/completions", "POST"),
        ("do_tokenize", "POST", "/tokenize", False, 10101, "/tokenize", "POST"),
        ("do_detokenize", "POST", "/detokenize", False, 10101, "/detokenize", "POST"),
        ("get_models", "GET", "/v1/models", False, 10101, "/v1/models", "GET"),
    ]
    assert all(c.passthrough for c in chute.cords)
    assert [c.path for c in chute.cords][:2] == ["/chat_stream", "/chat"]
    chat = chute.cords[1]
    assert chat.input_model is ChatCompletionRequest
    assert chat.output_content_type == "application/json" and chute.cords[0].output_content_type == "text/event-stream"
    assert pack.chat is chat and pack.models is chute.cords[-1]
    assert len(chute.startup_hooks) == 1 and len(chute.shutdown_hooks) == 1
    manifest = chute.manifest()
    assert Manifest.model_validate_json(manifest.model_dump_json()) == manifest
    assert manifest.cords[1].input_schema is not None and "messages" in manifest.cords[1].input_schema["properties"]


def test_chat_requests_allow_extra_openai_fields() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}], "stream": True}
    assert ChatCompletionRequest.model_validate(body).model_dump()["tools"] == [{"type": "function"}]
    with pytest.raises(ValueError):
        ChatCompletionRequest.model_validate({"messages": []})


@pytest.mark.parametrize("builder", [build_vllm_chute, build_sglang_chute, build_embedding_chute])
def test_revision_is_required(builder: Any) -> None:
    with pytest.raises(ChuteError, match="needs revision=") as exc:
        builder(username="demo", model_name=MODEL, node_selector=SELECTOR)
    assert exc.value.hint and f"https://huggingface.co/{MODEL}/commits/main" in exc.value.hint
    with pytest.raises(ChuteError, match="invalid revision"):
        builder(username="demo", model_name=MODEL, node_selector=SELECTOR, revision="main; rm -rf /")


@pytest.mark.parametrize(
    ("engine_args", "message"),
    [
        ("--revision main", "may not set --revision"),
        ("--served-model-name other", "may not set --served-model-name"),
        ("--api-key=abc", "may not set --api-key"),
        ("--port 9999", "may not set --port"),
        ("--host 0.0.0.0", "may not set --host"),
        ("--tensor-parallel-size 2 --tp 2", "tensor-parallel size more than once"),
        ("--max-model-len '32768", "cannot be parsed"),
    ],
)
def test_forbidden_engine_args(engine_args: str, message: str) -> None:
    with pytest.raises(ChuteError, match=message):
        build_vllm_chute(
            username="demo", model_name=MODEL, node_selector=SELECTOR, revision=REVISION, engine_args=engine_args
        )


def test_vllm_command() -> None:
    command = vllm_command(MODEL, MODEL, REVISION, "key", 2, ["--max-model-len", "8192"])
    assert command[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    text = " ".join(command)
    assert f"--model {MODEL} --served-model-name {MODEL} --revision {REVISION} --api-key key" in text
    assert "--host 127.0.0.1 --port 10101" in text
    assert command[-5:] == ["--max-model-len", "8192", "--tensor-parallel-size", "2", "--enable-prompt-tokens-details"]
    user_tp = vllm_command(MODEL, MODEL, REVISION, "key", 2, ["--tensor-parallel-size=1"])
    assert user_tp.count("--tensor-parallel-size") == 0 and "--tensor-parallel-size=1" in user_tp


def test_sglang_template() -> None:
    pack = build_sglang_chute(username="demo", model_name=MODEL, node_selector=SELECTOR, revision=REVISION)
    assert [c.name for c in pack.chute.cords] == [
        "chat_stream",
        "chat",
        "completion_stream",
        "completion",
        "get_models",
    ]
    assert pack.chute.image == SGLANG and pack.chute.standard_template == "vllm"
    assert all(c.session_kwargs == {"sglang_passthrough": True} for c in pack.chute.cords)
    command = sglang_command(MODEL, MODEL, REVISION, "key", 4)
    assert command[1:3] == ["-m", "sglang.launch_server"] and command[-2:] == ["--tp", "4"]
    pack.chute.manifest()


def test_embedding_template() -> None:
    pack = build_embedding_chute(
        username="demo", model_name="BAAI/bge-large-en-v1.5", node_selector=SELECTOR, revision=REVISION
    )
    assert cord_table(pack) == [
        ("embed", "POST", "/v1/embeddings", False, 10101, "/v1/embeddings", "POST"),
        ("get_models", "GET", "/v1/models", False, 10101, "/v1/models", "GET"),
    ]
    assert pack.chute.standard_template == "embedding" and pack.chute.image == VLLM
    assert pooling_type_for("BAAI/bge-large-en-v1.5") == "CLS"
    assert pooling_type_for("Alibaba-NLP/gte-Qwen2-7B-instruct") == "LAST"
    assert pooling_type_for("intfloat/multilingual-e5-large") == "MEAN"
    with pytest.raises(ChuteError, match="invalid pooling_type"):
        build_embedding_chute(
            username="demo", model_name="m", node_selector=SELECTOR, revision=REVISION, pooling_type="max"
        )
    pack.chute.manifest()


def test_tei_template() -> None:
    pack = build_tei_chute(username="demo", model_name="BAAI/bge-reranker-large", node_selector=SELECTOR)
    assert cord_table(pack) == [
        ("embed", "POST", "/embed", False, 8881, "/embed", "POST"),
        ("rerank", "POST", "/rerank", False, 8881, "/rerank", "POST"),
        ("predict", "POST", "/predict", False, 8881, "/predict", "POST"),
    ]
    assert pack.chute.standard_template == "tei" and pack.chute.image == TEI and pack.chute.revision is None
    assert tei_command("m", None) == [
        "text-embeddings-router",
        "--model-id",
        "m",
        "--hostname",
        "127.0.0.1",
        "--port",
        "8881",
    ]
    assert tei_command("m", "abc")[-4:] == ["--revision", "abc", "--port", "8881"]
    pack.chute.manifest()


def test_diffusion_template() -> None:
    pack = build_diffusion_chute(
        username="demo",
        name="sdxl",
        model_name_or_url="stabilityai/stable-diffusion-xl-base-1.0",
        node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=24),
    )
    (generate,) = pack.chute.cords
    assert (generate.name, generate.public_api_path, generate.passthrough) == ("generate", "/generate", False)
    assert generate.output_content_type == "image/jpeg"
    assert generate.input_model is GenerationInput and generate.takes_model is True
    assert pack.chute.concurrency == 3 and pack.chute.standard_template == "diffusion"
    assert pack.chute.image == DIFFUSION and pack.generate is generate
    pack.chute.manifest()


def test_diffusion_civitai_urls_and_version() -> None:
    assert civitai_model("https://civitai.com/models/112902/dreamshaper-xl") == ("112902", False)
    assert civitai_model("https://civitai.com/api/download/models/351306") == ("351306", True)
    assert civitai_model("stabilityai/stable-diffusion-xl-base-1.0") is None
    assert civitai_model("https://example.com/models/1") is None
    with pytest.raises(ChuteError, match=r"no civitai\.com model URL"):
        civitai_model("https://civitai.com/images/42")
    with pytest.warns(CompatibilityWarning, match=r"version=.7. picks a civitai\.com model version"):
        build_diffusion_chute(
            username="demo", name="sd", model_name_or_url="org/model", node_selector=NodeSelector(), version="7"
        )
    with pytest.raises(ChuteError, match="model version id"):
        build_diffusion_chute(
            username="demo",
            name="sd",
            model_name_or_url="https://civitai.com/models/1",
            node_selector=NodeSelector(),
            version="latest",
        )


# Engine process helpers, with a stand-in engine (a short Python script) instead of vLLM.


def test_visible_gpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    chute = new_chute(node_selector=NodeSelector(gpu_count=4))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("NVIDIA_VISIBLE_DEVICES", raising=False)
    assert helpers.visible_gpu_count(chute) == 4
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "GPU-a,GPU-b")
    assert helpers.visible_gpu_count(chute) == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert helpers.visible_gpu_count(chute) == 1


@pytest.mark.timeout(30)
async def test_launch_engine_waits_for_readiness_and_stops_the_engine(tmp_path: Path) -> None:
    marker = tmp_path / "ready"
    script = f"import pathlib, time\ntime.sleep(0.3)\npathlib.Path({str(marker)!r}).write_text('up')\ntime.sleep(60)\n"

    async def ready() -> bool:
        return marker.exists()

    process = await helpers.launch_engine([sys.executable, "-c", script], ready, poll_s=0.05)
    assert marker.exists() and process.returncode is None
    await helpers.stop_engine(process, grace_s=5)
    assert process.returncode is not None


@pytest.mark.timeout(30)
async def test_launch_engine_reports_an_engine_that_dies_or_hangs() -> None:
    async def never() -> bool:
        return False

    with pytest.raises(RuntimeError, match="engine exited with status 3 before it was ready"):
        await helpers.launch_engine([sys.executable, "-c", "raise SystemExit(3)"], never, poll_s=0.05)
    with pytest.raises(RuntimeError, match=r"not ready after 0\.3 s"):
        await helpers.launch_engine(
            [sys.executable, "-c", "import time; time.sleep(60)"], never, timeout_s=0.3, poll_s=0.05
        )


@pytest.fixture
async def fake_engine() -> AsyncIterator[tuple[int, list[dict[str, Any]]]]:
    """An OpenAI-style server on a loopback port that records each request."""
    seen: list[dict[str, Any]] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen.append({"auth": request.headers.get("Authorization"), "body": body})
        if not body.get("stream"):
            return web.json_response({"id": "1", "choices": [{"index": 0, "message": {"role": "assistant"}}]})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for n in range(3):
            await response.write(f"data: {json.dumps({'n': n})}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    async def models(request: web.Request) -> web.Response:
        seen.append({"auth": request.headers.get("Authorization"), "body": None})
        return web.json_response({"object": "list", "data": [{"id": MODEL}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port, seen
    finally:
        await runner.cleanup()


@pytest.mark.timeout(30)
async def test_calling_the_engine_from_python_sends_the_passthrough_headers(
    fake_engine: tuple[int, list[dict[str, Any]]],
) -> None:
    port, seen = fake_engine
    chute = new_chute(passthrough_headers={"Authorization": "Bearer engine-key"})
    request = ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}])  # type: ignore[list-item]
    answer = await helpers.call_engine(chute, port, "/v1/chat/completions", request)
    assert answer["id"] == "1"
    chunks = [c async for c in helpers.stream_engine(chute, port, "/v1/chat/completions", {"stream": True})]
    assert chunks == [{"n": 0}, {"n": 1}, {"n": 2}]
    listing = await helpers.call_engine(chute, port, "/v1/models", method="GET")
    assert listing["data"][0]["id"] == MODEL
    assert [s["auth"] for s in seen] == ["Bearer engine-key"] * 3
    assert seen[0]["body"] == {"messages": [{"role": "user", "content": "hi"}]}  # unset fields are not sent
    probe = helpers.http_probe(f"http://127.0.0.1:{port}/v1/models")
    assert await probe() is True
    assert await helpers.http_probe(f"http://127.0.0.1:{port}/missing")() is False


def test_engine_processes_are_stopped_quietly_when_absent() -> None:
    asyncio.run(helpers.stop_engine(None))
