"""Job runs: ``chutes jobs run CHUTE JOB [--input JSON] [--wait]`` and ``chutes jobs get RUN_ID``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from chutes.cli import app
from chutes.commands._common import (
    ApiKey,
    ApiUrl,
    AsJson,
    cell,
    client,
    console,
    parse_json_option,
    pick,
    print_json,
)

jobs_app = typer.Typer(name="jobs", help="Run a chute's job methods and read their results.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")

# Statuses after which a run changes no more.
FINAL = frozenset({"succeeded", "success", "completed", "complete", "failed", "error", "timeout", "cancelled", "lost"})


def _show(run: dict[str, Any]) -> None:
    run_id = pick(run, "run_id", "id")
    console.print(f"run     {run_id}")
    console.print(f"job     {cell(run.get('job_name'))} of chute {cell(run.get('chute_name') or run.get('chute_id'))}")
    console.print(f"status  {cell(run.get('status'))}")
    if run.get("error"):
        console.print(f"error   {cell(run.get('error'))}", markup=False)
    if run.get("result") is not None:
        console.print(f"result  {json.dumps(run['result'])}", markup=False, highlight=False)
    outputs = [o for o in run.get("outputs") or [] if isinstance(o, dict)]
    for output in outputs:
        console.print(f"output  {cell(output.get('name'))} ({output.get('size', '?')} bytes)", markup=False)
    if outputs:
        console.print(f"[dim]download one: chutes jobs output {run_id} {outputs[0].get('name')} -o FILE[/dim]")


@jobs_app.command("run")
def run(
    chute: Annotated[str, typer.Argument(help="The chute's name (or id).")],
    job: Annotated[str, typer.Argument(help="The job method's name.")],
    input_: Annotated[
        str | None, typer.Option("--input", "-d", help="Input as JSON, @file.json, or - for stdin.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until the run ends.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 600.0,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Dispatch one run of a job; with --wait (the default) follow it to the end; failure exits non-zero."""
    payload = parse_json_option(input_, "--input")
    with client(api_url, api_key) as c:
        answer = c.run_job(chute, job, payload)
        run_id = str(pick(answer, "run_id", "id"))
        if not as_json:
            console.print(f"dispatched run {run_id}")
        deadline = time.monotonic() + timeout
        while wait and str(answer.get("status", "")).lower() not in FINAL:
            if time.monotonic() > deadline:
                raise typer.Exit(_timeout(run_id))
            time.sleep(1.0)
            answer = c.get_job(run_id)
    if as_json:
        print_json(answer)
    else:
        _show(answer)
    if wait and str(answer.get("status", "")).lower() not in {"succeeded", "success", "completed", "complete"}:
        raise typer.Exit(1)


def _timeout(run_id: str) -> int:
    console.print(f"still running after the timeout; check later with `chutes jobs get {run_id}`")
    return 1


@jobs_app.command("output")
def output(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    name: Annotated[str, typer.Argument(help="The output file's name, as `chutes jobs get` lists it.")],
    out: Annotated[Path | None, typer.Option("--output", "-o", help="Write here (default: stdout).")] = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Download one output file of a job run."""
    with client(api_url, api_key) as c:
        data = c.job_output(run_id, name)
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        out.write_bytes(data)
        console.print(f"wrote {out} ({len(data)} bytes)")


@jobs_app.command("get")
def get(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Show a job run: status, error, outputs."""
    with client(api_url, api_key) as c:
        answer = c.get_job(run_id)
    if as_json:
        print_json(answer)
    else:
        _show(answer)
