"""Fault-injection harness shared by ``tests/test_faults.py`` (bounded) and
``scripts/fault_soak.py`` (long soak).

A scenario runs real producer and consumer *processes* against one stream while
the harness injects faults, then checks exact at-least-once accounting:

* producers (``python tests/faultlib.py producer …``) append ``{"p": id, "i": seq}``
  with ``append`` / small ``extend`` batches and write one line per acknowledged
  item (its offset) only after the call returned; a call that raised is logged
  and the same logical items are retried;
* consumers (``python tests/faultlib.py consumer …``) run
  ``streamlog.streaming(name, size=…, lease=…, group="g")`` and write one line per
  delivered item (offset, p, i, pid, window seq/attempt, time) when the function
  starts, and a ``done`` line when it returns (a window without one was cut short
  by a kill and does not count as processed);
* faults: SIGKILL a consumer while it is inside a window (a replacement starts),
  SIGKILL a producer in the middle of an ``extend`` (embedded backend; a replacement
  resumes after the last acknowledged item), stop the MongoDB-wire server (FerretDB,
  started here on its own port and state dir) for a few seconds and restart it
  with the same data;
* then producers finish, consumers drain (``info()`` polled until nothing is
  pending; it fails after ``drain_timeout`` s without progress), get SIGTERM (they
  finish and commit the current window and exit 0), and :func:`accounting`
  compares what was acknowledged, stored and processed.

Every wait has a deadline; every process (and the server) is killed in a
``finally``. :meth:`Scenario.run` returns a :class:`Report` whose ``problems``
list is empty when every guarantee held.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
if str(TESTS) not in sys.path:  # conftest's server helpers, also when run as a script
    sys.path.insert(0, str(TESTS))
STREAM = "faults"
GROUP = "g"


class ScenarioError(AssertionError):
    """A scenario could not run to the end (a wait ran out, a process died)."""


# ---------------------------------------------------------------------------
# the worker processes
# ---------------------------------------------------------------------------

def _writer(path: str):
    out = open(path, "a", encoding="utf-8")

    def write(**record: Any) -> None:
        out.write(json.dumps(record, separators=(",", ":")) + "\n")
        out.flush()

    return write


def _slow_sql(stream, write) -> dict:
    """Widen the window of a SIGKILL inside ``extend`` on the embedded backend: a SQLite
    progress handler on this process's connection sleeps every few VM instructions, so
    the write transaction lasts tens of milliseconds, and writes a ``sql`` line the first
    time it runs during an armed call (the harness kills after that line)."""
    state: dict = {"armed": None}
    con_of = getattr(stream.store, "_con", None)
    if con_of is None:
        write(warn="no SQLite connection to slow down")
        return state

    def handler() -> int:
        if state["armed"] is not None:
            write(sql=state["armed"], t=time.time())
            state["armed"] = None
        time.sleep(0.001)
        return 0

    con_of().set_progress_handler(handler, 5)
    return state


def producer_main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="faultlib producer")
    ap.add_argument("--id", type=int, required=True)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--batch-max", type=int, default=4)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slow-sql", action="store_true")
    ap.add_argument("--give-up", type=float, default=120.0, help="seconds of failed attempts in a row")
    args = ap.parse_args(argv)
    write = _writer(args.out)
    write(start=os.getpid(), p=args.id, first=args.start)
    import streamlog

    rng = random.Random(args.seed * 1000 + args.id)
    failing_since: float | None = None

    def attempt(call: Callable, what: Any):
        nonlocal failing_since
        tries = 0
        while True:
            write(b=what, k=tries, t=time.time())
            try:
                result = call()
            except Exception as exc:  # noqa: BLE001 - every failure is recorded and retried
                write(e=f"{type(exc).__module__}.{type(exc).__name__}", m=str(exc)[:300], b=what, k=tries)
                tries += 1
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > args.give_up:
                    raise
                time.sleep(0.05)
                continue
            failing_since = None
            return result

    stream = attempt(lambda: streamlog.stream(STREAM), "connect")
    slow = _slow_sql(stream, write) if args.slow_sql else {}
    i, end = args.start, args.count
    while i < end:
        k = min(end - i, rng.randint(2 if args.slow_sql else 1, args.batch_max))
        batch = [{"p": args.id, "i": j} for j in range(i, i + k)]
        if k == 1:
            offsets = [attempt(lambda batch=batch: stream.append(batch[0]), [i, i])]
        else:
            def extend(i=i, k=k, batch=batch):
                slow["armed"] = [i, i + k - 1]
                try:
                    return stream.extend(batch)
                finally:
                    slow["armed"] = None

            offsets = attempt(extend, [i, i + k - 1])
        write(a=[[item["i"], off] for item, off in zip(batch, offsets, strict=True)], t=time.time())
        i += k
        if args.interval:
            time.sleep(rng.uniform(0.5, 1.5) * args.interval)
    write(done=True)
    return 0


def consumer_main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="faultlib consumer")
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=5)
    ap.add_argument("--lease", type=float, default=2.0)
    ap.add_argument("--timeout", type=float, default=0.5, help="partial window after this long")
    ap.add_argument("--work", type=float, default=0.02, help="seconds of 'work' per window")
    ap.add_argument("--max-retries", type=int, default=3)
    args = ap.parse_args(argv)
    write = _writer(args.out)
    pid = os.getpid()
    write(start=pid)
    import streamlog

    out = open(args.out, "a", encoding="utf-8")

    def record(window) -> None:
        now = time.time()
        # One write per window: the lines of a window land together or not at all.
        out.write("".join(
            json.dumps({"o": o, "p": d.get("p"), "i": d.get("i"), "pid": pid, "q": window.seq,
                        "k": window.attempt, "t": now}, separators=(",", ":")) + "\n"
            for o, d in zip(window.offsets, window.data, strict=True)))
        out.flush()
        if args.work:
            time.sleep(args.work)
        # The function returned (the runtime commits next): a window without this line
        # was cut short by a kill and must be delivered again.
        out.write(json.dumps({"done": [window.seq, window.attempt], "pid": pid}) + "\n")
        out.flush()

    fn = streamlog.streaming(STREAM, size=args.size, timeout=args.timeout, lease=args.lease, group=GROUP,
                             max_retries=args.max_retries)
    write(ready=pid)  # connected: the harness injects no fault before this line
    n = fn.apply(record)
    write(exit=pid, windows=n)
    return 0


# ---------------------------------------------------------------------------
# the server
# ---------------------------------------------------------------------------

class FerretServer:
    """A FerretDB process of our own, on a free port and a private state dir, that can
    be stopped and started again on the same port with the same data."""

    def __init__(self, binary: str, state: Path):
        from conftest import _free_port

        self.binary = binary
        self.state = Path(state)
        self.state.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.base = f"mongodb://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = self.state / "ferretdb.log"
        self.extra_args: list[str] = []  # more ferretdb flags (e.g. authentication)

    def start(self, timeout: float = 30.0) -> None:
        from conftest import _wait_for

        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--handler=sqlite", f"--sqlite-url=file:{self.state}/", f"--state-dir={self.state}",
             f"--listen-addr=127.0.0.1:{self.port}", "--debug-addr=-", "--telemetry=disable",
             "--log-level=error", *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            _wait_for(self.base, self.proc, time.monotonic() + timeout)
        except RuntimeError as exc:
            raise ScenarioError(f"{exc}\n--- ferretdb log ---\n{tail(self.log_path)}") from None

    def stop(self, sig: int = signal.SIGKILL) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def close(self) -> None:
        self.stop(signal.SIGTERM)


# ---------------------------------------------------------------------------
# the harness
# ---------------------------------------------------------------------------

def tail(path: Path, lines: int = 25) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty)"


def crash_summary(path: Path, lines: int = 6) -> str:
    """A worker's stderr, shortened: the streamlog frames of its last traceback, the
    exception line, and the last lines of output."""
    try:
        text = Path(path).read_text(errors="replace").rstrip().splitlines()
    except OSError:
        return "(no output)"
    frames = []
    start = max((k for k, line in enumerate(text) if line.startswith("Traceback")), default=None)
    if start is not None:
        frames = [f"{line.strip()}  ->  {text[k + 1].strip() if k + 1 < len(text) else ''}"
                  for k, line in enumerate(text[start:], start)
                  if line.strip().startswith("File ") and "/streamlog/" in line]
    body = text[-lines:] if frames else text[-25:]
    return "\n".join((["streamlog frames of the last traceback:", *frames[-4:], "last lines:"] if frames else [])
                     + body) or "(empty)"


def read_lines(path: Path) -> tuple[list[dict], int]:
    """The complete JSON lines of a worker file, and the number of torn ones (a process
    killed while writing leaves at most one, at the end)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], 0
    parts = text.split("\n")
    torn = 1 if parts[-1] else 0
    records = []
    for line in parts[:-1]:
        try:
            records.append(json.loads(line))
        except ValueError:
            torn += 1
    return records, torn


