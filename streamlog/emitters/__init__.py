"""Window emitters: strategies that turn a group's pending items into windows."""

from .base import Emit, Emitter, Lookback, Pending, Wait
from .count import CountWindow
from .fixed import FixedTimeWindow
from .relaxed import RelaxedTimeWindow
from .session import SessionWindow
from .sliding import SlidingCountWindow, SlidingTimeWindow

__all__ = ["Emitter", "Emit", "Wait", "Pending", "Lookback", "CountWindow", "FixedTimeWindow",
           "RelaxedTimeWindow", "SlidingCountWindow", "SlidingTimeWindow", "SessionWindow"]
