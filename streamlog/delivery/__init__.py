"""The delivery engine: how a consumer group's windows are claimed, delivered and committed.

The folder is the architecture, bottom to top:

* ``chain.py`` — a group's chain of claims: its head, its record kinds (``window``,
  ``discovery``, ``reset``, ``deleted``; :attr:`streamlog.store.base.Claim.kind`), how
  a record extends the head and how an attempt is taken over;
* ``history.py`` — window times (event time with ``time_field=``) and the history a
  sliding window re-reads from the log;
* ``windows.py`` — :class:`~streamlog.delivery.windows.Claimed`, a held claim, and the
  one place it becomes :class:`~streamlog.window.Window` objects (keys and history
  included);
* ``cursor.py`` — the cursor protocol the runtime uses (claim / renew / commit /
  release / reclaim / dead letter / hold) and the plain ``Cursor``;
* ``keys.py`` and ``keyed.py`` — keyed windows: key values and key-chain names, and the
  ``KeyedCursor`` over one chain per key;
* ``groups.py`` — groups as operators see them: create, report, reset, delete, re-drive;
* ``renewer.py``, ``workers.py``, ``idle.py``, ``consumer.py`` — the consumer runtime:
  lease renewal, ``workers=N``, idle waiting, and the loop.

A window's path from ``@streamlog.streaming`` to its commit:
``consumers/streaming.py`` (``StreamingFunction.apply``) → ``consumer.py``
(``Consumer.run`` → ``_next_window``) → ``cursor.py`` (``Cursor.claim``: head, emitter,
unique insert; or ``keyed.py``, ``KeyedCursor.claim`` → ``KeyChain.claim``) →
``windows.py`` (``Claimed.windows``) → the function → ``cursor.py`` (``commit``) → the
store. Nothing here imports :mod:`streamlog.stream` at run time; the stream imports
``groups.py``.
"""