@dataclass
class Params:
    backend: str = "mongo"              # "mongo" (FerretDB we start) or "sqlite"
    producers: int = 3
    items: int = 300                    # in all, split between the producers
    batch_max: int = 4                  # append (1) or extend (2..batch_max)
    interval: float = 0.12              # mean pause between a producer's calls (s)
    consumers: int = 2
    size: int = 5
    lease: float = 2.0
    window_timeout: float = 0.5         # partial windows once the oldest item waited this long
    work: float = 0.02                  # per-window sleep in the consumer function
    max_retries: int = 3
    consumer_kills: int = 1
    late_kill: bool = False             # one more consumer SIGKILL at 98 % acknowledged: its lease runs
                                        # out after the last append, when the other consumers are idle
    producer_kills: int = 0             # SIGKILL mid-extend (embedded backend)
    outages: int = 1                    # server stops (MongoDB backend)
    outage_seconds: tuple[float, float] = (2.0, 4.0)
    outage_signal: str = "KILL"         # KILL, TERM or "alternate"
    retry_timeout: float = 30.0         # STREAMLOG_RETRY_TIMEOUT in the workers
    drain_timeout: float = 30.0         # fail the drain after this long without progress
    budget: float = 55.0                # seconds for the whole run, waits included
    seed: int = 0
    verbose: bool = False


