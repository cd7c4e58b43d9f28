"""Every ``CHUTES_*`` variable that a process reads is declared once (``chutes.core.settings``) and documented.

The tree is searched for the names themselves: once a variable is declared, its name is written in the
declaration and read through it, so a name found anywhere else in the code is either a variable that some
process reads without declaring it, or one of the few set for a child (listed below, each with the reason).
"""

from __future__ import annotations

import re
from pathlib import Path

from chutes.core import configdocs

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("sdk", "core", "runtime", "agent", "scheduler", "gateway", "devcluster")
#: Other files that processes read variables in (Nomad job specs set them for the daemons; scripts read some).
OTHER = (*sorted((ROOT / "jobs_hcl").glob("*.hcl")), *sorted((ROOT / "scripts").glob("*.sh")))
NAME = re.compile(r"\bCHUTES_[A-Z0-9_]*[A-Z0-9]\b(?!_)")

#: Set for a child process, not read from the environment by any of ours (name → who sets it, for whom).
SET_FOR_CHILDREN = {
    # the image build job's task (scheduler/images/build.py renders it; the buildah script reads them)
    "CHUTES_BUILD_CONTEXT_URL": "build job → its script",
    "CHUTES_BUILD_DIGEST": "build job → its script",
    "CHUTES_BUILD_TOKEN": "build job → its script",
    "CHUTES_IMAGE_TAG": "build job → its script",
    "CHUTES_REGISTRY_AUTH": "build job → its script",
    # the runtime → a job's user code (runtime/jobs.py), like TMPDIR
    "CHUTES_JOB_OUTPUT_DIR": "runtime → the job's code",
}

#: Read by every daemon before its settings (core/envfile.py): the file the secrets come from.
READ_BEFORE_SETTINGS = {"CHUTES_ENV_FILE"}

#: Read by the test suite (docs/configuration.md, "The test suite"); found in tests/ and benchmarks/ by READ.
TEST_VARIABLES = {
    "CHUTES_REQUIRE_CONTAINERS",
    "CHUTES_TEST_POSTGRES_URL",
    "CHUTES_NOMAD_OPENAPI",
    "CHUTES_TEST_CHROMIUM",
    "CHUTES_DOCS_SCREENSHOTS",
    "CHUTES_PURE_PYTHON",
}
#: A read in a test or a benchmark (where CHUTES_* names are also made up as data, so only reads count).
READ = re.compile(r'(?:environ\.get\(|getenv\(|environ\[|_VAR = )\s*"(CHUTES_[A-Z0-9_]*[A-Z0-9])"')

#: Read by a shell script (documented in its own table of docs/configuration.md).
SCRIPT_VARIABLES = {"CHUTES_BASE_IMAGE", "CHUTES_BASE_IMAGE_REBUILD", "CHUTES_DEBIAN_MIRROR"}


def declared() -> set[str]:
    names: set[str] = set()
    for prog in configdocs.TABLES:
        for s in configdocs.settings_of(prog):
            names.update(n for n in (s.env, *s.old_env) if n)
    return names


def names_in_code() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    paths = [path for package in PACKAGES for path in (ROOT / package).rglob("*.py")]
    for path in (*paths, *OTHER):
        for name in NAME.findall(path.read_text()):
            found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_chutes_variable_in_the_code_is_declared() -> None:
    known = declared() | set(SET_FOR_CHILDREN) | READ_BEFORE_SETTINGS | SCRIPT_VARIABLES
    missing = {name: sorted(paths) for name, paths in names_in_code().items() if name not in known}
    assert not missing, f"declare these in a daemon's Settings (chutes.core.settings), or list why not: {missing}"


def reads_in_tests() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (*(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")):
        if path.resolve() != Path(__file__).resolve():
            for name in READ.findall(path.read_text()):
                found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_chutes_variable_the_tests_read_is_declared_or_a_test_variable() -> None:
    known = declared() | TEST_VARIABLES
    missing = {name: sorted(paths) for name, paths in reads_in_tests().items() if name not in known}
    assert not missing, f"add these to TEST_VARIABLES and docs/configuration.md, 'The test suite': {missing}"
    assert set(reads_in_tests()) >= TEST_VARIABLES, "a test variable no test reads any more"


def test_every_declared_variable_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    everything = declared() | READ_BEFORE_SETTINGS | SCRIPT_VARIABLES | TEST_VARIABLES
    undocumented = sorted(n for n in everything if f"`{n}" not in doc)
    assert not undocumented, f"docs/configuration.md does not name: {undocumented}"


def test_the_lists_hold_no_stale_names() -> None:
    in_code = names_in_code()
    assert not [n for n in (*SET_FOR_CHILDREN, *READ_BEFORE_SETTINGS, *SCRIPT_VARIABLES) if n not in in_code]
    assert not set(SET_FOR_CHILDREN) & declared()


def test_the_check_finds_an_undeclared_read() -> None:
    assert NAME.findall('os.environ.get("CHUTES_NEW_KNOB")  # and CHUTES_INSTANCE_TOKEN_<id>') == ["CHUTES_NEW_KNOB"]
    assert "CHUTES_NEW_KNOB" not in declared()
