"""Chute templates: ready-made chutes for common engines (vLLM, SGLang, embeddings, TEI, diffusion).

Each builder returns a ``ChutePack`` whose ``chute`` is deployable as is. Importing a template needs no GPU
library: engines are started (and torch imported) inside startup hooks, on the instance.
"""
