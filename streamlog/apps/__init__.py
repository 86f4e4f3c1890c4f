"""Streaming applications: a pipeline file of stages, run and supervised by ``streamlog up``.

Modules: :mod:`.spec` (the file: parse and validate, errors naming the line),
:mod:`.runner` (the supervisor: restarts, graceful stop, idle detection), :mod:`.replica`
(one stage replica: its state, its process, its reports), :mod:`.pipes` (the children's
pipes, read line by line), :mod:`.pending` (pending counts, read in a thread),
:mod:`.guardian` (ends the children should the runner die), :mod:`.stage` (one consumer
stage replica, the child process), :mod:`.status` (the status table). See
``docs/apps.md``.

::

    from streamlog.apps import load_app, Runner
    app = load_app("examples/sensors/app.toml")       # SpecError if anything is wrong
    code = Runner(app, until_idle=2).run()             # 0 once idle (or on SIGTERM)
"""

from .spec import AppSpec, Restart, SpecError, Stage, load_app

__all__ = ["AppSpec", "Restart", "Runner", "SpecError", "Stage", "load_app", "run_app"]


def __getattr__(name: str):
    if name in ("Runner", "run_app"):  # the supervisor: loaded when used
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
