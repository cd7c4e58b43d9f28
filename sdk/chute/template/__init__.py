"""Chute templates: ready-made chutes for common engines (vLLM, SGLang, embeddings, TEI, diffusion).

Each builder returns a ``ChutePack`` whose ``chute`` is deployable as is. Importing a template needs no GPU
library: engines are started (and torch imported) inside startup hooks, on the instance. The builders are also
importable from here, as chute files written for Chutes do: ``from chutes.chute.template import build_vllm_chute``
(each is loaded on first use).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chutes.chute.template.diffusion import build_diffusion_chute
    from chutes.chute.template.embedding import build_embedding_chute
    from chutes.chute.template.sglang import build_sglang_chute
    from chutes.chute.template.tei import build_tei_chute
    from chutes.chute.template.vllm import build_vllm_chute

_BUILDERS = {
    "build_diffusion_chute": "chutes.chute.template.diffusion",
    "build_embedding_chute": "chutes.chute.template.embedding",
    "build_sglang_chute": "chutes.chute.template.sglang",
    "build_tei_chute": "chutes.chute.template.tei",
    "build_vllm_chute": "chutes.chute.template.vllm",
}

__all__ = [
    "build_diffusion_chute",
    "build_embedding_chute",
    "build_sglang_chute",
    "build_tei_chute",
    "build_vllm_chute",
]


def __getattr__(name: str) -> Any:
    module = _BUILDERS.get(name)
    if module is None:
        raise AttributeError(f"module 'chutes.chute.template' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
