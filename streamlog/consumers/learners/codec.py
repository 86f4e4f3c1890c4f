"""Estimator state as plain data: how :class:`PartialFit` checkpoints a model.

``encode(obj)`` walks an estimator's attributes and returns JSON-able data (numbers,
strings, lists, dicts); ``decode(data, into=fresh_estimator)`` writes it back into a
freshly constructed estimator of the same class. Nothing is pickled and no code is
stored or loaded.

**Checkpoints are data, never code.** Anyone who can write to the models collection
(or table) can write a checkpoint, and every consumer that resumes decodes it, so the
decoder never imports, resolves, calls or ``getattr``-s anything named by the data:

* a function, class, bound method or ``functools.partial`` in the data is *not*
  resolved: the fresh instance's own value at that place is kept (as for lambdas).
  Where the fresh instance has none, only a name from a fixed map is accepted — the
  builtin types ``int, float, list, dict, set, str, tuple`` and the two static methods
  river's ``EBSTNode`` stores per node — anything else is refused;
* an ``obj`` entry is written into the fresh instance's object at the same place when
  the classes match; a new object is created (``cls.__new__``, no ``__init__``) only
  for a class found in the freshly constructed template, or on a short reviewed list of
  classes that models create while learning (:func:`_known_classes`: river's tree,
  forest and nearest-neighbour parts, scikit-learn's MLP optimizers and
  ``LabelBinarizer``). Attributes are set in the instance ``__dict__`` (or
  a declared slot); one that would hide a method or property of the class is refused;
* a ``defaultdict`` keeps the template's factory at that place; one created while
  learning gets its factory from the same fixed map of builtin types, never from a name;
* random generators are restored into fixed classes (``random.Random``, numpy's
  ``RandomState`` and ``Generator`` with one of numpy's bit generators, by a fixed map),
  arrays only with numeric, string or object dtypes.

Anything else — or malformed data — raises :class:`UnsupportedState` (a
:class:`~streamlog.errors.ConsumerError`). The encoder still writes the names of
functions and classes (``module:qualname``), for display and for :func:`verify`'s
comparison; they are never acted on.

Encoded forms (``T`` is the tag key ``"__sl__"``):

====================================  ==================================================
value                                 encoded as
====================================  ==================================================
None, bool, str, finite float, int64  itself
non-finite float, bigger int          ``{T: "float"|"int", "v": "nan"|"123…"}``
list / tuple / set / frozenset        list / ``{T: "tuple"|"set"|"frozenset", "v": [...]}``; a list
                                      inside a list is ``{T: "list", "v": [...]}``
deque                                 ``{T: "deque", "maxlen", "v": [...]}``
dict with plain string keys           dict (other keys, dict subclasses: ``{T: "dict", "kind",
                                      "keys": [...], "values": [...]}``, plus ``"factory"`` for a
                                      defaultdict)
numpy array                           ``{T: "ndarray", "dtype", "shape", "data": flat list}``
numpy scalar                          the Python number
random.Random, RandomState, Generator ``{T: "random"|"RandomState"|"Generator", "state": ...}``
river VectorDict                      ``{T: "vdict", "v": {...}}``
function / class                      ``{T: "function"|"class", "name": "module:qualname"}``
bound method, functools.partial       ``{T: "method", "self", "name"}``, ``{T: "partial", "func", "args", "keywords"}``
an object of an allowed module        ``{T: "obj", "cls": "module:Class", "id", "attrs": {...}, "skipped": [...]}``
the same object again                 ``{T: "ref", "id"}`` (shared references stay shared)
====================================  ==================================================

No list directly contains a list: FerretDB v1 (a MongoDB-wire server streamlog
supports) rejects nested arrays, so inner lists are wrapped and arrays are stored flat.

Decoding writes into the fresh instance *in place* wherever it can (dicts keep their
``defaultdict`` factories, random generators their identity), and creates new objects
only for the allowed classes above.

Extension objects without attributes (e.g. scikit-learn's Cython loss objects, which
``partial_fit`` recreates on every call) are skipped like lambdas. Whether a given
model round-trips faithfully is checked by :func:`verify` the first time it is
checkpointed.
"""

from __future__ import annotations

import copy
import functools
import importlib
import math
import random
import sys
import types
from collections import Counter, OrderedDict, defaultdict, deque
from typing import Any

import numpy as np

from ...errors import ConsumerError

TAG = "__sl__"
_INT64 = 2**63
_MISSING = object()
_SKIP = object()
_CODE = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.BuiltinMethodType,
         types.MethodWrapperType, types.WrapperDescriptorType, functools.partial, type, staticmethod,
         classmethod, np.ufunc)
