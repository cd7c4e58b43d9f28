"""``build_diffusion_chute``: text-to-image with a diffusers pipeline, one ``generate`` cord returning a JPEG.

torch and diffusers are imported inside the startup hook, so the template loads anywhere; the pipeline runs
in the chute's own process (no engine server), one generation at a time per pipeline.

``model_name_or_url`` is a Hugging Face model, a URL of one ``.safetensors`` file, or a civitai.com model page;
for civitai, ``version=`` picks the model version (else the latest), as in Chutes: the file is downloaded once
into ``$CIVITAI_HOME`` (default ``~/.cache/civitai``) by the startup hook.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import os
import re
import threading
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
from fastapi import Response
from pydantic import BaseModel, Field

from chutes.chute.base import Chute, ChutePack
from chutes.chute.errors import ChuteError, CompatibilityWarning
from chutes.chute.node_selector import NodeSelector
from chutes.chute.template import helpers
from chutes.image import Image
from chutes.image.standard import DIFFUSION


class GenerationInput(BaseModel):
    prompt: str = Field(min_length=1, max_length=4000)
    negative_prompt: str = ""
    height: int = Field(default=1024, ge=128, le=2048)
    width: int = Field(default=1024, ge=128, le=2048)
    num_inference_steps: int = Field(default=25, ge=1, le=50)
    guidance_scale: float = Field(default=7.5, ge=1.0, le=20.0)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)


class MinifiedGenerationInput(BaseModel):
    """The smallest input worth showing in examples (the cord's ``minimal_input_schema``)."""

    prompt: str = "a beautiful mountain landscape"


CIVITAI_DOWNLOAD = "https://civitai.com/api/download/models/{version}?type=Model&format=SafeTensor"
_CIVITAI_PATH = re.compile(r"^(?P<prefix>.*)/models/(?P<model>[0-9]+)(?:/.*)?$")


def civitai_model(url: str) -> tuple[str, bool] | None:
    """(model or version id, whether the URL is already a download URL) of a civitai.com URL; None otherwise."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or parsed.hostname not in ("civitai.com", "www.civitai.com"):
        return None
    match = _CIVITAI_PATH.match(parsed.path.rstrip("/"))
    if match is None:
        raise ChuteError(f"{url!r} is no civitai.com model URL", hint="use https://civitai.com/models/<id>")
    return match["model"], match["prefix"].lower().endswith("download")


def civitai_file(url: str, version: str | None) -> str:
    """Download a civitai.com model file once (the given or the latest version) and return its path (blocking:
    the startup hook runs it in a thread)."""
    found = civitai_model(url)
    assert found is not None
    model_id, is_download = found
    home = Path(os.environ.get("CIVITAI_HOME") or Path.home() / ".cache" / "civitai")
    home.mkdir(parents=True, exist_ok=True)
    with httpx.Client(timeout=httpx.Timeout(600.0, connect=30.0), follow_redirects=True) as client:
        if version is None and not is_download:
            info = client.get(f"https://civitai.com/api/v1/models/{model_id}").raise_for_status().json()
            version = str(info["modelVersions"][0]["id"])
        target = home / f"{model_id}-{version or 'download'}.safetensors"
        if not target.exists():
            partial = target.with_suffix(".part")
            with client.stream("GET", CIVITAI_DOWNLOAD.format(version=version or model_id)) as response:
                response.raise_for_status()
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
            partial.replace(target)
    return str(target)


class DiffusionChute(ChutePack):
    generate: Callable[..., Any]


def build_diffusion_chute(
    username: str,
    name: str,
    model_name_or_url: str,
    node_selector: NodeSelector,
    image: str | Image = DIFFUSION,
    tagline: str = "",
    readme: str = "",
    concurrency: int = 3,
    revision: str | None = None,
    xl: bool = True,
    pipeline_args: dict[str, Any] | None = None,
    max_instances: int = 1,
    scaling_threshold: float = 0.75,
    shutdown_after_seconds: int = 300,
    version: str | None = None,
    tee: bool = False,
) -> DiffusionChute:
    """A chute ``name`` generating images with ``model_name_or_url`` (a Hugging Face id, a file URL or a
    civitai.com model, whose ``version`` may be given)."""
    if not isinstance(model_name_or_url, str) or not model_name_or_url.strip():
        raise ChuteError("model_name_or_url must name a Hugging Face model or a .safetensors URL")
    civitai = civitai_model(model_name_or_url)
    if version is not None:
        version = str(version)
        if civitai is None:
            warnings.warn(
                f"version={version!r} picks a civitai.com model version; {model_name_or_url!r} is none: ignored",
                CompatibilityWarning,
                stacklevel=2,
            )
            version = None
        elif not version.isdigit():
            raise ChuteError(f"version={version!r} must be a civitai.com model version id (digits)")
    if revision is not None:
        helpers.require_revision("build_diffusion_chute", model_name_or_url, revision)
    extra_args = dict(pipeline_args or {})
    chute = Chute(
        username=username,
        name=name,
        image=image,
        tagline=tagline,
        readme=readme,
        node_selector=node_selector,
        concurrency=concurrency,
        standard_template="diffusion",
        revision=revision,
        max_instances=max_instances,
        scaling_threshold=scaling_threshold,
        shutdown_after_seconds=shutdown_after_seconds,
        tee=tee,
    )
    # The pipeline and torch, once loaded; one generation at a time per pipeline.
    state: dict[str, Any] = {}
    lock = threading.Lock()

    @chute.on_startup()
    async def load_pipeline(self: Chute) -> None:
        # Imported here, on the instance: the template itself must load without torch or a GPU.
        torch = importlib.import_module("torch")
        diffusers = importlib.import_module("diffusers")
        pipeline_class = diffusers.StableDiffusionXLPipeline if xl else diffusers.StableDiffusionPipeline
        if civitai is not None:
            path = await asyncio.to_thread(civitai_file, model_name_or_url, version)
            pipeline = pipeline_class.from_single_file(path, torch_dtype=torch.float16, **extra_args)
        elif model_name_or_url.startswith(("http://", "https://")):
            pipeline = pipeline_class.from_single_file(model_name_or_url, torch_dtype=torch.float16, **extra_args)
        else:
            if revision:
                extra_args.setdefault("revision", revision)
            pipeline = pipeline_class.from_pretrained(model_name_or_url, torch_dtype=torch.float16, **extra_args)
        state.update(torch=torch, pipeline=pipeline.to("cuda"))

    @chute.cord(
        public_api_path="/generate",
        input_schema=GenerationInput,
        minimal_input_schema=MinifiedGenerationInput,
        output_content_type="image/jpeg",
    )
    def generate(self: Chute, params: GenerationInput) -> Response:
        """Generate one image (sync: the runtime runs it in a worker thread)."""
        torch, pipeline = state["torch"], state["pipeline"]
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device="cuda").manual_seed(params.seed)
        with lock, torch.inference_mode():
            result = pipeline(
                prompt=params.prompt,
                negative_prompt=params.negative_prompt,
                height=params.height,
                width=params.width,
                num_inference_steps=params.num_inference_steps,
                guidance_scale=params.guidance_scale,
                generator=generator,
            )
        buffer = io.BytesIO()
        result.images[0].save(buffer, format="JPEG", quality=85)
        return Response(
            content=buffer.getvalue(),
            media_type="image/jpeg",
            headers={"Content-Disposition": f'attachment; filename="{uuid.uuid4()}.jpg"'},
        )

    return DiffusionChute(chute=chute, generate=generate)
