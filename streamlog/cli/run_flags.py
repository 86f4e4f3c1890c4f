"""The option flags of ``streamlog run``, generated from :mod:`streamlog.options`.

Each field of :class:`~streamlog.options.WindowOptions` and
:class:`~streamlog.options.ConsumerOptions` whose :class:`~streamlog.options.Option` has
no ``cli=`` reason becomes one typer option, named after the field (``max_size`` →
``--max-size``), parsed by its kind: counts by :func:`~.common.digits` (plain decimal
digits, at least the option's minimum), seconds by :func:`~.common.duration` (finite,
> 0 or >= 0), switches as flags. Two kinds are special: ``blocking`` is ``--once``
(its inverse) and ``url`` is the global ``--url``, which the command declares itself.

:func:`with_option_flags` gives a command function these parameters (its
``__signature__``, which typer reads), and :func:`option_values` turns what typer passes
back into ``streaming()`` options.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
from typing import Annotated, Any, Callable, Optional

import typer

from streamlog.options import OPTION_CLASSES, Option, option_fields

from .common import digits, duration


class Start(str, enum.Enum):
    """``--start``: where a new group starts."""

    earliest = "earliest"
    latest = "latest"


#: the metavar shown for each kind of value
METAVARS = {"count": "N", "seconds": "SECONDS", "field": "FIELD", "group": "GROUP", "sink": "STREAM"}


def flag_options() -> list[tuple[dataclasses.Field, Option]]:
    """The options that ``streamlog run`` generates a flag for, in the dataclasses' order
    (not ``url``: the command has the global ``--url``)."""
    return [(field, info) for cls in OPTION_CLASSES for field, info in option_fields(cls)
            if info.cli is None and info.kind != "url"]


def _parameter(field: dataclasses.Field, info: Option) -> inspect.Parameter:
    """The typer parameter of one option."""
    names = [info.flag_for(field.name), *([info.short] if info.short else [])]
    default = field.default
    hidden_default = {"show_default": False} if default is None else {}
    spec: dict[str, Any] = dict(help=info.help, **hidden_default)
    if info.kind in METAVARS:
        spec["metavar"] = METAVARS[info.kind]
    annotation: Any
    if info.kind == "count":
        annotation = Optional[int] if default is None else int
        spec["parser"] = digits(info.minimum)
    elif info.kind == "seconds":
        annotation = Optional[float] if default is None else float
        spec.update(min=0.0 if info.zero else 0.001, callback=duration)
    elif info.kind == "switch":
        annotation = bool
    elif info.kind == "blocking":  # --once: not blocking
        annotation, default = bool, False
    elif info.kind == "start":
        annotation, default = Start, Start(default)
    elif info.kind in ("field", "group", "sink"):
        annotation = Optional[str] if default is None else str
    else:  # pragma: no cover - a new kind needs a parser here
        raise TypeError(f"no streamlog run flag for an option of kind {info.kind!r}")
    return inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[annotation, typer.Option(*names, **spec)])


def with_option_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` (whose ``**flags`` receives the option flags) with a signature listing
    its own parameters, then one per option flag, before its trailing ``verbose`` and
    ``url`` parameters."""
    own = inspect.signature(command, eval_str=True).parameters.values()
    fixed = [p for p in own if p.kind is not inspect.Parameter.VAR_KEYWORD]
    tail = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in fixed if p.name in ("verbose", "url")]
    head = [p for p in fixed if p.name not in ("verbose", "url")]
    parameters = [*head, *(_parameter(field, info) for field, info in flag_options()), *tail]
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    return command


def option_values(flags: dict[str, Any]) -> dict[str, Any]:
    """What typer passed for the option flags, as ``streaming()`` options (``--once`` →
    ``blocking``, ``--start`` → its text)."""
    values = dict(flags)
    if "blocking" in values:
        values["blocking"] = not values["blocking"]
    if isinstance(values.get("start"), Start):
        values["start"] = values["start"].value
    return values
