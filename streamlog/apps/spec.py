"""The pipeline file of ``streamlog up``: parse and validate it, all of it, before anything starts.

A pipeline file is TOML::

    url = "sqlite:///pipeline.db"          # optional: the database of every stage

    [stages.sensors]                        # a program the runner supervises (a producer)
    command = ["python", "sensors.py"]

    [stages.trainer]                        # a learner on a stream
    stream = "labelled"
    learner = "regression"
    params = { features = ["x1", "x2"], target = "y" }
    size = 60

    [stages.alert]                          # any consumer function
    stream = "predictions"
    function = "alerts:check"
    size = 40
    step = 10
    sink = "alerts"

:func:`load_app` returns an :class:`AppSpec` or raises :class:`SpecError`, whose one-line
message names the file, the line and the key (``app.toml:7: stages.trainer: unknown key
'sise' (did you mean 'size'?)``) — TOML syntax errors too. Validation reads nothing but
the file (no database, no import of the stages' code), so it is safe and fast to run
anywhere (``streamlog up --check``). What only the consumer itself can check (an
emitter's deeper rules, a function that does not import) is reported by the stage at
start-up and stops the runner with the same kind of message.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import ConsumerError, StreamlogError
from ..learners.kinds import KINDS as LEARNERS  # ``learner = …`` values: the one registry of learner kinds
from ..names import check_name
from ..options import OPTION_CLASSES, ConsumerOptions, Option, WindowOptions, option_fields
from .toml_lines import Lines

#: stage kinds: exactly one of these keys per stage
KINDS = ("function", "learner", "predict", "command")
#: window options (:class:`~streamlog.options.WindowOptions`), passed to :func:`streamlog.streaming` as given
WINDOW_KEYS = tuple(field.name for field, info in option_fields(WindowOptions) if info.pipeline is None)
#: consumer options (:class:`~streamlog.options.ConsumerOptions`), passed to :func:`streamlog.streaming`
#: as given; ``url`` is a stage key too, checked (and made absolute) with the stage's own keys
CONSUMER_KEYS = tuple(field.name for field, info in option_fields(ConsumerOptions)
                      if info.pipeline is None and info.kind != "url")
#: how each option key's value is checked
OPTION_INFO = {field.name: info for cls in OPTION_CLASSES for field, info in option_fields(cls)}
STAGE_KEYS = ("stream", *KINDS, "params", *WINDOW_KEYS, *CONSUMER_KEYS, "replicas", "url")
#: what a command stage may have besides ``command``
COMMAND_KEYS = ("command", "replicas", "url")
TOP_KEYS = ("url", "stages", "restart", "stop_timeout")
RESTART_KEYS = ("delay", "max_delay", "max_crashes", "within")
PREDICT_KEYS = ("stage", "stream", "group", "model", "name", "reload_every", "keep", "proba")


class SpecError(StreamlogError, ValueError):
    """The pipeline file is not valid: the message names the file, the line and the key."""

    exit_code = 2

    def __init__(self, message: str, path: str | Path = "", line: int | None = None, key: str = ""):
        self.path, self.line, self.key, self.reason = str(path), line, key, message
        where = self.path + (f":{line}" if line else "")
        super().__init__(": ".join(part for part in (where, key, message) if part))


@dataclass(frozen=True)
class Restart:
    """Supervision rules: a crashed stage is restarted after ``delay`` seconds, doubling per
    crash up to ``max_delay``; ``max_crashes`` crashes within ``within`` seconds stop the app."""

    delay: float = 0.5
    max_delay: float = 30.0
    max_crashes: int = 5
    within: float = 60.0

    def backoff(self, crashes: int) -> float:
        """Seconds before the restart that follows the ``crashes``-th recent crash."""
        return min(self.max_delay, self.delay * 2 ** max(0, crashes - 1))


@dataclass(frozen=True)
class Stage:
    """One stage of a pipeline, validated. ``kind`` is one of :data:`KINDS`; ``runs`` is
    what that key holds (``"module:callable"``, a learner name, the predict table or the
    command). ``window`` and ``options`` hold the :func:`streamlog.streaming` options that
    were given, ``params`` the learner's keyword arguments."""

    name: str
    kind: str
    runs: Any
    stream: str | None = None
    window: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    replicas: int = 1
    url: str | None = None
    line: int = 0

    @property
    def group(self) -> str | None:
        """The consumer group: ``group =`` when given, else the stage's name (replicas share it)."""
        if self.kind == "command":
            return None
        return self.options.get("group", self.name)

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "runs": self.runs, "stream": self.stream,
                "window": self.window, "options": self.options, "params": self.params,
                "replicas": self.replicas, "url": self.url, "line": self.line}

    @classmethod
    def from_dict(cls, data: dict) -> "Stage":
        return cls(**data)