@dataclass
class Worker:
    role: str              # "producer" / "consumer"
    ident: int             # producer id or consumer number
    gen: int
    proc: subprocess.Popen
    out: Path
    err: Path
    killed: bool = False   # by the harness, on purpose
    stopping: bool = False

    @property
    def name(self) -> str:
        return f"{self.role}[{self.ident}.{self.gen} pid {self.proc.pid}]"


@dataclass
class Report:
    accounting: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    workdir: str = ""

    def table(self) -> str:
        width = max(len(k) for k in self.accounting) if self.accounting else 0
        rows = [f"  {k:<{width}}  {v}" for k, v in self.accounting.items()]
        lines = ["accounting:", *rows, "events:", *[f"  {e}" for e in self.events]]
        lines += ["problems:" if self.problems else "problems: none"] + [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class Scenario:
    """One run: start everything, inject the planned faults, drain, account."""

    def __init__(self, params: Params, workdir: Path | None = None, ferretdb: str | None = None):
        self.p = params
        self.rng = random.Random(params.seed)
        self.dir = Path(workdir or tempfile.mkdtemp(prefix=f"streamlog-faults-{params.backend}-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ferretdb = ferretdb
        self.server: FerretServer | None = None
        self.url = ""
        self.workers: list[Worker] = []
        self.report = Report(workdir=str(self.dir))
        self.t0 = time.monotonic()
        self.deadline = self.t0 + params.budget
        self.outages: list[tuple[float, float]] = []  # wall-clock (start, end)
        self.killed_pids: set[int] = set()
        self.killed_batches: list[tuple[int, list[int]]] = []  # (producer id, [i0, i1]) in flight at SIGKILL
        self._stream = None

    # -- logging / time --------------------------------------------------------

    def log(self, message: str) -> None:
        entry = f"{time.monotonic() - self.t0:6.2f}s {message}"
        self.report.events.append(entry)
        if self.p.verbose:
            print(entry, flush=True)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05):
        """Poll ``predicate`` until it is truthy; check the workers' health meanwhile."""
        end = time.monotonic() + min(timeout, max(0.0, self.left()))
        while True:
            value = predicate()
            if value:
                return value
            self.check_workers()
            if time.monotonic() > end:
                raise ScenarioError(f"timed out after {timeout:g}s (or the run's budget) waiting for {what}")
            time.sleep(interval)

    # -- processes ---------------------------------------------------------------

    def _env(self) -> dict:
        import streamlog

        # The workers run the same streamlog as the harness (the work tree, or whatever
        # PYTHONPATH put first: e.g. an exported older commit to compare against).
        source = Path(streamlog.__file__).resolve().parent.parent
        return dict(os.environ, STREAMLOG_URL=self.url, PYTHONPATH=str(source), PYTHONUNBUFFERED="1",
                    STREAMLOG_RETRY_TIMEOUT=f"{self.p.retry_timeout:g}")

    def _spawn(self, role: str, ident: int, args: list[str]) -> Worker:
        gen = sum(1 for w in self.workers if w.role == role and w.ident == ident)
        out = self.dir / f"{role}-{ident}-{gen}.jsonl"
        err = self.dir / f"{role}-{ident}-{gen}.stderr"
        with open(err, "wb") as errf:
            proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), role, "--out", str(out), *args],
                                    env=self._env(), stdout=errf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=str(self.dir))
        worker = Worker(role, ident, gen, proc, out, err)
        self.workers.append(worker)
        self.log(f"started {worker.name}")
        return worker

    def start_consumer(self, ident: int) -> Worker:
        p = self.p
        worker = self._spawn("consumer", ident, [
            "--size", str(p.size), "--lease", str(p.lease), "--timeout", str(p.window_timeout),
            "--work", str(p.work), "--max-retries", str(p.max_retries)])
        self.wait(lambda: any("ready" in r for r in read_lines(worker.out)[0]), 30, f"{worker.name} to connect")
        return worker

    def start_producer(self, ident: int, start: int, slow: bool = False) -> Worker:
        p = self.p
        args = ["--id", str(ident), "--start", str(start), "--count", str(self.per_producer[ident]),
                "--batch-max", str(p.batch_max), "--interval", str(p.interval), "--seed", str(p.seed),
                "--give-up", str(max(10.0, p.retry_timeout * 1.5))]
        return self._spawn("producer", ident, args + (["--slow-sql"] if slow else []))

    def live(self, role: str | None = None) -> list[Worker]:
        return [w for w in self.workers if (role is None or w.role == role) and w.proc.poll() is None]

    def check_workers(self) -> None:
        """Record every worker that exited on its own with an error (once)."""
        for w in self.workers:
            rc = w.proc.poll()
            if rc is None or w.killed or w.stopping or getattr(w, "_reported", False):
                continue
            if rc != 0:
                w._reported = True  # type: ignore[attr-defined]
                self.report.problems.append(
                    f"{w.name} died with exit code {rc}; stderr:\n{_indent(crash_summary(w.err))}")
                self.log(f"!! {w.name} died unexpectedly (exit {rc})")

    def kill(self, worker: Worker) -> None:
        worker.killed = True
        self.killed_pids.add(worker.proc.pid)
        worker.proc.kill()
        worker.proc.wait(10)

    # -- progress ------------------------------------------------------------------

    def producer_records(self) -> dict[int, list[list[dict]]]:
        """Per producer id: the records of each generation, in order."""
        out: dict[int, list[list[dict]]] = defaultdict(list)
        for w in sorted((w for w in self.workers if w.role == "producer"), key=lambda w: (w.ident, w.gen)):
            out[w.ident].append(read_lines(w.out)[0])
        return out

    def acked_count(self) -> int:
        return sum(len(r["a"]) for gens in self.producer_records().values() for recs in gens
                   for r in recs if "a" in r)

    def next_seq(self, ident: int) -> int:
        acked = [i for recs in self.producer_records()[ident] for r in recs if "a" in r for i, _ in r["a"]]
        return max(acked) + 1 if acked else 0

    # -- faults ------------------------------------------------------------------------

    def fault_kill_consumer(self) -> None:
        """SIGKILL the first consumer seen inside a window (it logged the window's items and
        its function has not returned: claimed, not committed); start a replacement. A kill
        that came too late (the function had returned) is logged as missed and tried again,
        up to three times."""
        for _attempt in range(3):
            victims = self.live("consumer")
            if not victims:
                self.log("no live consumer to kill")
                return
            seen = {w.proc.pid: len(read_lines(w.out)[0]) for w in victims}

            def in_window(victims=victims, seen=seen):
                for w in victims:
                    recs = read_lines(w.out)[0]
                    if len(recs) > seen[w.proc.pid] and "o" in recs[-1] and w.proc.poll() is None:
                        return w
                return None

            victim = self.wait(in_window, 20, "a consumer to get a window", interval=0.002)
            self.kill(victim)
            last = read_lines(victim.out)[0][-1]
            hit = "o" in last
            if hit:
                self.log(f"SIGKILL {victim.name} inside window #{last['q']} attempt {last['k']}")
            else:
                self.log(f"SIGKILL {victim.name} (missed: the window's function had returned)")
            self.start_consumer(victim.ident)
            if hit:
                return

    def fault_kill_producer(self) -> None:
        """SIGKILL the (slowed-down) producer 0 inside the SQL of an ``extend``: after its
        progress handler reported the call's first SQL step, a few random milliseconds
        into the transaction. A kill that came too late (the call had returned) is
        logged as missed and tried again on the replacement, up to five times."""
        # On MongoDB nothing slows the call down: kill once it is announced (a "b" line).
        mark = "sql" if self.p.backend == "sqlite" else "b"
        for _attempt in range(5):  # a kill that comes too late is tried again on the replacement
            victims = [w for w in self.live("producer") if w.ident == 0]
            if not victims:
                self.log("no producer 0 left to kill (already done?)")
                return
            victim = victims[0]

            def inside(victim=victim):
                recs = read_lines(victim.out)[0]
                return bool(recs) and isinstance(recs[-1].get(mark), list) and recs[-1][mark][1] > recs[-1][mark][0]

            self.wait(inside, 20, f"{victim.name} to be inside an extend", interval=0.0005)
            if mark == "sql":
                time.sleep(self.rng.uniform(0, 0.005))  # the SQL part of an extend lasts 10-35 ms
            self.kill(victim)
            recs = read_lines(victim.out)[0]
            hit = bool(recs) and isinstance(recs[-1].get(mark), list)
            if hit:
                self.killed_batches.append((victim.ident, recs[-1][mark]))
                self.log(f"SIGKILL {victim.name} inside extend of items {recs[-1][mark]}")
            else:
                self.log(f"SIGKILL {victim.name} (missed: the extend had returned)")
            self.start_producer(victim.ident, self.next_seq(victim.ident), slow=self.p.backend == "sqlite")
            if hit:
                return

    def fault_outage(self, index: int) -> None:
        assert self.server is not None
        p = self.p
        name = p.outage_signal if p.outage_signal != "alternate" else ("KILL", "TERM")[index % 2]
        duration = self.rng.uniform(*p.outage_seconds)
        started = time.time()
        self.server.stop(getattr(signal, "SIG" + name))
        self.log(f"server stopped (SIG{name}) for {duration:.1f}s")
        time.sleep(duration)  # the fault itself, not a synchronisation
        self.server.start()
        self.outages.append((started, time.time()))
        self.log("server back")

    # -- the run ---------------------------------------------------------------------------

    def setup_backend(self) -> None:
        if self.p.backend == "mongo":
            if not self.ferretdb:
                raise ScenarioError("the MongoDB scenario needs a ferretdb binary")
            self.server = FerretServer(self.ferretdb, self.dir / "ferretdb")
            self.server.start()
            self.url = f"{self.server.base}/faults"
            self.log(f"FerretDB up at {self.server.base}")
        else:
            self.url = f"sqlite:///{self.dir}/streamlog.db"
        import streamlog

        self._stream = streamlog.connect(self.url).stream(STREAM)
        self._stream.group(GROUP)

    def stream(self):
        return self._stream

    def pending(self) -> int | None:
        try:
            return self.stream().info()["pending"].get(GROUP)
        except Exception:  # noqa: BLE001 - the server may be restarting
            return None

    def drain(self) -> None:
        """Wait until the group has nothing pending. Fails once ``drain_timeout`` seconds
        pass without progress (pending not going down), or the run's budget is spent."""
        progress = {"pending": None, "at": time.monotonic()}

        def drained():
            pending = self.pending()
            if pending is not None and (progress["pending"] is None or pending < progress["pending"]):
                progress["pending"], progress["at"] = pending, time.monotonic()
            if time.monotonic() - progress["at"] > self.p.drain_timeout:
                raise ScenarioError(f"no progress for {self.p.drain_timeout:g}s while draining "
                                    f"(pending {pending}); group state: {self.group_state()}")
            return pending == 0 or not self.live("consumer")

        try:
            self.wait(drained, self.left(), "the consumers to drain (pending == 0)", interval=0.1)
        except ScenarioError as exc:
            if "group state" in str(exc):
                raise
            raise ScenarioError(f"{exc}; group state: {self.group_state()}") from None

    def group_state(self) -> str:
        """The group's counts and its open claims, for a stuck drain."""
        from streamlog.items import now_ms

        try:
            stream = self.stream()
            state = stream.info()["groups"].get(GROUP)
            now = now_ms()
            claims = []
            for c in stream.store.open_claims(STREAM, GROUP):
                lease = f"expired {(now - c.lease) / 1000:.1f} s ago" if c.lease < now else "valid"
                claims.append(f"#{c.seq}/{c.attempt} offsets {c.lo}-{c.hi} {c.state} owner {c.owner} lease {lease}")
            return f"{state}; open claims: {claims or 'none'}"
        except Exception as exc:  # noqa: BLE001 - any failure is reported and the run goes on
            return f"(unavailable: {type(exc).__name__}: {exc})"

    def plan(self) -> list[tuple[float, str, int]]:
        """(fraction of items acknowledged, fault, index), in order."""
        events: list[tuple[float, str, int]] = []

        def spread(n: int, kind: str, lo: float, hi: float) -> None:
            for k in range(n):
                events.append((lo + (hi - lo) * (k + 0.5) / n + self.rng.uniform(-0.03, 0.03), kind, k))

        spread(self.p.consumer_kills, "kill_consumer", 0.1, 0.8)
        if self.p.late_kill:
            events.append((0.98, "kill_consumer", self.p.consumer_kills))
        spread(self.p.producer_kills, "kill_producer", 0.15, 0.75)
        if self.p.backend == "mongo":
            spread(self.p.outages, "outage", 0.2, 0.85)
        return sorted(events)

    def run(self) -> Report:
        p = self.p
        base, extra = divmod(p.items, p.producers)
        self.per_producer = [base + (1 if k < extra else 0) for k in range(p.producers)]
        try:
            self.setup_backend()
            for c in range(p.consumers):
                self.start_consumer(c)
            for k in range(p.producers):
                self.start_producer(k, 0, slow=(k == 0 and p.producer_kills > 0 and p.backend == "sqlite"))
            for fraction, kind, index in self.plan():
                target = min(p.items, int(fraction * p.items))
                self.wait(lambda target=target: self.acked_count() >= target or not self.live("producer"), self.left(),
                          f"{target} acknowledged items")
                if kind == "kill_consumer":
                    self.fault_kill_consumer()
                elif kind == "kill_producer":
                    self.fault_kill_producer()
                else:
                    self.fault_outage(index)
            self.wait(lambda: not self.live("producer"), self.left(), "the producers to finish")
            self.log(f"producers done: {self.acked_count()} items acknowledged")
            self.check_workers()
            self.drain()
            if not self.live("consumer"):
                self.report.problems.append("no consumer left alive to drain the stream")
            else:
                self.log("drained")
            for w in self.live("consumer"):
                w.stopping = True
                w.proc.send_signal(signal.SIGTERM)
            self.wait(lambda: not self.live("consumer"), min(20.0, max(1.0, self.left())),
                      "the consumers to stop after SIGTERM")
            for w in self.workers:
                if w.role == "consumer" and w.stopping:
                    rc = w.proc.returncode
                    exited = any("exit" in r for r in read_lines(w.out)[0])
                    if rc != 0 or not exited:
                        self.report.problems.append(
                            f"{w.name} exited {rc} after SIGTERM (clean exit record: {exited}); "
                            f"stderr:\n{_indent(crash_summary(w.err))}")
            self.log("consumers stopped")
        except ScenarioError as exc:
            self.report.problems.append(f"scenario stopped early: {exc}")
            self.log(f"!! {exc}")
        finally:
            self.check_workers()
            for w in self.live():
                w.proc.kill()
            for w in self.workers:
                try:
                    w.proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
        try:
            self.account()
        except Exception as exc:  # noqa: BLE001 - report what could not be counted
            self.report.problems.append(f"accounting failed: {type(exc).__name__}: {exc}")
        finally:
            self.close()
        return self.report

    def close(self) -> None:
        try:
            from conftest import _forget_client

            if self.url:
                _forget_client(self.url)
        except Exception:  # noqa: BLE001 - any failure is reported and the run goes on
            pass
        if self.server is not None:
            self.server.close()
            self.server = None

    # -- accounting -----------------------------------------------------------------------

    def account(self) -> None:
        stream = self.stream()
        if stream is None:
            return
        stored_batch = stream.store.read(STREAM, 0, None)
        stored = {o: (d.get("p"), d.get("i")) for o, d in zip(stored_batch.offsets, stored_batch.data, strict=True)}
        dead = 0
        if stream.store.get_stream(STREAM + ".dead") is not None:
            dead = stream.store.count(STREAM + ".dead")
        producers = {w.proc.pid: w for w in self.workers if w.role == "producer"}
        consumers = [w for w in self.workers if w.role == "consumer"]
        report = accounting(
            producer_files={pid: read_lines(w.out) for pid, w in producers.items()},
            producer_ids={pid: w.ident for pid, w in producers.items()},
            consumer_files=[read_lines(w.out) for w in consumers],
            stored=stored, killed_pids=self.killed_pids, outages=self.outages, lease=self.p.lease,
            killed_batches=self.killed_batches, dead_letters=dead, strict_batches=self.p.backend == "sqlite")
        acc, problems = report
        acc["consumer_kills"] = sum(1 for w in self.workers if w.role == "consumer" and w.killed)
        acc["producer_kills"] = sum(1 for w in self.workers if w.role == "producer" and w.killed)
        acc["outages"] = len(self.outages)
        # Workers that noticed an outage (the library logs a warning when it starts retrying).
        acc["workers_that_retried"] = sum(1 for w in self.workers if "retrying" in tail(w.err, 1000))
        acc["seconds"] = round(time.monotonic() - self.t0, 1)
        self.report.accounting = acc
        self.report.problems.extend(problems)


