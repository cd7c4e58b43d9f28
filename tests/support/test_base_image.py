"""What ``make base-image`` promises of ``localhost/chutes-base:bookworm``: Python 3.11, and a plain ``pip install``
in a RUN step (no flag) installs into the interpreter that ``python3 -m chutes.runtime`` runs on.

The package installed is a wheel this test writes (no index needed: Debian's PEP 668 marker refuses a local
wheel just as it refuses a download, so the marker's absence is what is tested).
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import uuid
import zipfile
from pathlib import Path

import pytest

from tests.support.containers import BASE_IMAGE, CONTAINERS_CONF, require_containers

pytestmark = [pytest.mark.containers, pytest.mark.slow, pytest.mark.timeout(300)]

PACKAGE = "chutes_base_probe"
WHEEL = f"{PACKAGE}-1.0-py3-none-any.whl"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def write_wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel of one module that says where it was imported from."""
    files = {
        f"{PACKAGE}/__init__.py": b"import sys\nWHERE = (__file__, sys.executable)\n",
        f"{PACKAGE}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: 1.0\n".encode(),
        f"{PACKAGE}-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = f"{PACKAGE}-1.0.dist-info/RECORD"
    lines = [_record_line(name, data) for name, data in files.items()] + [f"{record},,"]
    path = folder / WHEEL
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(record, "\n".join(lines) + "\n")
    return path


def test_a_plain_pip_install_in_a_run_step_reaches_the_runtimes_interpreter(tmp_path: Path) -> None:
    require_containers()
    config = json.loads(subprocess.run(["podman", "image", "inspect", BASE_IMAGE], capture_output=True,
                                       text=True, check=True).stdout)[0]["Config"]  # fmt: skip
    assert config["Cmd"] == ["python3"]
    assert "PIP_BREAK_SYSTEM_PACKAGES=1" in config["Env"] and "LANG=C.UTF-8" in config["Env"]

    write_wheel(tmp_path)
    marker = "/usr/lib/python3.11/EXTERNALLY-MANAGED"
    (tmp_path / "Containerfile").write_text(
        f"FROM {BASE_IMAGE}\nCOPY {WHEEL} /tmp/\n"
        f"RUN test ! -e {marker}\n"  # Debian's PEP 668 marker is gone...
        # ...and when an `apt-get upgrade` in a user's image brings it back, the image's setting still lets pip in.
        f"RUN printf '[externally-managed]\\nError=restored by an upgrade\\n' > {marker} && "
        f"pip install --no-index /tmp/{WHEEL} && rm /tmp/{WHEEL}\n"
    )
    tag = f"localhost/chutes-test-basecheck:{uuid.uuid4().hex[:12]}"
    build = subprocess.run(
        ["buildah", "bud", "-q", "--layers=false", "--force-rm", "-f", str(tmp_path / "Containerfile"), "-t", tag,
         str(tmp_path)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    try:
        assert build.returncode == 0, build.stderr[-3000:]
        probe = "import chutes_base_probe as p, sys, json; print(json.dumps([*p.WHERE, list(sys.version_info[:2])]))"
        ran = subprocess.run(
            ["podman", "run", "--rm", "--network=none", tag, "python3", "-c", probe],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        module, executable, version = json.loads(ran.stdout)
        assert module == f"/usr/local/lib/python3.11/dist-packages/{PACKAGE}/__init__.py"
        assert executable == "/usr/bin/python3" and version == [3, 11]  # what `python3 -m chutes.runtime` runs
    finally:
        subprocess.run(["podman", "rmi", "--force", tag], capture_output=True, timeout=120)


def test_the_settings_file_is_what_podman_needs_here() -> None:
    """scripts/containers.conf is the one copy of the settings; these are the two these hosts need."""
    text = CONTAINERS_CONF.read_text()
    assert 'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]' in text
    assert '[engine]\nruntime = "runc"' in text
