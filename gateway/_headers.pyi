from collections.abc import Set

def upstream_request(
    request_line: bytes,
    headers: list[tuple[bytes, bytes]],
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
    headers: list[tuple[bytes, bytes]], drop: Set[bytes], invocation_id: bytes, /
) -> bytes | None: ...
