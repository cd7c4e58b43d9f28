from collections.abc import Iterable, Set

# Each answers None for what it leaves to the Python form (headers that are not a list of byte pairs too).
def upstream_request(
    request_line: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    drop: Set[bytes],
    client_ip: bytes | None,
    host: bytes,
    scheme: bytes,
    invocation_id: bytes,
    signature: bytes,
    body: bytes,
    /,
) -> bytes | None: ...
def client_response_head(
    headers: Iterable[tuple[bytes, bytes]], drop: Set[bytes], invocation_id: bytes, /
) -> bytes | None: ...
