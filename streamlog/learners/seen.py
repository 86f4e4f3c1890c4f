"""Which windows a learner's state holds: the newest window number learned (``seq_``)
and the ranges below it not learned yet ("holes": windows that come back late, after a
restarted process took newer ones first). See :mod:`streamlog.learners.base`."""

from __future__ import annotations

MAX_HOLES = 100  # ranges of unlearned window numbers kept in the state


def is_learned(seq: int, newest: int | None, holes: list[list[int]]) -> bool:
    """Whether window ``seq`` is in a state whose newest window is ``newest``."""
    if newest is None or seq > newest:
        return False
    return not any(lo <= seq <= hi for lo, hi in holes)


def mark_learned(seq: int, newest: int | None, holes: list[list[int]]) -> int | None:
    """Record window ``seq`` as learned (``holes`` updated in place); returns the newest
    window now in the state."""
    last = 0 if newest is None else newest
    if seq > last:
        if seq > last + 1:
            holes.append([last + 1, seq - 1])
            del holes[:-MAX_HOLES]
        return seq
    for i, (lo, hi) in enumerate(holes):  # a late window fills (part of) a hole
        if lo <= seq <= hi:
            parts = [[lo, seq - 1]] if seq > lo else []
            parts += [[seq + 1, hi]] if seq < hi else []
            holes[i:i + 1] = parts
            break
    return newest
