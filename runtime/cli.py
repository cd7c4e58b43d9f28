"""``chutes run`` and ``python -m chutes.runtime``: one command, two entry points, the same options.

Serve: ``chutes run FILE:ATTR --port N [--host H] [--dev]``. Without FILE:ATTR the chute comes from the
environment of a Nomad task (``chutes.runtime.source``). Run a job instead of serving: ``--job NAME [--input
JSON|@FILE|-] [--output-dir DIR]`` (``--input`` as ``chutes jobs run`` takes it; a plain path to a JSON file
works too; in a cluster the input defaults to ``$NOMAD_TASK_DIR/payload.json``, the output folder to
``$NOMAD_TASK_DIR/outputs``, and the folder is uploaded when ``CHUTES_JOB_RUN_ID`` is set).

Exit codes: 0 served and drained (or the job succeeded); 1 a startup hook failed, the chute could not be
loaded, or the job failed; 2 invalid settings (e.g. no invoke secret without ``--dev``).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from chutes.core import logs
from chutes.runtime.config import SETTINGS

log = logging.getLogger("chutes.runtime")

Ref = Annotated[
    str | None,
    typer.Argument(help="The chute: FILE.py:ATTR or MODULE:ATTR. Omitted in a Nomad task: taken from the environment."),
]


def configure_logging(level: str) -> None:
    logs.configure_logging(level, force=True)


def _help(name: str) -> str:
    # typer renders help with rich, which would take "[env X; default Y]" for markup
    return SETTINGS.by_name[name].text().replace("[", "\\[")


def run(
    ref: Ref = None,
    port: Annotated[int | None, typer.Option(help=_help("port"))] = None,
    host: Annotated[str | None, typer.Option(help=_help("host"))] = None,
    dev: Annotated[bool, typer.Option("--dev", help=_help("dev"))] = False,
    invoke_secret: Annotated[str | None, typer.Option(help=_help("invoke_secret"))] = None,
    cord_timeout: Annotated[float | None, typer.Option(help=_help("cord_timeout"))] = None,
    drain_timeout: Annotated[float | None, typer.Option(help=_help("drain_timeout"))] = None,
    max_body_bytes: Annotated[int | None, typer.Option(help=_help("max_body_bytes"))] = None,
    port_file: Annotated[Path | None, typer.Option(help=_help("port_file"))] = None,
    access_log: Annotated[bool, typer.Option("--access-log", help=_help("access_log"))] = False,
    log_level: Annotated[str, typer.Option(help=_help("log_level"))] = "info",
    job: Annotated[str | None, typer.Option(help=_help("job"))] = None,
    input_value: Annotated[str | None, typer.Option("--input", help=_help("input"))] = None,
    output_dir: Annotated[Path | None, typer.Option(help=_help("output_dir"))] = None,
) -> None:
    """Serve a chute's cords on one instance (or run one of its jobs)."""
    configure_logging(log_level)
    from chutes.runtime.config import ConfigError

    try:
        if job is not None:
            code = _run_job(ref, job, input_value, output_dir)
        else:
            code = _serve(
                ref,
                port=port,
                host=host,
                dev=dev,
                invoke_secret=invoke_secret,
                cord_timeout=cord_timeout,
                drain_timeout=drain_timeout,
                max_body_bytes=max_body_bytes,
                port_file=port_file,
                access_log=access_log,
                log_level=log_level,
            )
    except ConfigError as exc:
        _fail(exc, 2)
    except Exception as exc:
        if not hasattr(exc, "hint"):
            raise
        _fail(exc, 1)
    _exit(code)


def _serve(ref: str | None, **options: Any) -> int:
    from chutes.runtime.config import ClusterEnv, resolve_serve
    from chutes.runtime.server import serve
    from chutes.runtime.source import load_from_environment, load_local

    # Settings first: a missing secret is reported before a bundle is downloaded or user code imported.
    config = resolve_serve(os.environ, **options)
    chute = load_local(ref) if ref else load_from_environment(ClusterEnv.from_environ(os.environ))
    return serve(chute, config)


def _run_job(ref: str | None, name: str, input_value: str | None, output_dir: Path | None) -> int:
    from chutes.runtime.config import ClusterEnv
    from chutes.runtime.jobs import find_job, input_option, read_input, run_job, upload_outputs
    from chutes.runtime.source import load_from_environment, load_local

    env = ClusterEnv.from_environ(os.environ)
    # The input is read first: a mistake in it is reported before the chute's module is imported.
    if input_value is not None:
        payload = input_option(input_value, sys.stdin)
    else:
        payload = read_input(env.task_dir / "payload.json" if env.task_dir is not None else None)
    chute = load_local(ref) if ref else load_from_environment(env)
    job = find_job(chute, name)
    if output_dir is None:
        output_dir = env.task_dir / "outputs" if env.task_dir else Path(tempfile.mkdtemp(prefix=f"chutes-job-{name}-"))
    outcome = run_job(chute, job, payload, output_dir, env.job_run_id)
    log.info("outputs in %s", output_dir)
    if env.job_run_id:
        scheduler_url, token = env.scheduler_url, env.run_token
        if not scheduler_url or not token:
            log.error("CHUTES_JOB_RUN_ID is set but CHUTES_SCHEDULER_URL or CHUTES_RUN_TOKEN is not: not uploading")
            return 1
        upload_outputs(scheduler_url, token, env.job_run_id, output_dir, include_all=job.upload)
    return 0 if outcome.ok else 1


def _fail(exc: Exception, code: int) -> None:
    hint = getattr(exc, "hint", None)
    sys.stderr.write(f"Error: {exc}\n" + (f"Hint: {hint}\n" if hint else ""))
    sys.stderr.flush()
    _exit(code)


def _exit(code: int) -> None:
    """Exit; without waiting for a user thread stuck past its timeout (Python would join it forever)."""
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        stuck = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
        if not stuck:
            raise typer.Exit(code)
        time.sleep(0.05)
    log.warning("exiting with %d thread(s) of user code still running", len(stuck))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    """``python -m chutes.runtime``."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(run)
    app()
