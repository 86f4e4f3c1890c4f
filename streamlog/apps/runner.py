"""The supervisor behind ``streamlog up``: one OS process per stage replica, restarted on
crash with backoff, stopped gracefully on SIGTERM/Ctrl-C, with a live status table.

Guarantees and rules:

* **Processes** (:mod:`.replica`). Each replica of a consumer stage is
  ``python -m streamlog.apps.stage`` (:mod:`.stage`); a command stage is its program (``python`` as the first word means
  this interpreter), run in the pipeline file's directory with ``STREAMLOG_URL`` set.
  Replicas of a stage share its consumer group, so they split its windows (scale-out);
  the same holds for replicas started by ``streamlog up app.toml --stage NAME`` on
  other machines against the same database. Children run in their own session (so a
  Ctrl-C reaches the runner only, which then stops them in order) and process group: the
  runner signals the whole group (``os.killpg``), so what a stage started stops with it.
  When a replica's process exits, what it left in its group gets SIGTERM, and SIGKILL
  ``stop_timeout`` seconds later.
* **Nothing outlives the runner.** The :mod:`.guardian`, a separate process, knows the
  groups; when the runner dies however it dies (its pipe's end of file), it sends them
  SIGTERM, then SIGKILL after ``stop_timeout``. Should the guardian be gone too, a
  consumer whose report pipe breaks stops after its current window (see :mod:`.stage`).
* **Restarts.** A replica that exits on its own (a consumer always; a command with a
  non-zero code) is restarted after ``restart.delay · 2^(n-1)`` seconds, at most
  ``restart.max_delay``, where n counts its crashes within the last ``restart.within``
  seconds; the ``restart.max_crashes``-th crash within that time stops the whole app,
  which exits 1 naming the stage and its last error. A command that exits 0 is finished.
  A stage that cannot start as configured (exit :data:`~.stage.EXIT_CONFIG`) stops the
  app at once (exit 2): restarting would not help.
* **Stopping** (:func:`streamlog.stopping.graceful_stop`). SIGTERM or SIGINT (Ctrl-C) →
  SIGTERM to every child's group: consumers finish and commit their current window and
  exit. After ``stop_timeout`` seconds (or a second Ctrl-C) the stragglers are killed
  with SIGKILL — their windows are redelivered (their leases run out), so nothing is
  lost either way. Exit 0.
* **Until idle.** With ``until_idle=S`` the app also stops by itself once every command
  stage has finished and no consumer stage had an item pending for S seconds.
* **Status.** Children report their counters on a pipe every 0.5 s (:mod:`.pipes`); the
  runner reads each stage's pending count from the database once a second (in a thread
  of its own, :mod:`.pending`, so a slow database never delays supervision). Their
  output (stdout and stderr) is forwarded line by line to the runner's stderr as
  ``stage | line``.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Sequence, TextIO

from ..config import parse_url, resolve_url
from ..stopping import graceful_stop
from ..tables import is_terminal
from .guardian import Guardian, group_alive, signal_group
from .pending import PendingWatcher
from .pipes import ChildPipes
from .replica import Replica, exit_text
from .spec import AppSpec
from .stage import EXIT_CONFIG
from .status import Row, rich_table, text_table

#: exit codes of :meth:`Runner.run`
EXIT_OK, EXIT_CRASHED, EXIT_CONFIG_ERROR = 0, 1, 2
#: seconds between two reads of the pending counts (0.25 with ``until_idle``)
PENDING_EVERY = 1.0
#: seconds between two refreshes of the live table
REFRESH_EVERY = 1.0


def absolute_url(url: str | None) -> str:
    """``url`` resolved (argument → ``STREAMLOG_URL`` → embedded default) with a relative
    ``sqlite:///`` path made absolute, so command stages running in another directory
    open the same file."""
    resolved = resolve_url(url)
    location = parse_url(resolved)
    if location.kind == "sqlite" and location.path is not None and not location.path.is_absolute():
        return f"sqlite:///{location.path.resolve()}"
    return resolved


class Runner:
    """Runs and supervises the ``stages`` (names; all when empty) of ``app``.

    ``url`` overrides the file's top-level ``url`` (a stage's own ``url`` still wins).
    ``until_idle``: stop by itself once idle that long (see the module docstring).
    ``status_every``: seconds between status tables off a terminal (None/0: none);
    ``live``: a rich Live table on ``out`` (default: when ``out`` is a terminal).
    :meth:`run` returns the exit code; :attr:`failure` says why it is not 0.
    """

    def __init__(self, app: AppSpec, stages: Sequence[str] | None = None, *, url: str | None = None,
                 until_idle: float | None = None, status_every: float | None = 5.0,
                 live: bool | None = None, out: TextIO | None = None):
        self.app = app
        self.stages = app.select(stages)
        self.until_idle = until_idle
        self.status_every = status_every or None
        self.out = out or sys.stderr
        self.live = is_terminal(self.out) if live is None else live
        self.failure: str | None = None
        self.code = EXIT_OK
        self.replicas: list[Replica] = []
        for stage in self.stages:
            stage_url = absolute_url(stage.url or url or app.url)
            for i in range(stage.replicas):
                label = stage.name if stage.replicas == 1 else f"{stage.name}#{i + 1}"
                self.replicas.append(Replica(stage, i, label, stage_url))
        consumers = {r.stage.name: (r.stage.name, r.url, r.stage.stream, r.stage.group)
                     for r in self.replicas if r.stage.kind != "command"}
        self.pending = PendingWatcher(list(consumers.values()), 0.25 if until_idle else PENDING_EVERY)
        self._pipes = ChildPipes(self._line)
        self._stop_reason: str | None = None
        self._signals = 0
        self._idle_since: float | None = None
        self._commands_done_at: float | None = None
        self._console = None
        self._leftovers: dict[int, float] = {}  # process groups whose leader exited -> SIGKILL deadline
        self._killing = False  # the stop deadline passed: leftovers get SIGKILL at once
        self.guardian = Guardian(app.stop_timeout)

    # -- control ---------------------------------------------------------------

    def stop(self, reason: str = "stop requested") -> None:
        """Ask the runner to stop every stage gracefully (thread-safe)."""
        if self._stop_reason is None:
            self._stop_reason = reason

    def _on_signal(self, signum: int) -> None:
        """SIGINT or SIGTERM: the first stops the app; while it stops, another one kills
        the stragglers at once (see :meth:`_shutdown`)."""
        self._signals += 1
        self.stop(f"{signal.Signals(signum).name}")

    # -- the loop --------------------------------------------------------------

    def run(self) -> int:
        """Start every replica, supervise them until stopped, stop them; the exit code."""
        with graceful_stop(self._on_signal):
            return self._run()

    def _run(self) -> int:
        live = None
        try:
            self.guardian.start()
        except OSError as exc:  # cannot fork now: the stages would fail to start as well
            self._print(f"streamlog up: warning: no guardian ({exc}); stages may outlive a killed runner")
        try:
            if self.live:
                from rich.console import Console
                from rich.live import Live

                self._console = Console(file=self.out, stderr=self.out is sys.stderr)
                live = Live(self._table(), console=self._console, refresh_per_second=2, transient=True)
                live.start()
            self.pending.start()
            self._supervise(live)
            self._shutdown(live)
        finally:
            self.pending.stop()
            if live is not None:
                live.update(self._table())
                live.stop()
            self._pipes.close()
            self.guardian.close()  # after an error, it ends the groups still running
        return self.code

    def _supervise(self, live) -> None:
        now = time.monotonic()
        next_refresh = now + REFRESH_EVERY
        next_status = now + (self.status_every or 0)
        while self._stop_reason is None:
            now = time.monotonic()
            for replica in self.replicas:
                if replica.state in ("waiting", "backoff") and now >= replica.next_start:
                    self._start(replica)
            self._pipes.pump(0.1)
            self._reap()
            now = time.monotonic()
            self._sweep(now)
            if now >= next_refresh:
                next_refresh = now + REFRESH_EVERY
                self._rates(now)
                if live is not None:
                    live.update(self._table())
            if not self.live and self.status_every and now >= next_status:
                next_status = now + self.status_every
                self._print(text_table(self.rows()))
            if self.until_idle is not None and self._idle(now):
                self.stop(f"idle for {self.until_idle:g} s")

    # -- processes -------------------------------------------------------------

    def _start(self, replica: Replica) -> None:
        try:
            pid, fds = replica.launch(self.app.directory)
        except OSError as exc:
            self._crashed(replica, f"cannot start: {exc}")
            return
        self.guardian.add(pid)  # its own session: process group id = pid
        self._pipes.add(replica, fds)

    def _line(self, replica: Replica, kind: str, text: str) -> None:
        """One line from a child: a status report, or output to forward as ``stage | line``."""
        if kind == "status":
            replica.report(text)
        else:
            self._print(f"{replica.label} | {text}")

    def _reap(self) -> None:
        for replica in self.replicas:
            if replica.proc is None:
                continue
            code = replica.proc.poll()
            if code is None:
                continue
            self._orphans(replica.proc.pid)
            self._pipes.drain(replica)
            replica.exited()
            self._exited(replica, code)

    def _exited(self, replica: Replica, code: int) -> None:
        stage = replica.stage
        if self._stop_reason is not None and replica.stop_sent:
            replica.state = "stopped"
            return
        if replica.fatal or code == EXIT_CONFIG:
            replica.state = "failed"
            error = replica.error or exit_text(code)
            self._fail(EXIT_CONFIG_ERROR, f"stage {stage.name!r} cannot start: {error}")
            return
        if code == 0 and stage.kind == "command":
            replica.state = "finished"
            self._print(f"{replica.label} | (finished)")
            if all(r.state == "finished" for r in self.replicas if r.stage.kind == "command"):
                self._commands_done_at = time.monotonic()
            return
        if code == 0:  # a consumer stopped by someone else (SIGTERM to its pid): it should be running
            replica.restarts += 1
            replica.state, replica.next_start = "backoff", time.monotonic() + self.app.restart.delay
            self._print(f"{replica.label} | (stopped from outside; restart {replica.restarts} in "
                        f"{self.app.restart.delay:.1f} s)")
            return
        reason = exit_text(code)
        self._crashed(replica, f"{replica.run_error} ({reason})" if replica.run_error else reason)

    def _crashed(self, replica: Replica, error: str) -> None:
        rules = self.app.restart
        now = time.monotonic()
        replica.crashes.append(now)
        while replica.crashes and replica.crashes[0] < now - rules.within:
            replica.crashes.popleft()
        replica.error = error
        if len(replica.crashes) >= rules.max_crashes:
            replica.state = "failed"
            self._fail(EXIT_CRASHED, f"stage {replica.stage.name!r} crashed {len(replica.crashes)} times "
                                     f"within {rules.within:g} s; last error: {error}")
            return
        delay = rules.backoff(len(replica.crashes))
        replica.restarts += 1
        replica.state, replica.next_start = "backoff", now + delay
        self._print(f"{replica.label} | (crashed: {error}; restart {replica.restarts} in {delay:.1f} s)")

    def _fail(self, code: int, message: str) -> None:
        if self.failure is None:
            self.failure, self.code = message, code
            self._print(f"streamlog up: {message}; stopping every stage")
        self.stop(message)

    # -- stopping --------------------------------------------------------------

    def _shutdown(self, live) -> None:
        timeout = self.app.stop_timeout
        for replica in self.replicas:
            if replica.proc is not None:
                self._terminate(replica)
            elif replica.state in ("waiting", "backoff"):
                replica.state = "stopped"
        deadline = time.monotonic() + timeout
        signals = self._signals
        while any(r.proc is not None for r in self.replicas) or self._leftovers:
            if time.monotonic() >= deadline or self._signals > signals:  # or a second Ctrl-C
                self._killing = True
                for replica in self.replicas:
                    if replica.proc is not None:
                        signal_group(replica.proc.pid, signal.SIGKILL)
                        replica.error = replica.error or "killed: did not stop in time"
                deadline = float("inf")
            self._pipes.pump(0.05)
            self._reap()
            self._sweep(time.monotonic())
            if live is not None:
                live.update(self._table())

    def _terminate(self, replica: Replica) -> None:
        replica.stop_sent = True
        replica.state = "stopping"
        signal_group(replica.proc.pid, signal.SIGTERM)  # the stage and whatever it started

    def _orphans(self, pgid: int) -> None:
        """The leader of process group ``pgid`` (a replica's process) exited: what it left
        running in its group gets SIGTERM, and SIGKILL ``stop_timeout`` seconds later."""
        if signal_group(pgid, signal.SIGKILL if self._killing else signal.SIGTERM) and not self._killing:
            self._leftovers[pgid] = time.monotonic() + self.app.stop_timeout
        else:
            self.guardian.remove(pgid)

    def _sweep(self, now: float) -> None:
        """Forget the leftover groups that are empty; SIGKILL those past their deadline."""
        for pgid, deadline in list(self._leftovers.items()):
            if group_alive(pgid):
                if now < deadline and not self._killing:
                    continue
                signal_group(pgid, signal.SIGKILL)
            del self._leftovers[pgid]
            self.guardian.remove(pgid)

    # -- idle and status -------------------------------------------------------

    def _idle(self, now: float) -> bool:
        commands = [r for r in self.replicas if r.stage.kind == "command"]
        consumers = [r for r in self.replicas if r.stage.kind != "command"]
        if any(r.state != "finished" for r in commands):
            self._idle_since = None
            return False
        since = self._commands_done_at or 0.0
        quiet = all(r.state == "running" and r.reported for r in consumers)
        for replica in consumers:
            value, measured = self.pending.value(replica.stage.name)
            if value is None or value > 0 or measured < since:
                quiet = False
        if not quiet:
            self._idle_since = None
            return False
        if self._idle_since is None:
            self._idle_since = now
        return now - self._idle_since >= self.until_idle

    def _rates(self, now: float) -> None:
        for replica in self.replicas:
            windows = replica.total("windows")
            then, before = replica.mark
            if then:
                replica.rate = max(0.0, (windows - before) / max(1e-9, now - then))
            replica.mark = (now, windows)

    def rows(self) -> list[Row]:
        """The status table now: one :class:`~.status.Row` per replica."""
        rows = []
        for r in self.replicas:
            consumer = r.stage.kind != "command"
            pending = self.pending.value(r.stage.name)[0] if consumer else None
            pid = r.proc.pid if r.proc is not None else None
            rows.append(Row(r.label, pid, r.state, r.total("windows") if consumer else None,
                            r.rate if consumer and r.state == "running" else None,
                            r.total("items") if consumer else None, r.total("out") if consumer else None,
                            pending, r.restarts, r.error))
        return rows

    def _table(self):
        return rich_table(self.rows(), f"streamlog up {self.app.path.name}")

    def _print(self, line: str) -> None:
        if self._console is not None:
            from rich.text import Text

            self._console.print(Text(line), soft_wrap=True)
        else:
            try:
                print(line, file=self.out, flush=True)
            except (BrokenPipeError, ValueError):
                pass


def run_app(path: str | Path, stages: Sequence[str] | None = None, *, url: str | None = None,
            until_idle: float | None = None, status_every: float | None = 5.0,
            out: TextIO | None = None) -> tuple[int, list[Row], str | None]:
    """Load, validate and run the pipeline file at ``path``; return ``(exit code, the final
    status rows, why it failed or None)``. See :class:`Runner`."""
    from .spec import load_app

    runner = Runner(load_app(path), stages, url=url, until_idle=until_idle, status_every=status_every, out=out)
    code = runner.run()
    return code, runner.rows(), runner.failure
