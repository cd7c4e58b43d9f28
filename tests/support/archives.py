"""Hand-made build-context archives for the tests of what a context may hold (both sides check them)."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Sequence

Entry = tarfile.TarInfo | tuple[str, bytes]


def tar_gz(entries: Sequence[Entry]) -> bytes:
    """A gzipped tar of ``entries``: a ``TarInfo`` as it is (a link, a device), a (name, bytes) as a file."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                tar.addfile(info, io.BytesIO(entry[1]))
    return gzip.compress(buf.getvalue())
