import subprocess
import sys

# Every SDK module must import first, on its own: an import cycle shows up only for some import orders.
MODULES = [
    "chutes.manifest",
    "chutes.chute",
    "chutes.chute.node_selector",
    "chutes.chute.base",
    "chutes.chute.cord",
    "chutes.chute.job",
    "chutes.chute.errors",
    "chutes.schema",
    "chutes.image",
    "chutes.image.context",
    "chutes.image.standard.vllm",
    "chutes.loader",
    "chutes.bundle",
    "chutes.chute.template.vllm",
    "chutes.chute.template.sglang",
    "chutes.chute.template.embedding",
    "chutes.chute.template.tei",
    "chutes.chute.template.diffusion",
    "chutes.commands.inspect",
    "chutes.commands.build",
]

SCRIPT = """
import importlib, sys
failures = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "chutes" or m.startswith("chutes.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failures.append(f"{name}: {type(exc).__name__}: {exc}")
print("\\n".join(failures))
"""


def test_each_module_imports_first() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, *MODULES], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == ""


def test_chute_package_exports() -> None:
    import chutes.chute as package

    for name in package.__all__:
        assert getattr(package, name).__name__ == name