_DICT_KINDS = {"dict": dict, "OrderedDict": OrderedDict, "Counter": Counter}
_SCALAR_TAGS = ("int", "float")


class UnsupportedState(ConsumerError):
    """A model holds something that is not plain data and cannot be checkpointed."""


def _class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _allowed(module: str, extra: tuple[str, ...]) -> bool:
    return module.startswith(("river.", "sklearn.")) or module in extra


_CODE_MODULES = ("builtins", "math", "operator", "collections", "functools", "random", "statistics", "numpy")


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


def _attributes(obj: Any) -> dict[str, Any]:
    found = dict(vars(obj)) if hasattr(obj, "__dict__") else {}
    for klass in type(obj).__mro__:
        for slot in getattr(klass, "__slots__", ()) or ():
            if slot in ("__dict__", "__weakref__") or slot in found:
                continue
            try:
                found[slot] = getattr(obj, slot)
            except AttributeError:
                pass
    return found


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
        if isinstance(v, _CODE):
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
                raise UnsupportedState(f"{path}: objects of class {_class_name(t)} are not checkpointed "
                                       "(only scikit-learn, river and the estimator's own module)")
            return self.obj(v, path)
        if _allowed(module, self.modules) or callable(v):
            return _SKIP  # an extension object without data attributes (rebuilt by the estimator)
        raise UnsupportedState(f"{path}: a {_class_name(t)} is not plain data")

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
            raise UnsupportedState(f"{path}: a {_class_name(type(v))} inside a container is not plain data")
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
        for name, x in _attributes(v).items():
            out = self.value(x, f"{path}.{name}")
            if out is _SKIP:
                skipped.append(name)
            else:
                attrs[name] = out
        return {TAG: "obj", "cls": _class_name(type(v)), "id": n, "attrs": attrs, "skipped": skipped}


#: defaultdict factories a checkpoint may name when the fresh instance has none at that place
SAFE_FACTORIES: dict[str, type] = {f"builtins:{t.__name__}": t for t in (int, float, list, dict, set, str, tuple)}

#: random bit generators a ``Generator`` may be rebuilt with (never looked up by name in numpy)
_BIT_GENERATORS = {name: getattr(np.random, name) for name in ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")
                   if hasattr(np.random, name)}

#: numpy dtype kinds a checkpoint may hold (numbers, booleans, strings, objects of decoded values)
_DTYPE_KINDS = "biufcOUS"


def _known_classes() -> tuple[dict[str, type], dict[str, Any]]:
    """The explicit, reviewed allow-list beyond a fresh template: classes (and two functions)
    that models create while learning, so a fresh instance does not hold them — river's
    trees, forests and nearest neighbours, scikit-learn's MLP optimizers and label
    binarizer. Each is a plain container of numbers, arrays and other entries of this list;
    none runs code on creation (``cls.__new__`` only, no ``__init__``) or when its attributes
    are set. Imported here by fixed names (never by a name from a checkpoint), and only for
    the libraries already in use (a river checkpoint needs a river model to decode into)."""
    classes: dict[str, type] = {}
    functions: dict[str, Any] = {}
    for library, load in (("sklearn", _known_sklearn), ("river", _known_river)):
        if library in sys.modules:
            if library not in _KNOWN:
                _KNOWN[library] = load()
            classes.update(_KNOWN[library][0])
            functions.update(_KNOWN[library][1])
    return classes, functions


_KNOWN: dict[str, tuple[dict[str, type], dict[str, Any]]] = {}


def _named(pairs) -> dict[str, type]:
    out = {}
    for module, names in pairs:
        for name in names:
            cls = getattr(module, name, None)
            if isinstance(cls, type):
                out[_class_name(cls)] = cls
    return out


def _known_sklearn() -> tuple[dict[str, type], dict[str, Any]]:
    try:
        from sklearn.neural_network import _stochastic_optimizers
        from sklearn.preprocessing import _label
    except ImportError:  # pragma: no cover - other scikit-learn layouts
        return {}, {}
    return _named(((_stochastic_optimizers, ("AdamOptimizer", "SGDOptimizer")),
                   (_label, ("LabelBinarizer",)))), {}


