"""Consumer functions named by ``MODULE:FUNCTION`` (``streamlog run``, pipeline files of
``streamlog up``): the operator's own code, named on the command line or in the file —
never anything read from the database or the network."""

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


def load_target(target: str) -> Callable:
    """Import ``MODULE:FUNCTION``. MODULE is a dotted module (importable from the current
    directory) or a path to a ``.py`` file; FUNCTION may be a dotted attribute path and any
    callable (a function, an instance with ``__call__``, a bound method). A function
    decorated with ``@streamlog.streaming(...)`` is returned as the plain function: the
    module is imported with the decorator deferred (it does not start consuming)."""
    fn = load_decorated(target)
    return fn.fn if isinstance(fn, StreamingTarget) else fn


def load_decorated(target: str) -> Callable:
    """:func:`load_target`, but a function decorated with ``@streamlog.streaming(...)``
    comes as its :class:`~streamlog.consumers.streaming.StreamingTarget`, carrying the
    decorator's stream and options (``streamlog run`` takes them as its defaults)."""
    with deferred():
        return _load(target)


def _load(target: str) -> Callable:
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise ConsumerError(f"{target!r}: expected MODULE:FUNCTION (e.g. mymodule:consume or jobs/consume.py:main)")
    is_path = module_name.endswith(".py") or os.sep in module_name or "/" in module_name
    if is_path:
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
    else:
        cwd = os.getcwd()
        if cwd not in sys.path and "" not in sys.path:
            sys.path.insert(0, cwd)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
                raise ConsumerError(f"cannot import {module_name!r}: {exc} (run from the directory "
                                    "that contains it, or give a path to the .py file)") from None
            raise
    fn: Any = module
    for part in attr.split("."):
        try:
            fn = getattr(fn, part)
        except AttributeError:
            raise ConsumerError(f"{target!r}: {module_name} has no attribute {attr!r}") from None
    if isinstance(fn, type):
        raise ConsumerError(f"{target!r} is a class; point at a function or an instance "
                            f"(e.g. model = {fn.__name__}(...) in {module_name}, then {module_name}:model)")
    if not callable(fn):
        raise ConsumerError(f"{target!r} is not callable (it is a {type(fn).__name__})")
    return fn
