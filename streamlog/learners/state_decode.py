"""Plain data → estimator: how :class:`~streamlog.consumers.PartialFit` resumes from a checkpoint.

``decode(data, into=fresh_estimator)`` writes a checkpoint made by :mod:`.state_encode`
back into a freshly constructed estimator of the same class.

**Checkpoints are data, never code.** Anyone who can write to the models collection
(or table) can write a checkpoint, and every consumer that resumes decodes it, so the
decoder never imports, resolves, calls or ``getattr``-s anything named by the data.
What it may create is the allow-list of :mod:`.state_allowlist`:

* a function, class, bound method or ``functools.partial`` in the data is *not*
  resolved: the fresh instance's own value at that place is kept (as for lambdas).
  Where the fresh instance has none, only a name from a fixed map is accepted — the
  builtin types ``int, float, list, dict, set, str, tuple`` and the two static methods
  river's ``EBSTNode`` stores per node — anything else is refused;
* an ``obj`` entry is written into the fresh instance's object at the same place when
  the classes match; a new object is created (``cls.__new__``, no ``__init__``) only
  for a class found in the freshly constructed template, or on the short reviewed list
  of classes that models create while learning. Attributes are set in the instance
  ``__dict__`` (or a declared slot); one that would hide a method or property of the
  class is refused; an object created while learning that held code is refused;
* a ``defaultdict`` keeps the template's factory at that place; one created while
  learning gets its factory from the same fixed map of builtin types, never from a name;
* random generators are restored into fixed classes (``random.Random``, numpy's
  ``RandomState`` and ``Generator`` with one of numpy's bit generators, by a fixed map),
  arrays only with numeric, string or object dtypes;
* an attribute the encoder skipped is left as the fresh instance has it, or rebuilt by
  the estimator's own code from the fresh instance's parameters where the allow-list
  says so (scikit-learn SGD's loss object).

Anything else — or malformed data — raises :class:`~.state_format.UnsupportedState` (a
:class:`~streamlog.errors.ConsumerError`) before the estimator is used.

Decoding writes into the fresh instance *in place* wherever it can (dicts keep their
``defaultdict`` factories, random generators their identity), so no global state is
touched: generators are the fresh instance's own or new ones. Round trip: for the
models of the conformance suite the decoded estimator encodes to the same data and
behaves as the original (``tests/test_learner_conformance.py``).
"""

from __future__ import annotations

import random
from collections import Counter, OrderedDict, defaultdict, deque
from typing import Any

import numpy as np

from .state_allowlist import (
    BIT_GENERATORS,
    DTYPE_KINDS,
    SAFE_FACTORIES,
    known_classes,
    rebuilt_attributes,
    template_classes,
)
from .state_format import TAG, UnsupportedState, attributes, class_name

__all__ = ["decode", "UnsupportedState"]

_MISSING = object()
_DICT_KINDS = {"dict": dict, "OrderedDict": OrderedDict, "Counter": Counter}
_SCALAR_TAGS = ("int", "float")


def _shadows_method(cls: type, attr: str) -> bool:
    """Whether an instance attribute ``attr`` would hide a method or property of ``cls`` (a
    checkpoint may not replace behaviour: found statically, no descriptor runs)."""
    for klass in cls.__mro__:
        if attr in vars(klass):
            found = vars(klass)[attr]
            return callable(found) or hasattr(type(found), "__get__")  # functions, properties, descriptors
    return False