@dataclass(frozen=True)
class AppSpec:
    """A validated pipeline file: its stages in file order, the default ``url``, the
    supervision rules and how long a graceful stop may take (``stop_timeout``)."""

    path: Path
    stages: dict[str, Stage]
    url: str | None = None
    restart: Restart = Restart()
    stop_timeout: float = 30.0

    @property
    def directory(self) -> Path:
        """Where the file is: stages' modules and commands are found relative to it."""
        return self.path.parent

    def select(self, names: Iterable[str] | None) -> list[Stage]:
        """The stages named (all when ``names`` is empty), in file order; an unknown
        name is a :class:`SpecError`."""
        names = list(names or ())
        for name in names:
            if name not in self.stages:
                raise SpecError(f"no stage {name!r}{_suggest(name, self.stages)} "
                                f"(stages: {', '.join(self.stages)})", self.path, key="--stage")
        return [s for s in self.stages.values() if not names or s.name in names]


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---------------------------------------------------------------------------
# loading


def load_app(path: str | Path, text: str | None = None) -> AppSpec:
    """Read and validate the pipeline file at ``path`` (or the TOML ``text`` given for it).

    Raises :class:`SpecError` on the first problem found, naming file, line and key;
    nothing is started, imported or connected."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise SpecError("reading pipeline files needs Python 3.11 or the tomli package") from None

    path = Path(path)
    shown = str(path)
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SpecError("no such file", shown) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(f"cannot read the file: {exc}", shown) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\(at line (\d+), column (\d+)\)", message)
        line = int(found.group(1)) if found else None
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", message) or "invalid TOML"
        if found:
            reason += f" (column {found.group(2)})"
        raise SpecError(f"TOML syntax error: {reason}", shown, line) from None
    return _Checker(path, Lines(text)).app(data)


class _Checker:
    def __init__(self, path: Path, lines: Lines):
        self.path = path
        self.lines = lines

    def fail(self, message: str, *key: str) -> SpecError:
        return SpecError(message, self.path, self.lines.line(*key), ".".join(key))

    def unknown(self, table: dict, allowed: Iterable[str], *where: str) -> None:
        allowed = list(allowed)
        for key in table:
            if key not in allowed:
                raise self.fail(f"unknown key {key!r}{_suggest(key, allowed)}", *where, key)

    # -- scalars --------------------------------------------------------------

    def string(self, value: Any, *key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(f"must be a non-empty string, not {_show(value)}", *key)
        return value

    def name(self, value: Any, what: str, *key: str) -> str:
        try:
            return check_name(self.string(value, *key), what)
        except StreamlogError as exc:
            if isinstance(exc, SpecError):
                raise
            raise self.fail(str(exc), *key) from None

    def integer(self, value: Any, low: int, *key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.fail(f"must be an integer >= {low}, not {_show(value)}", *key)
        return value

    def seconds(self, value: Any, *key: str, zero: bool = False) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < 0 or (value == 0 and not zero) or value > 10 * 365 * 86400:
            bound = ">= 0" if zero else "> 0"
            raise self.fail(f"must be a number of seconds {bound}, not {_show(value)}", *key)
        return float(value)

    def url(self, value: Any, *key: str) -> str:
        from ..config import mask_url, parse_url

        text = self.string(value, *key)
        try:
            location = parse_url(text)
        except StreamlogError as exc:
            raise self.fail(mask_url(str(exc)), *key) from None
        if location.kind == "sqlite" and not location.path.is_absolute():
            # relative to the pipeline file, not to wherever `streamlog up` was run from
            return f"sqlite:///{(self.path.parent / location.path).resolve()}"
        return text

    # -- the file -------------------------------------------------------------

    def app(self, data: dict) -> AppSpec:
        self.unknown(data, TOP_KEYS)
        url = self.url(data["url"], "url") if "url" in data else None
        restart = self.restart(data.get("restart", {}))
        stop_timeout = self.seconds(data["stop_timeout"], "stop_timeout") if "stop_timeout" in data else 30.0
        stages = data.get("stages")
        if stages is None:
            raise SpecError("no stages: add a table per stage, e.g. [stages.trainer]", self.path, 1)
        if not isinstance(stages, dict) or not stages:
            raise self.fail("must hold one table per stage, e.g. [stages.trainer]", "stages")
        checked = {name: self.stage(name, table) for name, table in stages.items()}
        for stage in checked.values():
            if stage.kind == "predict" and "stage" in stage.runs:
                checked[stage.name] = self.predict_stage(stage, checked)
        return AppSpec(self.path, checked, url, restart, stop_timeout)

    def predict_stage(self, stage: Stage, stages: dict[str, Stage]) -> Stage:
        """``predict = { stage = "trainer" }``: the learner's stream, group, kind and name."""
        from dataclasses import replace

        name = stage.runs["stage"]
        key = ("stages", stage.name, "predict", "stage")
        trainer = stages.get(name)
        if trainer is None:
            raise self.fail(f"no stage {name!r}{_suggest(name, stages)} in this file", *key)
        if trainer.kind != "learner":
            raise self.fail(f"stage {name!r} is a {trainer.kind} stage, not a learner", *key)
        runs = {k: v for k, v in stage.runs.items() if k != "stage"}
        runs.update(stream=trainer.stream, group=trainer.group, model=trainer.runs)
        if "name" in trainer.params:
            runs["name"] = trainer.params["name"]
        if trainer.url is not None:  # the checkpoints are in the trainer's database
            runs["url"] = trainer.url
        return replace(stage, runs=runs)

    def restart(self, table: Any) -> Restart:
        if not isinstance(table, dict):
            raise self.fail(f"must be a table (delay, max_delay, max_crashes, within), not {_show(table)}", "restart")
        self.unknown(table, RESTART_KEYS, "restart")
        values: dict[str, Any] = {}
        for key in ("delay", "max_delay", "within"):
            if key in table:
                values[key] = self.seconds(table[key], "restart", key, zero=key != "within")
        if "max_crashes" in table:
            values["max_crashes"] = self.integer(table["max_crashes"], 1, "restart", "max_crashes")
        return Restart(**values)

    def stage(self, name: str, table: Any) -> Stage:
        where = ("stages", name)
        self.name(name, "stage", *where)
        if not isinstance(table, dict):
            raise self.fail(f"a stage must be a table ([stages.{name}]), not {_show(table)}", *where)
        self.unknown(table, STAGE_KEYS, *where)
        kinds = [k for k in KINDS if k in table]
        if len(kinds) != 1:
            found = " and ".join(repr(k) for k in kinds) if kinds else "none"
            key = where + ((kinds[1],) if len(kinds) > 1 else ())
            raise self.fail(f"a stage needs exactly one of {', '.join(KINDS)} (found {found})", *key)
        kind = kinds[0]
        line = self.lines.line(*where)
        replicas = self.integer(table["replicas"], 1, *where, "replicas") if "replicas" in table else 1
        url = self.url(table["url"], *where, "url") if "url" in table else None
        if kind == "command":
            for key in table:
                if key not in COMMAND_KEYS:
                    raise self.fail(f"a command stage runs a program: {key!r} does not apply "
                                    f"(it takes {', '.join(COMMAND_KEYS)})", *where, key)
            command = table["command"]
            if (not isinstance(command, list) or not command
                    or not all(isinstance(part, str) and part for part in command)):
                raise self.fail(f"must be a non-empty list of strings (the program and its arguments), "
                                f"not {_show(command)}", *where, "command")
            return Stage(name, kind, list(command), replicas=replicas, url=url, line=line)
        if "stream" not in table:
            raise self.fail(f"a {kind} stage needs stream = \"NAME\" (the stream it consumes)", *where)
        stream = self.name(table["stream"], "stream", *where, "stream")
        runs = self.runs_value(kind, table[kind], *where)
        params = table.get("params", {})
        if "params" in table and kind != "learner":
            raise self.fail("params = {…} are the learner's options: only for learner stages", *where, "params")
        if not isinstance(params, dict):
            raise self.fail(f"must be a table of the learner's options, not {_show(params)}", *where, "params")
        if kind == "learner":
            self.learner_params(runs, params, *where)
        window = self.window(table, *where)
        options = self.options(table, *where)
        if kind == "learner" and (replicas > 1 or options.get("workers", 1) > 1):
            key = "replicas" if replicas > 1 else "workers"
            raise self.fail("a learner keeps one model and learns windows in order: run it with one "
                            "replica and one worker (train several models with several stages)", *where, key)
        return Stage(name, kind, runs, stream, window, options, dict(params), replicas, url, line)

    def runs_value(self, kind: str, value: Any, *where: str) -> Any:
        key = (*where, kind)
        if kind == "function":
            text = self.string(value, *key)
            module, sep, attr = text.rpartition(":")
            if not sep or not module or not attr:
                raise self.fail(f"expected \"MODULE:CALLABLE\" (e.g. \"alerts:check\" or "
                                f"\"jobs/alerts.py:check\"), not {text!r}", *key)
            return text
        if kind == "learner":
            text = self.string(value, *key)
            if text not in LEARNERS:
                raise self.fail(f"unknown learner {text!r}{_suggest(text, LEARNERS)}; "
                                f"use one of {', '.join(LEARNERS)}", *key)
            return text
        # predict
        if not isinstance(value, dict):
            raise self.fail("must be a table: predict = { stage = \"trainer\" } or "
                            "{ stream = \"…\", group = \"…\", model = \"regression\" }", *key)
        self.unknown(value, PREDICT_KEYS, *key)
        table: dict[str, Any] = {}
        if "stage" in value:
            other = [k for k in ("stream", "group", "model", "name") if k in value]
            if other:
                raise self.fail(f"give stage = … (a learner stage of this file) or stream/group/model, "
                                f"not both ({other[0]!r})", *key, other[0])
            table["stage"] = self.name(value["stage"], "stage", *key, "stage")
        else:
            for required in ("stream", "group"):
                if required not in value:
                    raise self.fail(f"needs {required} = \"…\" (where the learner learns), or stage = "
                                    "\"…\" naming a learner stage of this file", *key)
            table["stream"] = self.name(value["stream"], "stream", *key, "stream")
            table["group"] = self.name(value["group"], "group", *key, "group")
            if "model" not in value and "name" not in value:
                raise self.fail("needs model = \"regression\"|\"kmeans\"|\"partial_fit\" or the "
                                "learner's name = \"…\"", *key)
            if "model" in value:
                model = self.string(value["model"], *key, "model")
                if model not in LEARNERS:
                    raise self.fail(f"unknown learner {model!r}{_suggest(model, LEARNERS)}; use one of "
                                    f"{', '.join(LEARNERS)}", *key, "model")
                table["model"] = model
            if "name" in value:
                table["name"] = self.name(value["name"], "model", *key, "name")
        if "reload_every" in value:
            table["reload_every"] = self.seconds(value["reload_every"], *key, "reload_every", zero=True)
        if "keep" in value:
            keep = value["keep"]
            if not isinstance(keep, list) or not all(isinstance(k, str) and k for k in keep):
                raise self.fail(f"must be a list of field names, not {_show(keep)}", *key, "keep")
            table["keep"] = list(keep)
        if "proba" in value:
            if not isinstance(value["proba"], bool):
                raise self.fail(f"must be true or false, not {_show(value['proba'])}", *key, "proba")
            table["proba"] = value["proba"]
        return table

    def learner_params(self, learner: str, params: dict, *where: str) -> None:
        key = (*where, "params")
        needed = LEARNERS[learner].required
        for name in needed:
            if name not in params:
                raise self.fail(f"the {learner} learner needs {name} = …", *key)
        features = params["features"]
        if not isinstance(features, list) or not features or not all(isinstance(f, str) and f for f in features):
            raise self.fail(f"must be a non-empty list of field names, not {_show(features)}", *key, "features")
        if learner == "partial_fit":
            estimator = self.string(params["estimator"], *key, "estimator")
            if ":" not in estimator:
                raise self.fail("expected \"MODULE:NAME\" of an estimator class or instance "
                                "(e.g. \"sklearn.linear_model:SGDRegressor\")", *key, "estimator")
        if learner == "kmeans":
            self.integer(params["k"], 1, *key, "k")

    def option(self, info: Option, value: Any, *key: str) -> None:
        """Check the value of one option key by its kind (:class:`~streamlog.options.Option`)."""
        if info.kind == "count":
            self.integer(value, info.minimum, *key)
        elif info.kind == "seconds":
            self.seconds(value, *key, zero=info.zero)
        elif info.kind == "switch":
            if not isinstance(value, bool):
                raise self.fail(f"must be true or false, not {_show(value)}", *key)
        elif info.kind == "field":
            self.string(value, *key)
        elif info.kind == "group":
            self.name(value, "group", *key)
        elif info.kind == "sink":
            sink = self.string(value, *key)
            if "://" not in sink:
                self.name(sink, "sink stream", *key)
        elif info.kind == "start":
            if value not in ("earliest", "latest") and (isinstance(value, bool) or not isinstance(value, int)
                                                         or value < 0):
                raise self.fail(f"must be \"earliest\", \"latest\" or an offset >= 0, not {_show(value)}", *key)
        else:  # pragma: no cover - a new kind of pipeline key needs its check here
            raise TypeError(f"no pipeline-file check for an option of kind {info.kind!r}")

    def window(self, table: dict, *where: str) -> dict:
        window = {k: table[k] for k in WINDOW_KEYS if k in table}
        for key, value in window.items():
            self.option(OPTION_INFO[key], value, *where, key)
        kinds = [k for k in ("size", "interval", "gap") if k in window]
        if len(kinds) > 1:
            raise self.fail(f"give one of size (count windows), interval (time windows) or gap (session "
                            f"windows), not {' and '.join(kinds)}", *where, kinds[1])
        rules = (("step", "size", "sliding count windows: size = N, step = S"),
                 ("every", "interval", "sliding time windows: interval = T, every = S"),
                 ("relaxed", "interval", "relaxed time windows: interval = T, relaxed = true"),
                 ("timeout", "size", "a partial count window after a timeout: size = N, timeout = S"),
                 ("grace", "interval", "fixed time windows: interval = T, grace = S"))
        for key, needs, example in rules:
            if key in window and needs not in window and not (key == "relaxed" and window[key] is False):
                raise self.fail(f"{key} needs {needs} ({example})", *where, key)
        if window.get("relaxed") and ("every" in window or "grace" in window):
            other = "every" if "every" in window else "grace"
            raise self.fail(f"{other} does not apply to relaxed time windows", *where, other)
        if "max_size" in window and not ("gap" in window or window.get("relaxed")):
            raise self.fail("max_size applies to relaxed time windows (interval = T, relaxed = true) and "
                            "session windows (gap = G)", *where, "max_size")
        try:
            WindowOptions(**window).validate()  # the rules streaming() itself applies
        except ConsumerError as exc:
            named = re.match(r"(\w+)=", str(exc))
            key = named.group(1) if named and named.group(1) in window else ""
            raise self.fail(str(exc), *where, *([key] if key else [])) from None
        return window

    def options(self, table: dict, *where: str) -> dict:
        options = {k: table[k] for k in CONSUMER_KEYS if k in table}
        for key, value in options.items():
            self.option(OPTION_INFO[key], value, *where, key)
        return options


def _show(value: Any) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} ({text if len(text) <= 40 else text[:37] + '...'})"