def accounting(*, producer_files: dict, producer_ids: dict, consumer_files: list, stored: dict,
               killed_pids: set, outages: list, lease: float, killed_batches: list, dead_letters: int,
               strict_batches: bool) -> tuple[dict, list[str]]:
    """Exact accounting of acknowledged, stored and delivered items (see module doc)."""
    problems: list[str] = []
    acked: dict[int, tuple[int, int]] = {}        # offset -> (p, i)
    acked_items: Counter = Counter()              # (p, i) -> acknowledgements
    retries = 0
    errors: Counter = Counter()
    failed_batches: dict[tuple[int, int, int], int] = {}  # (p, i0, i1) -> failed attempts
    torn = 0
    last_offset: dict[int, int] = {}
    for pid in sorted(producer_files, key=lambda pid: (producer_ids[pid], pid)):
        records, t = producer_files[pid]
        torn += t
        ident = producer_ids[pid]
        for r in records:
            if "e" in r:
                retries += 1
                errors[r["e"]] += 1
                if isinstance(r["b"], list):
                    key = (ident, r["b"][0], r["b"][1])
                    failed_batches[key] = failed_batches.get(key, 0) + 1
            elif "a" in r:
                for i, off in r["a"]:
                    if off in acked and acked[off] != (ident, i):
                        problems.append(f"offset {off} acknowledged for {acked[off]} and for {(ident, i)}")
                    acked[off] = (ident, i)
                    acked_items[(ident, i)] += 1
                    if ident in last_offset and off <= last_offset[ident]:
                        problems.append(f"producer {ident}: offset {off} for item {i} not above "
                                        f"its previous offset {last_offset[ident]}")
                    last_offset[ident] = off
    for item, n in acked_items.items():
        if n > 1:
            problems.append(f"item {item} acknowledged {n} times")
    for off, item in acked.items():
        if off in stored and stored[off] != item:
            problems.append(f"acknowledged offset {off} holds {stored[off]}, not {item}")

    deliveries: dict[int, list[dict]] = defaultdict(list)
    finished: set[tuple[int, int, int]] = set()  # (pid, seq, attempt) whose function returned
    for records, t in consumer_files:
        torn += t
        for r in records:
            if "o" in r:
                deliveries[r["o"]].append(r)
            elif "done" in r:
                finished.add((r["pid"], *r["done"]))
    # Processed = delivered to a function call that returned; a call cut short by SIGKILL
    # does not count (its window must come again).
    processed = {off for off, recs in deliveries.items() if any((r["pid"], r["q"], r["k"]) in finished for r in recs)}
    cut = sorted(off for off in deliveries if off not in processed)
    if cut:
        problems.append(f"{len(cut)} items delivered only to calls cut short by a kill, never again: "
                        f"offsets {_short(cut)}: "
                        + "; ".join(f"{off}: {[(r['pid'], r['q'], r['k']) for r in deliveries[off]]}"
                                    for off in cut[:3]))
    for off, recs in deliveries.items():
        if off not in stored:
            problems.append(f"offset {off} delivered but not stored")
        elif any((r["p"], r["i"]) != stored[off] for r in recs):
            problems.append(f"offset {off} delivered with other data than stored {stored[off]}")

    lost = sorted(off for off in acked if off not in processed)
    undelivered = sorted(off for off in stored if off not in processed)
    unacked_stored = sorted(off for off in stored if off not in acked)
    if lost:
        problems.append(f"{len(lost)} acknowledged items never processed: offsets {_short(lost)}")
    missing = sorted(off for off in acked if off not in stored)
    if missing:
        problems.append(f"{len(missing)} acknowledged items not stored: offsets {_short(missing)}")
    if undelivered:
        problems.append(f"{len(undelivered)} stored items never processed: offsets {_short(undelivered)}")

    # Duplicates: legitimate only for a window a killed consumer had in flight, or one in
    # flight while the server was down (its lease could not be renewed, so it was retried).
    dup_killed = dup_outage = 0
    unexplained = []
    for off, recs in deliveries.items():
        if len(recs) < 2:
            continue
        recs = sorted(recs, key=lambda r: r["t"])
        if any(r["pid"] in killed_pids for r in recs):
            dup_killed += 1
        elif any(s - lease - 1 <= r["t"] <= e + 1 for r in recs[:-1] for s, e in outages):
            dup_outage += 1
        else:
            unexplained.append(off)
    if unexplained:
        problems.append(f"{len(unexplained)} items delivered twice with no process killed and no outage: "
                        f"offsets {_short(sorted(unexplained))}: "
                        + "; ".join(f"{off}: {[(r['pid'], r['q'], r['k']) for r in deliveries[off]]}"
                                    for off in sorted(unexplained)[:5]))

    # Attempts that raised (or were killed) yet stored something: all or none of the batch.
    copies: dict[tuple[int, int], int] = Counter(stored[off] for off in unacked_stored)
    partial = []
    batches = [(k, n) for k, n in failed_batches.items()] + [((p, b[0], b[1]), 1) for p, b in killed_batches]
    for (ident, i0, i1), _ in batches:
        counts = {copies.get((ident, i), 0) for i in range(i0, i1 + 1)}
        if len(counts) > 1:
            partial.append((ident, i0, i1))
    if partial and strict_batches:
        problems.append(f"unacknowledged batches stored in part: {partial}")
    killed_stored = [all(copies.get((p, i), 0) for i in range(b[0], b[1] + 1)) for p, b in killed_batches]
    if dead_letters:
        problems.append(f"{dead_letters} items went to the dead-letter stream")

    acc = {
        "acknowledged": len(acked),
        "stored": len(stored),
        "delivered": len(processed),
        "deliveries": sum(len(v) for v in deliveries.values()),
        "deliveries_cut_by_kill": sum(1 for v in deliveries.values() for r in v
                                      if (r["pid"], r["q"], r["k"]) not in finished),
        "duplicated": sum(1 for v in deliveries.values() if len(v) > 1),
        "duplicated_killed_consumer": dup_killed,
        "duplicated_outage": dup_outage,
        "duplicated_unexplained": len(unexplained),
        "lost": len(lost),
        "undelivered_stored": len(undelivered),
        "producer_retries": retries,
        "producer_errors": dict(errors),
        "unacknowledged_attempts_stored": len(unacked_stored),
        "partial_unacknowledged_batches": len(partial),
        "killed_extends": len(killed_stored),
        "killed_extends_stored": sum(killed_stored),
        "dead_lettered": dead_letters,
        "torn_lines": torn,
    }
    return acc, problems


def _short(values: list, n: int = 10) -> str:
    return ", ".join(map(str, values[:n])) + (f" … (+{len(values) - n})" if len(values) > n else "")


def _indent(text: str) -> str:
    return "\n".join("    | " + line for line in text.splitlines())


def ferretdb_or_skip() -> str:
    """The FerretDB binary; without one, skip locally and fail in CI (conftest's rule)."""
    import pytest
    from conftest import IN_CI, _ferretdb_binary

    binary = _ferretdb_binary()
    if binary is None:
        message = "FerretDB not found: run scripts/install-ferretdb.sh"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return binary


if __name__ == "__main__":
    role, rest = sys.argv[1], sys.argv[2:]
    sys.exit({"producer": producer_main, "consumer": consumer_main}[role](rest))