class _Decoder:
    """Rebuilds plain data into a fresh template, as data only.

    Never imports, resolves or calls anything named by the data: code entries (functions,
    classes, methods, partials) keep the fresh instance's own value at that place (or, with
    no value there, come from :data:`SAFE_FACTORIES` or the reviewed functions of
    :func:`~.state_allowlist.known_classes`); objects are created only for classes found in
    the fresh template or in that reviewed list; a ``defaultdict`` gets the template's
    factory or a safe builtin one. Anything else is an :class:`UnsupportedState`."""

    def __init__(self, template: Any, extra: tuple[type, ...] = ()):
        self.memo: dict[int, Any] = {}
        self.classes = template_classes(template)
        for cls in extra:
            self.classes[class_name(cls)] = cls

    def value(self, e: Any, target: Any = _MISSING) -> Any:
        t = type(e)
        if e is None or t is bool or t is int or t is float or t is str:
            return e
        if isinstance(e, bool):
            return bool(e)
        if isinstance(e, int):  # bson.Int64 from pymongo, for ints beyond 32 bits
            return int(e)
        if isinstance(e, float):
            return float(e)
        if t is list:
            olds = target if isinstance(target, list) else []
            return [self.value(x, olds[i] if i < len(olds) else _MISSING) for i, x in enumerate(e)]
        if t is not dict:
            raise UnsupportedState(f"cannot decode a {t.__name__}")
        tag = e.get(TAG)
        if tag is None:
            return self.mapping(list(e.items()), target, "dict")
        if tag == "list":
            return self.value(e["v"], target)
        if tag == "float":
            return float(e["v"])
        if tag == "int":
            return int(e["v"])
        if tag == "tuple":
            olds = target if isinstance(target, tuple) else ()
            return tuple(self.value(x, olds[i] if i < len(olds) else _MISSING) for i, x in enumerate(e["v"]))
        if tag in ("set", "frozenset"):
            return (set if tag == "set" else frozenset)(self.value(x) for x in e["v"])
        if tag == "dict":
            pairs = [(self.value(k), v) for k, v in zip(e["keys"], e["values"], strict=False)]
            if e.get("kind") == "defaultdict" and "factory" in e and not isinstance(target, defaultdict):
                target = defaultdict(self.factory(e["factory"]))
            return self.mapping(pairs, target, e.get("kind", "dict"))
        if tag == "ndarray":
            return self.array(e)
        if tag == "dtype":
            return _dtype(e["v"])
        if tag == "ref":
            if e["id"] not in self.memo:
                raise UnsupportedState(f"a reference to object #{e['id']!r}, which the checkpoint does not hold")
            return self.memo[e["id"]]
        if tag in ("class", "function", "method", "partial"):
            return self.code(e, target)
        if tag == "deque":
            maxlen = e["maxlen"]
            if maxlen is not None and (type(maxlen) is not int or maxlen < 0):
                raise UnsupportedState(f"a deque with maxlen {maxlen!r}")
            return deque((self.value(x) for x in e["v"]), maxlen)
        if tag == "random":
            obj = target if type(target) is random.Random else random.Random()
            obj.setstate(self.value(e["state"]))
        elif tag == "RandomState":
            obj = target if isinstance(target, np.random.RandomState) else np.random.RandomState()
            obj.set_state(self.value(e["state"]))
        elif tag == "Generator":
            kind = BIT_GENERATORS.get(e["bit_generator"]) if isinstance(e["bit_generator"], str) else None
            if kind is None:
                raise UnsupportedState(f"unknown random bit generator {e['bit_generator']!r}")
            if isinstance(target, np.random.Generator) and type(target.bit_generator) is kind:
                obj = target
            else:
                obj = np.random.Generator(kind())
            obj.bit_generator.state = self.value(e["state"])
        elif tag == "vdict":
            if type(target).__name__ == "VectorDict":
                obj = target
                obj.clear()
            else:
                from river.utils import VectorDict

                obj = VectorDict()
            for k, v in self.value(e["v"]).items():
                obj[k] = v
        elif tag == "obj":
            return self.obj(e, target)
        else:
            raise UnsupportedState(f"unknown encoded value {tag!r}")
        self.memo[e["id"]] = obj
        return obj

    def code(self, e: dict, target: Any) -> Any:
        """A function, class, method or partial: never resolved from the data. The fresh
        instance's own one at this place is kept; with none there, only a safe builtin type
        or a reviewed function (:func:`~.state_allowlist.known_classes`) by its exact name."""
        if target is not _MISSING and (callable(target) or isinstance(target, (staticmethod, classmethod))):
            return target
        name = e.get("name") if e[TAG] in ("class", "function") else None
        if isinstance(name, str):
            if name in SAFE_FACTORIES:
                return SAFE_FACTORIES[name]
            known = known_classes()[1]
            if name in known:
                return known[name]
        shown = name if isinstance(name, str) else f"a {e[TAG]}"
        raise UnsupportedState(f"the checkpoint names code ({shown}) where the fresh model has none: "
                               "functions, classes and methods are never loaded from a checkpoint")

    def factory(self, e: Any) -> Any:
        """The factory of a defaultdict created while learning: None or a safe builtin type."""
        if e is None:
            return None
        name = e.get("name") if isinstance(e, dict) and e.get(TAG) in ("class", "function") else None
        if isinstance(name, str) and name in SAFE_FACTORIES:
            return SAFE_FACTORIES[name]
        shown = name if isinstance(name, str) else "code"
        raise UnsupportedState(f"a defaultdict created while learning has factory {shown}: only "
                               f"{', '.join(t.__name__ for t in SAFE_FACTORIES.values())} are rebuilt")

    def mapping(self, pairs: list, target: Any, kind: str) -> Any:
        if isinstance(target, dict) and not (kind != "dict" and type(target).__name__ != kind):
            olds = dict(target)
            target.clear()
            factory = getattr(target, "default_factory", None)  # the template's own (or a safe builtin)
            for k, v in pairs:
                old = olds.get(k, _MISSING)
                if old is _MISSING and factory is not None and _needs_target(v):
                    old = factory()
                target[k] = self.value(v, old)
            return target
        if kind == "defaultdict":
            raise UnsupportedState("a defaultdict created while learning cannot be rebuilt (its factory is code)")
        out = _DICT_KINDS.get(kind, dict)()
        for k, v in pairs:
            out[k] = self.value(v)
        return out

    def array(self, e: dict) -> np.ndarray:
        dtype = _dtype(e["dtype"])
        data = e["data"]
        if type(data) is not list:
            raise UnsupportedState("an array without a list of values")
        if dtype.kind == "O":
            out = np.empty(len(data), dtype=object)
            out[:] = [self.value(x) for x in data]
        else:
            if dtype.kind in "fiu" and any(type(x) is not int and type(x) is not float for x in data):
                data = [self.value(x) if isinstance(x, dict) else (int(x) if isinstance(x, (str, int)) else x)
                        for x in data]
            elif any(isinstance(x, (dict, list)) for x in data):
                raise UnsupportedState(f"an array of dtype {dtype} holding containers")
            out = np.array(data, dtype=dtype)
        return out.reshape(e["shape"])

    def obj(self, e: dict, target: Any) -> Any:
        name = e["cls"]
        if target is not _MISSING and class_name(type(target)) == name:
            obj = target
        else:
            cls = self.classes.get(name) if isinstance(name, str) else None
            if cls is None and isinstance(name, str):
                cls = known_classes()[0].get(name)
            if cls is None:
                raise UnsupportedState(
                    f"will not create a {name} from a checkpoint: objects are rebuilt only for the classes "
                    "a fresh instance of the model holds and a short reviewed list (state_allowlist.known_classes)")
            if e.get("skipped"):
                raise UnsupportedState(
                    f"a {name} created while learning holds code ({', '.join(map(str, e['skipped']))}) "
                    "and cannot be rebuilt")
            obj = cls.__new__(cls)
        self.memo[e["id"]] = obj
        cls = type(obj)
        attrs = e["attrs"]
        if type(attrs) is not dict:
            raise UnsupportedState(f"{name}: attributes must be a mapping")
        current = attributes(obj)
        keep = set(attrs) | set(e.get("skipped") or ())
        has_dict = hasattr(obj, "__dict__")
        for attr in current:
            if attr not in keep and has_dict and attr in obj.__dict__:
                del obj.__dict__[attr]
        for attr, v in attrs.items():
            slot = _is_slot(cls, attr)
            if not attr.isidentifier() or (not slot and (not has_dict or _shadows_method(cls, attr))):
                raise UnsupportedState(f"{name}: will not set attribute {attr!r} from a checkpoint")
            value = self.value(v, current.get(attr, _MISSING))
            if slot:
                setattr(obj, attr, value)
            else:
                obj.__dict__[attr] = value
        return obj


