"""Window emitters: strategies that turn a group's pending items into windows."""

from .base import Emit, Emitter, Pending, Wait
from .count import CountWindow
from .fixed import FixedTimeWindow
from .relaxed import RelaxedTimeWindow

__all__ = ["Emitter", "Emit", "Wait", "Pending", "CountWindow", "FixedTimeWindow", "RelaxedTimeWindow"]
