"""``build_tei_chute``: embeddings, reranking and classification served by Hugging Face's
text-embeddings-inference (``text-embeddings-router``) on 127.0.0.1:8881, through passthrough cords.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from chutes.chute.base import Chute, ChutePack
from chutes.chute.node_selector import NodeSelector
from chutes.chute.template import helpers
from chutes.chute.template._engine import passthrough, serve_engine
from chutes.image import Image
from chutes.image.standard import TEI

TEI_PORT = 8881


class EmbedRequest(BaseModel):
    inputs: str | list[str] = Field(description="Text or texts to embed")
    normalize: bool = True
    truncate: bool = False


class RerankRequest(BaseModel):
    query: str = Field(description="Query to rank the texts against")
    texts: list[str] = Field(min_length=1, description="Texts to rank")
    raw_scores: bool = False
    return_text: bool = False


class RankResult(BaseModel):
    index: int
    score: float
    text: str | None = None


class PredictRequest(BaseModel):
    inputs: str | list[str] | list[list[str]] = Field(description="Text(s) to classify")
    raw_scores: bool = False


class Prediction(BaseModel):
    label: str
    score: float


class TEIChute(ChutePack):
    embed: Callable[..., Any]
    rerank: Callable[..., Any]
    predict: Callable[..., Any]


def tei_command(model_name: str, revision: str | None, port: int = TEI_PORT) -> list[str]:
    """The command line that starts text-embeddings-inference for a chute."""
    command = ["text-embeddings-router", "--model-id", model_name, "--hostname", helpers.ENGINE_HOST]
    if revision:
        command += ["--revision", revision]
    return [*command, "--port", str(port)]


def build_tei_chute(
    username: str,
    model_name: str,
    node_selector: NodeSelector,
    image: str | Image = TEI,
    tagline: str = "",
    readme: str = "",
    concurrency: int = 32,
    revision: str | None = None,
    max_instances: int = 1,
    scaling_threshold: float = 0.75,
    shutdown_after_seconds: int = 300,
) -> TEIChute:
    """A chute named after ``model_name`` served by text-embeddings-inference (revision optional)."""
    if revision is not None:
        helpers.require_revision("build_tei_chute", model_name, revision)
    chute = Chute(
        username=username,
        name=model_name,
        image=image,
        tagline=tagline,
        readme=readme,
        node_selector=node_selector,
        concurrency=concurrency,
        standard_template="tei",
        revision=revision,
        max_instances=max_instances,
        scaling_threshold=scaling_threshold,
        shutdown_after_seconds=shutdown_after_seconds,
    )
    serve_engine(
        chute, "tei", lambda _chute, _key: tei_command(model_name, revision), TEI_PORT, "/health", api_key=False
    )

    @chute.cord(**passthrough(TEI_PORT, "/embed", input_schema=EmbedRequest))
    async def embed(self: Chute, data: EmbedRequest) -> list[list[float]]:
        result: list[list[float]] = await helpers.call_engine(self, TEI_PORT, "/embed", data)
        return result

    @chute.cord(**passthrough(TEI_PORT, "/rerank", input_schema=RerankRequest))
    async def rerank(self: Chute, data: RerankRequest) -> list[RankResult]:
        result: list[RankResult] = await helpers.call_engine(self, TEI_PORT, "/rerank", data)
        return result

    @chute.cord(**passthrough(TEI_PORT, "/predict", input_schema=PredictRequest))
    async def predict(self: Chute, data: PredictRequest) -> list[Prediction] | list[list[Prediction]]:
        result: list[Prediction] | list[list[Prediction]] = await helpers.call_engine(self, TEI_PORT, "/predict", data)
        return result

    return TEIChute(chute=chute, embed=embed, rerank=rerank, predict=predict)
