"""Estimator → plain data: how :class:`~streamlog.consumers.PartialFit` writes a checkpoint.

:func:`encode` walks an estimator's attributes and returns JSON-able data in the format of
:mod:`.state_format`. Guarantees:

* **never pickles, never stores code.** Numbers, strings, containers, numpy arrays,
  random generator states and the attributes of objects of scikit-learn, river and the
  estimator's own module are written as data; functions, classes, bound methods and
  ``functools.partial`` objects only by their importable name (``module:qualname``),
  which is for display: the decoder never acts on it. Lambdas, closures and extension
  objects without attributes are not written at all (listed in the object's
  ``skipped``);
* **suits every backend:** no list directly holds a list (FerretDB v1 rejects nested
  arrays), integers beyond int64 and non-finite floats are tagged strings;
* **shared references stay shared** (``ref`` entries), so a decoded model has the same
  object graph;
* **round trip:** for the models of the conformance suite (``docs/ml.md``,
  ``tests/test_learner_conformance.py``), ``decode(encode(m), fresh)`` encodes to the same
  data, predicts the same, and learns on exactly as ``m`` does;
* anything else (an object of another library, an array of an exotic dtype) raises
  :class:`~.state_format.UnsupportedState` naming where it is.

The encoder imports modules only to check that a function's name leads back to the
function itself (on live objects of the model, while writing); it never runs model code.
"""

from __future__ import annotations

import functools
import importlib
import math
import random
import types
from collections import Counter, OrderedDict, defaultdict, deque
from typing import Any

import numpy as np

from .state_format import CODE, TAG, UnsupportedState, attributes, class_name

__all__ = ["encode"]

_INT64 = 2**63
_SKIP = object()
_CODE_MODULES = ("builtins", "math", "operator", "collections", "functools", "random", "statistics", "numpy")


def _allowed(module: str, extra: tuple[str, ...]) -> bool:
    """Modules whose objects are written attribute by attribute."""
    return module.startswith(("river.", "sklearn.")) or module in extra


def _allowed_code(module: str, extra: tuple[str, ...]) -> bool:
    """Modules whose functions and classes a checkpoint may name."""
    return _allowed(module, extra) or module in _CODE_MODULES or module.startswith("numpy.")


def _importable_name(v: Any) -> str | None:
    """``module:qualname`` if importing that gives back ``v`` itself (no lambdas or closures).

    Encoding only, on live objects of the model: the decoder never imports anything."""
    module = getattr(v, "__module__", None)
    qualname = getattr(v, "__qualname__", None) or getattr(v, "__name__", None)
    if isinstance(v, np.ufunc):
        module, qualname = "numpy", v.__name__
    if not module or not qualname or "<" in qualname:
        return None
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return f"{module}:{qualname}" if found is v else None


def _plain_key(key: Any) -> bool:
    return (type(key) is str and key != "" and key != TAG and not key.startswith("$")
            and "." not in key and "\x00" not in key)


