"""``streamlog up APP.toml``: start every stage of a pipeline file as supervised processes."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from streamlog.errors import StreamlogError

from .app import app
from .common import PROG, UrlOption, VerboseOption, duration, examples, global_settings
from .output import plural


class AppFailedError(StreamlogError):
    """A stage kept crashing (exit 1) or could not start as configured (exit 2)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def _describe(stage) -> str:
    if stage.kind == "command":
        return "command " + " ".join(stage.runs)
    if stage.kind == "predict":
        model = stage.runs.get("name") or stage.runs.get("model")
        what = f"predict with {model} of {stage.runs['stream']}/{stage.runs['group']}"
    else:
        what = f"{stage.kind} {stage.runs}"
    window = ", ".join(f"{k}={v}" for k, v in stage.window.items()) or "size=1"
    sink = f" → {stage.options['sink']}" if "sink" in stage.options else ""
    replicas = f", {stage.replicas} replicas" if stage.replicas > 1 else ""
    return f"{what} on {stage.stream} ({window}; group {stage.group}{replicas}){sink}"


@app.command("up", epilog=examples(
    "streamlog up app.toml",
    "streamlog up app.toml --check",
    "streamlog up app.toml --stage trainer --stage predictor    # on another machine, same database",
    "streamlog up examples/sensors/app.toml --url sqlite:///demo.db --until-idle 2",
    note="Every stage runs in its own process (replicas: several); a stage that crashes is "
         "restarted with backoff, and one that keeps crashing stops the app (exit 1). Ctrl-C or "
         "SIGTERM stops every stage after its current window (exit 0). The file format: docs/apps.md.",
))
def up_command(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(metavar="APP.toml", show_default=False,
                                        help="The pipeline file: one [stages.NAME] table per stage.")],
    stage: Annotated[Optional[list[str]], typer.Option(
        "--stage", metavar="NAME", show_default=False,
        help="Run only this stage (repeatable); the others run elsewhere against the same database.")] = None,
    check: Annotated[bool, typer.Option(
        "--check", help="Validate the file, list its stages and exit (nothing is started).")] = False,
    until_idle: Annotated[Optional[float], typer.Option(
        "--until-idle", min=0.0, callback=duration, metavar="SECONDS", show_default=False,
        help="Stop by itself once every command stage has finished and nothing was pending "
             "for SECONDS (demos, CI).")] = None,
    status_every: Annotated[float, typer.Option(
        "--status-every", min=0.0, callback=duration, metavar="SECONDS",
        help="Off a terminal: print the status table every SECONDS (0: never). On a terminal "
             "the table is live.")] = 5.0,
    verbose: VerboseOption = False,
    url: UrlOption = None,
) -> None:
    """Start every stage of a pipeline file and keep them running.

    Validates the whole file first (errors name the line); then starts one process per
    stage replica, restarts crashed ones with backoff, and shows a status table (stage,
    pid, windows/s, pending, restarts, last error). At the end, prints what each stage
    did on stdout.
    """
    from streamlog.apps.runner import Runner
    from streamlog.apps.spec import load_app
    from streamlog.config import mask_url

    settings = global_settings(ctx, url, None, verbose)
    spec = load_app(path)
    stages = spec.select(stage)
    if check:
        typer.echo(f"{path}: {plural(len(spec.stages), 'stage')}, valid")
        for one in spec.stages.values():
            typer.echo(f"  {one.name}: {_describe(one)}")
        return
    runner = Runner(spec, stage, url=settings.url, until_idle=until_idle, status_every=status_every)
    processes = sum(s.replicas for s in stages)
    where = sorted({mask_url(replica.url) for replica in runner.replicas})
    count = f"{processes} process{'es' if processes != 1 else ''}"
    typer.echo(f"{PROG} up: {plural(len(stages), 'stage')} ({count}) from {path} "
               f"on {', '.join(where)}; Ctrl-C or SIGTERM stops them", err=True)
    code = runner.run()
    from streamlog.apps.status import text_table

    typer.echo(text_table(runner.rows()))
    if code:
        raise AppFailedError(runner.failure or f"stopped with exit code {code}", code)
