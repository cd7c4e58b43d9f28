"""``build_diffusion_chute``: text-to-image with a diffusers pipeline, one ``generate`` cord returning a JPEG.

torch and diffusers are imported inside the startup hook, so the template loads anywhere; the pipeline runs
in the chute's own process (no engine server), one generation at a time per pipeline.
"""

from __future__ import annotations

import importlib
import io
import threading
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import Response
from pydantic import BaseModel, Field

from chutes.chute.base import Chute, ChutePack
from chutes.chute.errors import ChuteError
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
) -> DiffusionChute:
    """A chute ``name`` generating images with ``model_name_or_url`` (a Hugging Face id or a file URL)."""
    if not isinstance(model_name_or_url, str) or not model_name_or_url.strip():
        raise ChuteError("model_name_or_url must name a Hugging Face model or a .safetensors URL")
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
        if model_name_or_url.startswith(("http://", "https://")):
            pipeline = pipeline_class.from_single_file(model_name_or_url, torch_dtype=torch.float16, **extra_args)
        else:
            if revision:
                extra_args.setdefault("revision", revision)
            pipeline = pipeline_class.from_pretrained(model_name_or_url, torch_dtype=torch.float16, **extra_args)
        state.update(torch=torch, pipeline=pipeline.to("cuda"))

    @chute.cord(public_api_path="/generate", input_schema=GenerationInput, output_content_type="image/jpeg")
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
