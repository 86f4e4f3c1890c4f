"""Objects named ``MODULE:NAME`` — consumer functions (``streamlog run``, the function
stages of ``streamlog up``) and a ``partial_fit`` stage's estimator: the operator's own
code, named on the command line or in the pipeline file, never anything read from the
database or the network.

MODULE is a dotted module (importable from the current directory) or a path to a ``.py``
file (its directory goes on ``sys.path``, so it can import its neighbours); NAME may be a
dotted attribute path. :func:`load_object` is the one loader; :func:`load_callable` and
:func:`load_decorated` add the checks a consumer function needs.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

from .consumers.streaming import StreamingTarget, deferred
from .errors import ConsumerError


def load_callable(spec: str) -> Callable:
    """Import ``MODULE:FUNCTION``: any callable (a function, an instance with
    ``__call__``, a bound method), not a class. A function decorated with
    ``@streamlog.streaming(...)`` is returned as the plain function: the module is
    imported with the decorator deferred (it does not start consuming). Raises
    :class:`~streamlog.errors.ConsumerError` naming what is wrong."""
    fn = load_decorated(spec)
    return fn.fn if isinstance(fn, StreamingTarget) else fn


def load_decorated(spec: str) -> Callable:
    """:func:`load_callable`, but a function decorated with ``@streamlog.streaming(...)``
    comes as its :class:`~streamlog.consumers.streaming.StreamingTarget`, carrying the
    decorator's stream and options (``streamlog run`` takes them as its defaults)."""
    with deferred():
        fn = load_object(spec, expected="MODULE:FUNCTION (e.g. mymodule:consume or jobs/consume.py:main)")
    if isinstance(fn, type):
        module_name = spec.rpartition(":")[0]
        raise ConsumerError(f"{spec!r} is a class; point at a function or an instance "
                            f"(e.g. model = {fn.__name__}(...) in {module_name}, then {module_name}:model)")
    if not callable(fn):
        raise ConsumerError(f"{spec!r} is not callable (it is a {type(fn).__name__})")
    return fn


def load_object(spec: str, expected: str = "MODULE:NAME") -> Any:
    """The object ``MODULE:NAME`` names, whatever it is. Raises
    :class:`~streamlog.errors.ConsumerError` for a malformed ``spec`` (saying it
    ``expected`` …), a missing file, a module that cannot be found or a missing attribute;
    an error raised while importing the module itself propagates."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ConsumerError(f"{spec!r}: expected {expected}")
    found: Any = _import_module(module_name)
    for part in attr.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ConsumerError(f"{spec!r}: {module_name} has no attribute {attr!r}") from None
    return found


def is_path(module_name: str) -> bool:
    """Whether the MODULE of ``MODULE:NAME`` is a path to a file (else a dotted module)."""
    return module_name.endswith(".py") or os.sep in module_name or "/" in module_name


def _import_module(module_name: str) -> Any:
    if is_path(module_name):
        path = Path(module_name).expanduser().resolve()
        if not path.is_file():
            raise ConsumerError(f"{module_name}: no such file")
        name = path.stem if path.stem.isidentifier() and path.stem not in sys.modules else \
            "_streamlog_run_" + re.sub(r"\W", "_", path.stem)
        sys.path.insert(0, str(path.parent))  # let the file import its neighbours
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConsumerError(f"{module_name}: cannot be imported as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return module
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ConsumerError(f"cannot import {module_name!r}: {exc} (run from the directory "
                                "that contains it, or give a path to the .py file)") from None
        raise