class _Encoder:
    def __init__(self, modules: tuple[str, ...]):
        self.modules = modules
        self.ids: dict[int, int] = {}
        self.alive: list[Any] = []  # keeps encoded objects alive so their ids stay unique

    def _shared(self, value: Any) -> tuple[bool, int]:
        key = id(value)
        if key in self.ids:
            return True, self.ids[key]
        self.ids[key] = len(self.ids)
        self.alive.append(value)
        return False, self.ids[key]

    def value(self, v: Any, path: str) -> Any:
        t = type(v)
        if v is None or t is bool or t is str:
            return v
        if t is float:
            return v if math.isfinite(v) else {TAG: "float", "v": repr(v)}
        if t is int:
            return v if -_INT64 <= v < _INT64 else {TAG: "int", "v": str(v)}
        if isinstance(v, np.generic) and not isinstance(v, (np.datetime64, np.timedelta64, np.void)):
            return self.value(v.item(), path)
        if t is list:
            return [self.elem(x, f"{path}[{i}]") for i, x in enumerate(v)]
        if t is tuple:
            return {TAG: "tuple", "v": [self.elem(x, f"{path}[{i}]") for i, x in enumerate(v)]}
        if t is set or t is frozenset:
            items = list(v)
            try:
                items.sort()
            except TypeError:
                pass
            return {TAG: t.__name__, "v": [self.elem(x, f"{path}{{}}") for x in items]}
        if isinstance(v, dict):
            return self.mapping(v, path)
        if isinstance(v, np.ndarray):
            return self.array(v, path)
        if isinstance(v, (bool, int, float, str)):  # subclasses (e.g. enums): their base value
            return self.value((bool if isinstance(v, bool) else int if isinstance(v, int)
                               else float if isinstance(v, float) else str)(v), path)
        if isinstance(v, np.dtype):
            return {TAG: "dtype", "v": v.str}
        if isinstance(v, CODE):
            return self.code(v, path)
        if isinstance(v, deque):
            return {TAG: "deque", "maxlen": v.maxlen, "v": [self.elem(x, f"{path}[{i}]") for i, x in enumerate(v)]}
        if t is random.Random or isinstance(v, (np.random.RandomState, np.random.Generator)):
            seen, n = self._shared(v)
            if seen:
                return {TAG: "ref", "id": n}
            if t is random.Random:
                return {TAG: "random", "id": n, "state": self.value(v.getstate(), path)}
            if isinstance(v, np.random.RandomState):
                return {TAG: "RandomState", "id": n, "state": self.value(v.get_state(), path)}
            return {TAG: "Generator", "id": n, "bit_generator": type(v.bit_generator).__name__,
                    "state": self.value(v.bit_generator.state, path)}
        module = t.__module__ or ""
        if t.__name__ == "VectorDict" and module.startswith("river") and hasattr(v, "to_dict"):
            seen, n = self._shared(v)
            if seen:
                return {TAG: "ref", "id": n}
            return {TAG: "vdict", "id": n, "v": self.mapping(v.to_dict(), path)}
        if hasattr(v, "__dict__") or getattr(t, "__slots__", None):
            if not _allowed(module, self.modules):
                raise UnsupportedState(f"{path}: objects of class {class_name(t)} are not checkpointed "
                                       "(only scikit-learn, river and the estimator's own module)")
            return self.obj(v, path)
        if _allowed(module, self.modules) or callable(v):
            return _SKIP  # an extension object without data attributes (rebuilt by the estimator)
        raise UnsupportedState(f"{path}: a {class_name(t)} is not plain data")

    def code(self, v: Any, path: str) -> Any:
        """A function, method, partial or class *by reference* (its importable name), or _SKIP."""
        if isinstance(v, functools.partial):
            func = self.code(v.func, path)
            if func is _SKIP:
                return _SKIP
            try:
                args = [self.elem(x, f"{path}<arg>") for x in v.args]
                keywords = {k: self.item(x, f"{path}<{k}>") for k, x in v.keywords.items()}
            except UnsupportedState:
                return _SKIP
            return {TAG: "partial", "func": func, "args": args, "keywords": keywords}
        owner = getattr(v, "__self__", None)
        if isinstance(v, (types.MethodType, types.BuiltinMethodType)) and owner is not None \
                and not isinstance(owner, types.ModuleType):
            name = getattr(v, "__name__", None)
            if not name or getattr(owner, name, None) != v:
                return _SKIP
            try:
                bound = self.value(owner, f"{path}.__self__")
            except UnsupportedState:
                return _SKIP
            if bound is _SKIP:
                return _SKIP
            return {TAG: "method", "self": bound, "name": name}
        name = _importable_name(v)
        if name is None or not _allowed_code(name.partition(":")[0], self.modules):
            return _SKIP
        return {TAG: "class" if isinstance(v, type) else "function", "name": name}

    def item(self, v: Any, path: str) -> Any:
        out = self.value(v, path)
        if out is _SKIP:
            raise UnsupportedState(f"{path}: a {class_name(type(v))} inside a container is not plain data")
        return out

    def elem(self, v: Any, path: str) -> Any:
        """An element of a list: a list in a list is wrapped (no nested arrays, for FerretDB)."""
        out = self.item(v, path)
        return {TAG: "list", "v": out} if type(out) is list else out

    def mapping(self, v: dict, path: str) -> Any:
        if type(v) is dict and all(_plain_key(k) for k in v):
            return {k: self.item(x, f"{path}.{k}") for k, x in v.items()}
        kind = type(v).__name__ if isinstance(v, (OrderedDict, Counter, defaultdict)) else "dict"
        out = {TAG: "dict", "kind": kind, "keys": [self.elem(k, f"{path}<key>") for k in v],
               "values": [self.elem(x, f"{path}[{k!r}]") for k, x in v.items()]}
        if kind == "defaultdict":
            factory = None if v.default_factory is None else self.code(v.default_factory, f"{path}<factory>")
            if factory is not _SKIP:  # else only an existing container can take the items
                out["factory"] = factory
        return out

    def array(self, v: np.ndarray, path: str) -> dict:
        kind = v.dtype.kind
        flat = v.ravel()
        if kind in "biu":
            data = flat.tolist()
            if kind == "u" and flat.size and int(flat.max()) >= _INT64:
                data = [str(x) for x in data]
        elif kind == "f":
            data = flat.tolist()
            if not np.isfinite(flat).all():
                data = [self.value(x, path) for x in data]
        elif kind in "OUS":
            data = [self.elem(x, f"{path}[]") for x in flat.tolist()]
        else:
            raise UnsupportedState(f"{path}: numpy arrays of dtype {v.dtype} are not checkpointed")
        return {TAG: "ndarray", "dtype": v.dtype.str, "shape": list(v.shape), "data": data}

    def obj(self, v: Any, path: str) -> dict:
        seen, n = self._shared(v)
        if seen:
            return {TAG: "ref", "id": n}
        attrs, skipped = {}, []
        for name, x in attributes(v).items():
            out = self.value(x, f"{path}.{name}")
            if out is _SKIP:
                skipped.append(name)
            else:
                attrs[name] = out
        return {TAG: "obj", "cls": class_name(type(v)), "id": n, "attrs": attrs, "skipped": skipped}



def encode(obj: Any, modules: tuple[str, ...] = ()) -> Any:
    """``obj`` (an estimator) as plain data; :class:`UnsupportedState` if it holds other things.

    ``modules``: more modules (beside scikit-learn, river and ``obj``'s own) whose objects
    are written attribute by attribute."""
    return _Encoder(tuple(modules) + (type(obj).__module__,)).value(obj, type(obj).__name__)
