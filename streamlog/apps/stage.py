"""One replica of a consumer stage, in its own process: ``python -m streamlog.apps.stage JSON``.

The runner (:mod:`streamlog.apps.runner`) starts this module with the stage (as
:meth:`Stage.as_dict` JSON), the database URL and the pipeline file's directory. It
builds the consumer function (a ``module:callable``, a learner, or a predict stage),
runs it with :func:`streamlog.streaming` until SIGTERM/SIGINT (the window in progress is
finished and committed first, then it exits 0), and reports to the runner on the pipe
whose file descriptor is in ``STREAMLOG_STAGE_FD``: one JSON line every
:data:`REPORT_EVERY` seconds and one at the end, with its counters (``windows``,
``items``, ``out``, ``failed``, ``dead``) and its last error.

Exit codes: 0 stopped on request; :data:`EXIT_CONFIG` the stage cannot start as
configured (bad window options, a function that does not import: restarting would not
help, so the runner stops the app); anything else is a crash, which the runner restarts.
If the runner disappears, its guardian (:mod:`.guardian`) sends SIGTERM to the stage's
process group (a graceful stop), then SIGKILL ``stop_timeout`` seconds later. No
parent-death signal is asked for: arriving first, it would make the guardian's SIGTERM
a second signal, which means "stop now" (the window in progress abandoned). Should the
guardian be gone too, a consumer whose report pipe broke and got no SIGTERM within
:data:`ORPHAN_GRACE` seconds stops by itself, after its current window.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from ..errors import ConsumerError, StreamlogError
from ..learners.kinds import KINDS
from .spec import Stage

#: seconds between two reports to the runner
REPORT_EVERY = 0.5
#: exit code of a stage that cannot start as configured (sysexits' EX_CONFIG)
EXIT_CONFIG = 78
#: environment variable holding the report pipe's file descriptor
FD_VARIABLE = "STREAMLOG_STAGE_FD"
#: seconds a consumer whose runner is gone waits for the guardian's SIGTERM before stopping
ORPHAN_GRACE = 1.0


class Counted:
    """The stage's function, counting what it did: windows and items it returned from,
    records it returned (``out``), and the last exception it raised (re-raised: the
    runtime retries the window as usual). Thread-safe (``workers > 1``). Other attributes
    (a learner's ``attach``) are those of the function."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.windows = 0
        self.items = 0
        self.out = 0
        self.error: str | None = None
        self._lock = threading.Lock()

    def __call__(self, window):
        try:
            result = self.fn(window)
        except Exception as exc:
            with self._lock:
                self.error = _describe(exc)
            raise
        if result is None:
            out = 0
        else:  # a dict is one record; a list or a DataFrame one per element/row
            out = 1 if isinstance(result, dict) or not hasattr(result, "__len__") else len(result)
        with self._lock:
            self.windows += 1
            self.items += len(window)
            self.out += out
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["fn"], name)


def _describe(exc: BaseException) -> str:
    from ..config import mask_url

    text = mask_url(" ".join(str(exc).split()))
    if isinstance(exc, StreamlogError) and text:  # its message says it all
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------------------
# building the consumer


def _anchored(text: str, directory: Path) -> str:
    """``MODULE:NAME`` of the pipeline file, as :mod:`streamlog.loading` takes it: a
    relative path to a .py file is relative to the file's directory, and a dotted module
    is importable from there."""
    from ..loading import is_path

    module, _, attr = text.rpartition(":")
    if is_path(module):
        path = Path(module).expanduser()
        return f"{path if path.is_absolute() else directory / path}:{attr}"
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    return text


def _estimator(text: str, directory: Path, params: dict) -> Any:
    """The estimator of a ``partial_fit`` stage: a class (made with ``estimator_params``)
    or an instance, named ``MODULE:NAME``."""
    from ..loading import load_object

    try:
        found = load_object(_anchored(text, directory))
    except ConsumerError as exc:  # its message names the estimator's MODULE:NAME
        raise ConsumerError(f"estimator: {exc}") from None
    except (ImportError, AttributeError) as exc:  # raised by the estimator's module as it is imported
        raise ConsumerError(f"estimator {text!r}: {_describe(exc)}") from None
    if isinstance(found, type):
        return found(**params)
    if params:
        raise ConsumerError(f"estimator {text!r} is an instance: estimator_params apply to a class")
    return found