def _known_river() -> tuple[dict[str, type], dict[str, Any]]:
    try:
        from river import linear_model, optim, proba, stats
        from river.tree import splitter
        from river.tree.nodes import arf_htc_nodes, arf_htr_nodes, branch, htc_nodes, htr_nodes
        from river.tree.splitter import ebst_splitter
    except ImportError:  # pragma: no cover - other river layouts
        return {}, {}
    classes = _named((
        (stats, ("Mean", "Var")),
        (proba, ("Gaussian", "Multinomial")),
        (branch, ("NumericBinaryBranch", "NumericMultiwayBranch", "NominalBinaryBranch", "NominalMultiwayBranch")),
        (htr_nodes, ("LeafMean", "LeafModel", "LeafAdaptive")),
        (htc_nodes, ("LeafMajorityClass", "LeafNaiveBayes", "LeafNaiveBayesAdaptive")),
        (arf_htr_nodes, ("RandomLeafMean", "RandomLeafModel", "RandomLeafAdaptive")),
        (arf_htc_nodes, ("RandomLeafMajorityClass", "RandomLeafNaiveBayes", "RandomLeafNaiveBayesAdaptive")),
        (splitter, ("EBSTSplitter", "TEBSTSplitter", "GaussianSplitter")),
        (ebst_splitter, ("EBSTNode",)),
        (linear_model, ("LinearRegression",)),  # the leaf models of model trees, and their parts
        (optim, ("SGD",)),
        (optim.losses, ("Squared",)),
        (optim.initializers, ("Zeros",)),
        (optim.schedulers, ("Constant",)),
    ))
    try:
        from river.forest import adaptive_random_forest
        from river.neighbors.ann import nn_vertex

        classes.update(_named(((adaptive_random_forest, ("BaseTreeRegressor", "BaseTreeClassifier")),
                               (nn_vertex, ("Vertex",)))))
    except ImportError:  # pragma: no cover - other river layouts
        pass
    functions = {}
    node = getattr(ebst_splitter, "EBSTNode", None)
    for name in ("_update_estimator_univariate", "_update_estimator_multivariate"):
        func = getattr(node, name, None)
        if isinstance(func, types.FunctionType):  # EBSTNode keeps one of these static methods per node
            functions[f"{node.__module__}:{node.__qualname__}.{name}"] = func
    return classes, functions


def _template_classes(template: Any) -> dict[str, type]:
    """``module:qualname`` → class of every object reachable from a fresh template (walked
    before decoding writes into it): the classes a checkpoint of this model may hold."""
    found: dict[str, type] = {}
    seen: set[int] = set()
    stack = [template]
    while stack:
        v = stack.pop()
        if id(v) in seen or v is None or isinstance(v, (bool, int, float, str, bytes, np.ndarray, np.generic)):
            continue
        seen.add(id(v))
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
            continue
        if isinstance(v, (list, tuple, set, frozenset, deque)):
            stack.extend(v)
            continue
        t = type(v)
        if isinstance(v, _CODE) or isinstance(v, (types.ModuleType, np.dtype)):
            continue
        if hasattr(v, "__dict__") or getattr(t, "__slots__", None):
            found[_class_name(t)] = t
            try:
                stack.extend(_attributes(v).values())
            except Exception:  # noqa: BLE001 - an attribute that cannot be read: nothing to learn from it
                pass
    return found


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
    :func:`_known_classes`); objects are created only for classes found in the fresh
    template or in that reviewed list; a ``defaultdict`` gets the template's factory or a safe
    builtin one. Anything else is an :class:`UnsupportedState`."""

    def __init__(self, template: Any, extra: tuple[type, ...] = ()):
        self.memo: dict[int, Any] = {}
        self.classes = _template_classes(template)
        for cls in extra:
            self.classes[_class_name(cls)] = cls

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
            pairs = [(self.value(k), v) for k, v in zip(e["keys"], e["values"])]
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
            kind = _BIT_GENERATORS.get(e["bit_generator"]) if isinstance(e["bit_generator"], str) else None
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
        or a reviewed function (:func:`_known_classes`) by its exact name."""
        if target is not _MISSING and (callable(target) or isinstance(target, (staticmethod, classmethod))):
            return target
        name = e.get("name") if e[TAG] in ("class", "function") else None
        if isinstance(name, str):
            if name in SAFE_FACTORIES:
                return SAFE_FACTORIES[name]
            known = _known_classes()[1]
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
        if target is not _MISSING and _class_name(type(target)) == name:
            obj = target
        else:
            cls = self.classes.get(name) if isinstance(name, str) else None
            if cls is None and isinstance(name, str):
                cls = _known_classes()[0].get(name)
            if cls is None:
                raise UnsupportedState(
                    f"will not create a {name} from a checkpoint: objects are rebuilt only for the classes "
                    "a fresh instance of the model holds and a short reviewed list (codec._known_classes)")
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
        current = _attributes(obj)
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
    if dtype.kind not in _DTYPE_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise UnsupportedState(f"unsupported numpy dtype {spec!r}")
    return dtype