def _dtype(spec: Any) -> np.dtype:
    if not isinstance(spec, str) or len(spec) > 16:
        raise UnsupportedState(f"unsupported numpy dtype {spec!r}")
    try:
        dtype = np.dtype(spec)
    except TypeError:
        raise UnsupportedState(f"unsupported numpy dtype {spec!r}") from None
    if dtype.kind not in DTYPE_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise UnsupportedState(f"unsupported numpy dtype {spec!r}")
    return dtype


def _is_slot(cls: type, attr: str) -> bool:
    return any(attr in (getattr(k, "__slots__", ()) or ()) for k in cls.__mro__)


def _needs_target(v: Any) -> bool:
    return isinstance(v, (dict, list)) and not (isinstance(v, dict) and v.get(TAG) in _SCALAR_TAGS + ("ref",))


def decode(data: Any, into: Any, classes: tuple[type, ...] = ()) -> Any:
    """Write encoded state into ``into`` (a fresh instance of the same class) and return it.

    Data only: nothing named by ``data`` is imported, resolved or called (see
    :class:`_Decoder`); ``classes`` are extra classes whose objects may be created, beside
    those found in ``into`` and the reviewed list. A checkpoint holding anything else, or
    malformed, raises :class:`UnsupportedState`."""
    if not isinstance(data, dict) or data.get(TAG) != "obj" or data.get("cls") != class_name(type(into)):
        found = data.get("cls") if isinstance(data, dict) else type(data).__name__
        raise UnsupportedState(f"the checkpoint holds a {found}, not a {class_name(type(into))}")
    try:
        rebuilt = rebuilt_attributes(into, data.get("skipped"))  # from into's own parameters, first
        out = _Decoder(into, tuple(classes)).value(data, into)
        for name, value in rebuilt.items():
            if name not in vars(out):
                out.__dict__[name] = value
        return out
    except UnsupportedState:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError, RecursionError) as exc:
        raise UnsupportedState(f"malformed checkpoint ({type(exc).__name__}: {exc})") from None
