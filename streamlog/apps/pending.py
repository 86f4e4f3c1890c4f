"""How many items each consumer stage of ``streamlog up`` has pending, read from the
database in a thread of its own, so a slow database never delays supervision."""

from __future__ import annotations

import threading
import time
from typing import Sequence


class PendingWatcher:
    """Reads each consumer stage's pending count (items its group has not processed) every
    ``every`` seconds in a background daemon thread. ``value(stage)`` → ``(pending or None,
    time the read started)``; None until read, and whenever the read failed or the stream
    or group does not exist (yet)."""

    def __init__(self, stages: Sequence[tuple[str, str, str, str]], every: float):
        self.stages = stages  # (stage, url, stream, group)
        self.every = every
        self.values: dict[str, tuple[int | None, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="streamlog-pending", daemon=True)

    def start(self) -> None:
        if self.stages:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def value(self, stage: str) -> tuple[int | None, float]:
        return self.values.get(stage, (None, 0.0))

    def _loop(self) -> None:
        while True:
            for stage, url, stream, group in self.stages:
                started = time.monotonic()
                self.values[stage] = (self._pending(url, stream, group), started)
            if self._stop.wait(self.every):
                return

    @staticmethod
    def _pending(url: str, stream_name: str, group_name: str) -> int | None:
        from ..client import connect
        from ..delivery.groups import find_group, group_state

        try:
            client = connect(url)
            if client.store.get_stream(stream_name) is None:
                return None
            stream = client.get(stream_name)
            group = find_group(stream, group_name)
            return None if group is None else int(group_state(stream, group)["pending"])
        except Exception:  # noqa: BLE001 - unknown for now; the stages report their own errors
            return None
