"""`pairshift datasets capture`: golden cases from production traffic (:mod:`pairshift.capture`)."""

from __future__ import annotations

import time

import typer

from pairshift.cli.common import EXIT_FAILED, CLIError, console, emit_json, os_user

app = typer.Typer(help="Golden datasets from production traffic.", no_args_is_help=True)


@app.command("capture")
def capture(
    deployment: str = typer.Argument(..., help="The deployment whose traffic is sampled."),
    sample: float = typer.Option(..., "--sample", help="Share of the control pair's calls kept, in (0, 1]."),
    max_cases: int = typer.Option(..., "--max", help="Cases in the new dataset version."),
    dataset: str | None = typer.Option(None, "--dataset", help="Dataset name; default DEPLOYMENT-captured."),
    timeout_s: float = typer.Option(
        3600.0, "--timeout-s", help="Stop waiting after this long and keep what was captured."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print {capture, dataset_version, cases} as JSON."),
) -> None:
    """Sample real requests of DEPLOYMENT (redacted before storage) into a new dataset version, with the
    control pair's output as each case's reference; waits until --max cases are captured or --timeout-s."""
    from pairshift.capture import CaptureError, captured, finish_capture, start_capture
    from pairshift.registry import open_registry

    registry = open_registry()
    try:
        with registry.session() as s:
            row = start_capture(s, deployment, rate=sample, max_cases=max_cases, by=os_user())
            capture_id = row.id
    except CaptureError as exc:
        raise CLIError(str(exc)) from None
    if not as_json:
        console.print(
            f"capturing {sample:g} of {deployment}'s control calls until {max_cases} cases ({capture_id})"
        )
    deadline = time.monotonic() + timeout_s
    while True:  # the routers write samples on their refresh thread; the registry is the only channel
        with registry.session() as s:
            n = captured(s, capture_id)
        if n >= max_cases or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    try:
        with registry.session() as s:
            version = finish_capture(s, capture_id, dataset)
            out = {"capture": capture_id, "dataset_version": version.id, "cases": version.n_cases}
    except CaptureError as exc:
        raise CLIError(str(exc), EXIT_FAILED) from None
    if as_json:
        emit_json(out)
    else:
        console.print(f"dataset {out['dataset_version']}: {out['cases']} captured cases (redacted)")
