def format_record(
    invocation_id: str,
    middle: bytes,
    status: int,
    duration_us: int,
    bytes_in: int,
    bytes_out: int,
    started_us: int,
    /,
) -> bytes | None: ...