def _is_slot(cls: type, attr: str) -> bool:
    return any(attr in (getattr(k, "__slots__", ()) or ()) for k in cls.__mro__)


def _needs_target(v: Any) -> bool:
    return isinstance(v, (dict, list)) and not (isinstance(v, dict) and v.get(TAG) in _SCALAR_TAGS + ("ref",))


# -- public -------------------------------------------------------------------------------


def encode(obj: Any, modules: tuple[str, ...] = ()) -> Any:
    """``obj`` (an estimator) as plain data; :class:`UnsupportedState` if it holds other things."""
    return _Encoder(tuple(modules) + (type(obj).__module__,)).value(obj, type(obj).__name__)


def decode(data: Any, into: Any, classes: tuple[type, ...] = ()) -> Any:
    """Write encoded state into ``into`` (a fresh instance of the same class) and return it.

    Data only: nothing named by ``data`` is imported, resolved or called (see
    :class:`_Decoder`); ``classes`` are extra classes whose objects may be created, beside
    those found in ``into`` and the reviewed list. A checkpoint holding anything else, or
    malformed, raises :class:`UnsupportedState`."""
    if not isinstance(data, dict) or data.get(TAG) != "obj" or data.get("cls") != _class_name(type(into)):
        found = data.get("cls") if isinstance(data, dict) else type(data).__name__
        raise UnsupportedState(f"the checkpoint holds a {found}, not a {_class_name(type(into))}")
    try:
        return _Decoder(into, tuple(classes)).value(data, into)
    except UnsupportedState:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError, RecursionError) as exc:
        raise UnsupportedState(f"malformed checkpoint ({type(exc).__name__}: {exc})") from None


def params(estimator: Any) -> Any:
    """The estimator's constructor parameters as plain data, for comparisons and display.

    Values that are not plain data (classes, functions, nested estimators) are shown by name.
    """
    if hasattr(estimator, "get_params"):
        raw = estimator.get_params(deep=False)
    elif hasattr(estimator, "_get_params"):
        raw = estimator._get_params()
    else:
        raw = {}
    return _lenient(raw)


def _lenient(v: Any) -> Any:
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else repr(float(v))
    if isinstance(v, dict):
        return {str(k): _lenient(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_lenient(x) for x in v]
    if isinstance(v, np.ndarray):
        return _lenient(v.tolist())
    if isinstance(v, type):
        return _class_name(v)
    if hasattr(v, "get_params") or hasattr(v, "_get_params"):
        return {"class": _class_name(type(v)), "params": params(v)}
    return repr(v)


def fresh(estimator: Any) -> Any:
    """A new, unfitted estimator with the same parameters (river ``clone()`` / sklearn ``clone``)."""
    if type(estimator).__module__.startswith("river") and hasattr(estimator, "clone"):
        return estimator.clone()
    try:
        from sklearn.base import clone

        return clone(estimator)
    except Exception:  # noqa: BLE001 - not a scikit-learn estimator: construct from its params
        if hasattr(estimator, "clone"):
            return estimator.clone()
        return type(estimator)(**estimator.get_params(deep=False))


def restore(data: Any, template: Any) -> Any:
    """A fresh copy of ``template``'s estimator class holding the encoded state."""
    return decode(data, fresh(template))


def verify(estimator: Any, learn, predict) -> None:
    """Check that ``estimator``'s state survives a checkpoint: encode → decode into a fresh
    instance → the same encoding, the same predictions, and, after learning the same data
    on a deep copy and on the restored one (with the same global random draws), the same
    state again. Raises :class:`UnsupportedState` when it does not."""
    data = encode(estimator)
    twin = restore(data, estimator)
    if encode(twin) != data:
        raise UnsupportedState("its state does not round-trip (the restored model encodes differently)")
    if not _same(predict(estimator), predict(twin)):
        raise UnsupportedState("the restored model predicts differently")
    try:
        original = copy.deepcopy(estimator)
    except Exception:  # noqa: BLE001 - cannot copy: the checks above have to do
        return
    # Estimators without a seed of their own draw from the global generators (e.g.
    # SGDRegressor(random_state=None) shuffles each batch): give both the same draws.
    numpy_state, python_state = np.random.get_state(), random.getstate()
    learn(original)
    np.random.set_state(numpy_state)
    random.setstate(python_state)
    learn(twin)
    if encode(twin) != encode(original) or not _same(predict(original), predict(twin)):
        raise UnsupportedState("the restored model learns differently from the original")


def _same(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))
