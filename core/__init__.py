"""What the platform's processes share (agent, scheduler, gateway, runtime, devcluster), in one place.

One module per concept: ``backoff`` (retry pacing), ``blocking`` (Consul's and Nomad's blocking-query index
rules), ``health`` (Consul health entries), ``portfile`` (announcing a bound port), ``logs`` (the daemons'
logging set-up), ``server`` (a uvicorn server that stops gracefully on signals), ``errors`` (the hinted error
base that the CLIs and APIs render) and ``settings`` (settings declared once per daemon). None of it is part
of what users import from ``chutes``.
"""
