"""Hardening shared by the platform's HTTP servers (scheduler, gateway, runtime): limits at the edge.

- ``limits``: ``EdgeLimits``, the configurable limits (header size and count, request line, timeouts,
  open connections), read from flags and ``CHUTES_*`` environment variables the same way by every daemon;
- ``protocol``: a uvicorn HTTP protocol that enforces them per connection, at the parser, so that a call
  that stays within them costs nothing more than a few attribute stores;
- ``throttle``: ``FailureThrottle``, failed authentications throttled per client address;
- ``strictjson``: JSON nesting depth checked before a body is parsed.
"""
