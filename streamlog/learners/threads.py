"""Capping BLAS/OpenMP thread pools for per-window learning.

A window of 60 items is far too small for threaded BLAS or OpenMP to pay off, and on
a many-core machine a pool woken for every small fit mostly adds hand-off latency and
competes with the rest of the process. Three ways were measured on the benchmark's
data (5 features; 2-core AMD EPYC; µs per window of 60, best of 15 runs of 100
windows, two separate runs):

=======================================  ============  ============  =========  ===============
thread cap                               OnlineLinReg  OnlineKMeans  SGDRegr.   MiniBatchKMeans
=======================================  ============  ============  =========  ===============
none                                     91, 98        107, 108      801, 818   2048, 2236
switched to 1 and back around each       115, 130      126, 127      830, 860   2024, 2460
window (cached threadpoolctl handles)
set to 1 once for the process            96, 132       109, 111      813, 817   1762, 2873
=======================================  ============  ============  =========  ===============

With 2 cores capping gains nothing measurable (the spread is noise), but switching the
pools per window costs 20-40 µs each time (``threadpool_limits`` as a context manager,
which rediscovers the loaded libraries on every use, costs 2.7 ms), while a cap set
once costs nothing per window. So a learner caps the pools **once, when it starts
consuming** (``threads=1``, the default; ``threads=None`` leaves them alone). The cap
then holds for the rest of the process (BLAS pools are process-wide; OpenMP's applies
to the consuming thread). ``learn()`` and ``predict()`` called directly change nothing.
"""

from __future__ import annotations

import logging

log = logging.getLogger("streamlog")


def cap(threads: int | None) -> None:
    """Limit every loaded BLAS/OpenMP thread pool to ``threads`` (None: leave them alone)."""
    if threads is None:
        return
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)
    except Exception as exc:  # noqa: BLE001 - threadpoolctl missing or unsupported: run uncapped
        log.debug("could not cap thread pools: %s", exc)
