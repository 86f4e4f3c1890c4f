"""The allow-list of the checkpoint decoder: everything a checkpoint may make it create.

:mod:`.state_decode` never imports, resolves or calls a name found in a checkpoint. What
it may create comes from here, by fixed names, reviewed:

* **objects** (``cls.__new__``, no ``__init__``; attributes set in the instance
  ``__dict__``): the classes reachable from a freshly constructed instance of the model
  (:func:`template_classes`), and a short list of classes models create while learning
  (:func:`known_classes`): river's tree nodes, splitters, ``stats.Mean``/``Var``,
  ``proba.Gaussian``/``Multinomial``, the leaf models of model trees, ARF's base trees and
  the nearest-neighbour graph's ``Vertex``; scikit-learn's MLP optimizers and
  ``LabelBinarizer``. Each is a plain container of numbers, arrays and other entries of
  this list; none runs code on creation or when its attributes are set;
* **code where the fresh model has none** at that place: the builtin types of
  :data:`SAFE_FACTORIES` (also the only factories of a ``defaultdict`` created while
  learning) and the two static methods river's ``EBSTNode`` keeps per node;
* **random generators**: ``random.Random``, ``RandomState``, and ``Generator`` with a bit
  generator of :data:`BIT_GENERATORS`; **arrays** only of the :data:`DTYPE_KINDS`;
* **estimators without a template** (:func:`template_free_estimators`): the scikit-learn
  estimators a predict stage may construct from a ``PartialFit`` checkpoint's plain
  parameters when it is given no model to copy;
* **rebuilt attributes** (:func:`rebuilt_attributes`): an attribute the encoder had to
  skip (an extension object) that the estimator recreates from its own parameters
  anyway — made by the estimator's own code from the fresh instance's parameters, before
  any checkpoint data is written into it.

Adding a class here is a security review: it must not run code when created with
``__new__`` or when its attributes are set, and must not hold code it calls later that a
checkpoint could choose.
"""

from __future__ import annotations

import sys
import types
from collections import deque
from typing import Any

import numpy as np

from .state_format import CODE, attributes, class_name

__all__ = ["SAFE_FACTORIES", "BIT_GENERATORS", "DTYPE_KINDS", "known_classes", "template_classes",
           "rebuilt_attributes", "template_free_estimators"]

#: defaultdict factories a checkpoint may name when the fresh instance has none at that place
SAFE_FACTORIES: dict[str, type] = {f"builtins:{t.__name__}": t for t in (int, float, list, dict, set, str, tuple)}

#: random bit generators a ``Generator`` may be rebuilt with (never looked up by name in numpy)
BIT_GENERATORS = {name: getattr(np.random, name) for name in ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")
                   if hasattr(np.random, name)}

#: numpy dtype kinds a checkpoint may hold (numbers, booleans, strings, objects of decoded values)
DTYPE_KINDS = "biufcOUS"


def known_classes() -> tuple[dict[str, type], dict[str, Any]]:
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
                out[class_name(cls)] = cls
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


def template_classes(template: Any) -> dict[str, type]:
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
        if isinstance(v, CODE) or isinstance(v, (types.ModuleType, np.dtype)):
            continue
        if hasattr(v, "__dict__") or getattr(t, "__slots__", None):
            found[class_name(t)] = t
            try:
                stack.extend(attributes(v).values())
            except Exception:  # noqa: BLE001 - an attribute that cannot be read: nothing to learn from it
                pass
    return found


def rebuilt_attributes(fresh: Any, skipped: Any) -> dict[str, Any]:
    """Attributes the encoder skipped that a fresh estimator rebuilds from its own parameters.

    ``fresh`` is the freshly constructed instance the checkpoint is about to be decoded
    into (so its parameters are the learner's own, not the checkpoint's); ``skipped`` the
    checkpoint's list of skipped attribute names (only names are read from it). Today one
    entry: scikit-learn's SGD estimators (``SGDClassifier``, ``Perceptron``, …) keep a
    Cython loss object in ``_loss_function_`` that ``partial_fit`` recreates on every call
    from ``loss`` (``self._get_loss_function(loss)``); it is recreated the same way here, so
    a restored model is the same as the original, not just equivalent once it learns."""
    if type(skipped) is not list or "_loss_function_" not in skipped or "sklearn" not in sys.modules:
        return {}
    try:
        from sklearn.linear_model._stochastic_gradient import BaseSGD
    except ImportError:  # pragma: no cover - other scikit-learn layouts
        return {}
    if not isinstance(fresh, BaseSGD) or not isinstance(getattr(fresh, "loss", None), str):
        return {}
    return {"_loss_function_": fresh._get_loss_function(fresh.loss)}


def template_free_estimators() -> dict[str, type]:
    """The scikit-learn estimators a ``PartialFit`` checkpoint may be rebuilt as without a
    template (:meth:`streamlog.learners.partial_fit.PartialFit.configured_from`): imported here by fixed
    names, never by a name from the data. Each stores its constructor parameters and does
    nothing else on construction."""
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.linear_model import (
        PassiveAggressiveClassifier,
        PassiveAggressiveRegressor,
        Perceptron,
        SGDClassifier,
        SGDRegressor,
    )
    from sklearn.naive_bayes import BernoulliNB, GaussianNB, MultinomialNB
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    return {class_name(c): c for c in (SGDRegressor, SGDClassifier, PassiveAggressiveRegressor,
                                       PassiveAggressiveClassifier, Perceptron, MiniBatchKMeans, GaussianNB,
                                       MultinomialNB, BernoulliNB, MLPRegressor, MLPClassifier)}
