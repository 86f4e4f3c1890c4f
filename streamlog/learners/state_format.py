"""The checkpoint format of :class:`~streamlog.consumers.PartialFit`: estimator state as plain data.

Shared by :mod:`.state_encode` (estimator → data) and :mod:`.state_decode` (data →
estimator, from the allow-list of :mod:`.state_allowlist`). A checkpoint is JSON-able
data only — ``None``, booleans, strings, numbers, lists and dicts with string keys —
never a pickle and never code. Functions and classes appear as names
(``module:qualname``), written for display; the decoder never imports, resolves or calls
them.

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
numpy dtype                           ``{T: "dtype", "v": "<f8"}``
numpy scalar                          the Python number
random.Random, RandomState, Generator ``{T: "random"|"RandomState"|"Generator", "id", "state": ...}``
river VectorDict                      ``{T: "vdict", "id", "v": {...}}``
function / class                      ``{T: "function"|"class", "name": "module:qualname"}``
bound method, functools.partial       ``{T: "method", "self", "name"}``, ``{T: "partial", "func", "args", "keywords"}``
an object of an allowed module        ``{T: "obj", "cls": "module:Class", "id", "attrs": {...}, "skipped": [...]}``
the same object again                 ``{T: "ref", "id"}`` (shared references stay shared)
====================================  ==================================================

No list directly contains a list: FerretDB v1 (a MongoDB-wire server streamlog
supports) rejects nested arrays, so inner lists are wrapped and arrays are stored flat.

``skipped`` lists the attributes of an object that hold no data the format can carry (a
lambda, a closure, an extension object without attributes such as scikit-learn's Cython
loss objects): on decoding, the fresh instance's own value at that place stays, or a
reviewed rebuild recreates it from the estimator's own parameters
(:func:`.state_allowlist.rebuilt_attributes`).
"""

from __future__ import annotations

import functools
import types
from typing import Any

import numpy as np

from ..errors import ConsumerError

#: the tag key of encoded values that are not plain JSON
TAG = "__sl__"

#: what counts as code: written by name (or skipped), never stored as data nor loaded
CODE = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.BuiltinMethodType,
        types.MethodWrapperType, types.WrapperDescriptorType, functools.partial, type, staticmethod,
        classmethod, np.ufunc)


class UnsupportedState(ConsumerError):
    """A model holds something that is not plain data, or a checkpoint holds something the
    decoder refuses (code, a class off the allow-list, malformed data)."""


def class_name(cls: type) -> str:
    """``module:qualname`` of a class, as the format writes it."""
    return f"{cls.__module__}:{cls.__qualname__}"


def attributes(obj: Any) -> dict[str, Any]:
    """An object's instance attributes: its ``__dict__`` and the declared slots that are set."""
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
