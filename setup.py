"""Maps the top-level folders onto the ``chutes`` namespace (see DESIGN.md, "Components and layout").

Metadata lives in pyproject.toml; this file only computes ``packages`` and ``package_dir`` so that a new
sub-package inside any folder is picked up without editing a list by hand. It also declares the four small C
accelerators of the gateway's per-call work (optional: without a compiler or OpenSSL's headers the install
goes on and the pure-Python forms serve; docs/architecture.md, "Inside the gateway").
"""

from pathlib import Path

from setuptools import Extension, setup

ROOT = Path(__file__).parent
FOLDERS = {
    "chutes": "sdk",
    "chutes.core": "core",
    "chutes.runtime": "runtime",
    "chutes.agent": "agent",
    "chutes.scheduler": "scheduler",
    "chutes.gateway": "gateway",
    "chutes.devcluster": "devcluster",
}


def _packages() -> tuple[list[str], dict[str, str]]:
    packages: list[str] = []
    package_dir: dict[str, str] = {}
    for name, folder in FOLDERS.items():
        package_dir[name] = folder
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(ROOT / folder)
            if any(part.startswith((".", "__")) for part in rel.parts):
                continue
            packages.append(".".join((name, *rel.parts)) if rel.parts else name)
    return packages, package_dir


EXTENSIONS = [
    Extension("chutes.core._hmac", ["core/_hmac.c"], libraries=["crypto"], optional=True),
    Extension("chutes.core._unique", ["core/_unique.c"], optional=True),
    Extension("chutes.gateway._records", ["gateway/_records.c"], optional=True),
    Extension("chutes.gateway._headers", ["gateway/_headers.c"], optional=True),
]

PACKAGES, PACKAGE_DIR = _packages()
setup(packages=PACKAGES, package_dir=PACKAGE_DIR, ext_modules=EXTENSIONS)
