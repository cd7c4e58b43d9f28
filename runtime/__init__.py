"""chutes.runtime: what runs inside every instance; it loads one chute and serves it (DESIGN.md).

``chutes run FILE:ATTR --port N [--host H] [--dev]`` or, in a Nomad task, ``python -m chutes.runtime`` with the
chute taken from the environment. Modules, pure core first:

- ``config``: settings from options and environment; ``signatures``: HMAC check plus replay cache;
  ``limiter``: the concurrency limit; ``lifecycle``: starting → ready → draining → stopped; ``metrics``:
  Prometheus; ``sse``: stream framing; ``routes``: the routing table; ``invoke``: calling user code.
- ``app``: the ASGI application (health, signatures, limits, cords, streams); ``passthrough``: forwarding to
  an engine beside the runtime; ``server``: uvicorn with draining on SIGTERM; ``source``: FILE:ATTR or the
  bundle; ``jobs``: running one job; ``cli``: the command shared by ``chutes run`` and ``python -m``.

Nothing is imported here, so that ``chutes`` commands other than ``run`` do not load uvicorn.
"""
