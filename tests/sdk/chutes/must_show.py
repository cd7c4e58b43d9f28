"""The issue's must-show chute: two cords (one streaming, one with a pydantic input_schema) on 2 GPUs."""

from collections.abc import AsyncIterator

from pydantic import BaseModel, Field

from chutes.chute import Chute, NodeSelector

chute = Chute(
    username="demo",
    name="two-cords",
    image="python:3.12-slim",
    node_selector=NodeSelector(gpu_count=2, min_vram_gb_per_gpu=80, include=["a100", "h100", "l40s"]),
)


class Question(BaseModel):
    text: str = Field(min_length=1)
    max_words: int = Field(20, ge=1, le=200)


@chute.cord(public_api_path="/ask", input_schema=Question)
async def ask(self: Chute, question: Question) -> dict[str, str]:
    return {"answer": " ".join(question.text.split()[: question.max_words])}


@chute.cord(public_api_path="/words")
async def words(self: Chute, text: str) -> AsyncIterator[str]:
    for word in text.split():
        yield word