def build_function(stage: Stage, url: str, directory: Path) -> Callable:
    """The stage's consumer function (not yet counted)."""
    if stage.kind == "function":
        from ..loading import load_callable

        return load_callable(_anchored(stage.runs, directory))
    if stage.kind == "learner":
        cls = KINDS[stage.runs].learner_class()
        params = dict(stage.params)
        if stage.runs == "partial_fit":
            params["estimator"] = _estimator(params["estimator"], directory, params.pop("estimator_params", {}))
        try:
            return cls(**params)
        except TypeError as exc:
            raise ConsumerError(f"learner {stage.runs!r}: {exc}") from None
    if stage.kind == "predict":
        from ..learners.predictor import Predictor

        return Predictor(**stage.runs)  # checkpoints read from the consumed stream's database by default
    raise ConsumerError(f"stage {stage.name!r}: a {stage.kind} stage is not a consumer")


def build_consumer(stage: Stage, url: str):
    """The configured :class:`~streamlog.consumers.StreamingFunction` of the stage."""
    import streamlog

    options = {**stage.window, **stage.options, "group": stage.group, "url": url}
    if options.get("workers") == 1:
        options.pop("workers")  # the default: also works where workers= is not known
    try:
        return streamlog.streaming(stage.stream, **options)
    except TypeError as exc:  # an option this streamlog's streaming() does not have
        raise ConsumerError(f"streaming() does not accept this stage's options: {exc}") from None


# ---------------------------------------------------------------------------
# reporting


class Reporter:
    """Writes the stage's counters to the runner as JSON lines; stops the consumer when
    the runner is gone (the pipe broke)."""

    def __init__(self, fd: int | None):
        self.file = os.fdopen(fd, "w", buffering=1) if fd is not None else None
        self.counted: Counted | None = None
        self.consumer = None
        self.crash: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def send(self, **message: Any) -> bool:
        if self.file is None:
            return True
        with self._lock:
            try:
                self.file.write(json.dumps(message, default=str) + "\n")
                return True
            except (BrokenPipeError, OSError, ValueError):
                return False

    def counters(self) -> dict:
        counted, run = self.counted, getattr(self.consumer, "consumer", None)
        state = {"pid": os.getpid()}
        if counted is not None:
            state.update(windows=counted.windows, items=counted.items, out=counted.out, error=counted.error)
        if run is not None:
            state.update(failed=run.failed, dead=run.dead_lettered)
        if self.crash is not None:
            state["error"] = self.crash
        return state

    def start(self, counted: Counted, consumer) -> None:
        self.counted, self.consumer = counted, consumer
        threading.Thread(target=self._loop, name="streamlog-stage-report", daemon=True).start()

    def _loop(self) -> None:
        while not self._stop.wait(REPORT_EVERY):
            if not self.send(**self.counters()):  # the runner is gone
                if not self._stop.wait(ORPHAN_GRACE) and not self._stopping():
                    self.consumer.stop()  # and no SIGTERM from its guardian: stop as on SIGTERM
                return

    def _stopping(self) -> bool:
        run = getattr(self.consumer, "consumer", None)
        return bool(getattr(run, "stopping", False))

    def close(self) -> None:
        self._stop.set()
        self.send(**self.counters(), final=True)
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass


def _exit_if_orphan() -> None:
    """Exit now if the runner that started this process is already gone (while it runs,
    ending this process group when the runner dies is the guardian's job)."""
    runner = os.environ.get("STREAMLOG_RUNNER_PID")
    if runner and os.getppid() != int(runner):
        sys.exit(0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _exit_if_orphan()
    if argv and argv[0] == "--exec":  # a command stage: become its program
        try:
            os.execvp(argv[1], argv[1:])
        except OSError as exc:
            print(f"streamlog: error: cannot run {argv[1]!r}: {exc.strerror or exc}", file=sys.stderr, flush=True)
            return 127
    config = json.loads(argv[0])
    stage = Stage.from_dict(config["stage"])
    url, directory = config["url"], Path(config["directory"])
    fd = os.environ.get(FD_VARIABLE)
    reporter = Reporter(int(fd) if fd else None)
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s streamlog %(levelname)s: %(message)s")
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    try:
        counted = Counted(build_function(stage, url, directory))
        consumer = build_consumer(stage, url)
    except (ImportError, SyntaxError) as exc:
        return _fatal(reporter, _describe(exc))
    except StreamlogError as exc:
        if exc.exit_code == 2:  # ConsumerError, BadNameError, BadURLError: a configuration error
            return _fatal(reporter, _describe(exc))
        raise
    reporter.start(counted, consumer)
    try:
        consumer.apply(counted)
    except BaseException as exc:
        reporter.crash = _describe(exc)
        reporter.close()
        raise
    reporter.close()
    return 0


def _fatal(reporter: Reporter, error: str) -> int:
    print(f"streamlog: error: {error}", file=sys.stderr, flush=True)
    reporter.send(pid=os.getpid(), error=error, fatal=True)
    reporter.close()
    return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
