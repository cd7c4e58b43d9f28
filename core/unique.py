"""Unique random labels (signature nonces, invocation ids) without a system call each.

``os.urandom`` is a ``getrandom`` system call: on the gateway's hot path, two per call (a nonce and an
invocation id) were a measurable share of its CPU time. These values must be unique, not secret: the HMAC
secret, not the nonce, stops forged signatures, and an invocation id is a label (the scheduler deduplicates
metering records by it), never a credential. So they come from a generator seeded once from ``os.urandom``
(and again in a forked child, so that workers made by ``fork`` never share a sequence): collisions are as
unlikely as with ``os.urandom`` (the birthday bound of the width), and, unlike a counter, the values tell an
observer nothing about how many calls the gateway serves. They are predictable to whoever has seen a few
hundred of them, which is why nothing may use them as secrets.
"""

from __future__ import annotations

import os
import random


def label_source() -> random.Random:
    """A generator for such labels: seeded from ``os.urandom`` now, and again in a child after ``fork``.
    Draw with its ``getrandbits`` (a C call: kept as a bound method on hot paths)."""
    rng = random.Random()  # seeded from os.urandom
    os.register_at_fork(after_in_child=rng.seed)
    return rng
