"""Entry points of the benchmark's child processes (started with multiprocessing "spawn").

Each reports through a multiprocessing queue. None of them loops without a bound:
consumers stop when the driver says so (an Event) or, as a last resort, when the
driver terminates them (SIGTERM → streamlog's graceful stop).
"""

from __future__ import annotations

import resource
import threading
import time


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _peak_rss() -> int:
    """Peak RSS of this process image (VmHWM). Not ru_maxrss: a spawned child's ru_maxrss
    carries over the high-water mark of the forked parent from before exec."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _streaming(name: str, url: str, kind: str, **options):
    import streamlog

    if options.get("poll") is None:
        options.pop("poll", None)

    if kind == "count100":
        return streamlog.streaming(name, size=100, url=url, **options)
    if kind == "relaxed":
        return streamlog.streaming(name, interval=0.5, relaxed=True, url=url, **options)
    if kind == "count1":
        return streamlog.streaming(name, size=1, url=url, **options)
    raise ValueError(kind)


def consume(url: str, name: str, kind: str, group: str, total: int, counter, done, go, ready_q, result_q,
            wid: int) -> None:
    """A blocking consumer in ``group``; all consumers stop once ``total`` items were delivered."""
    sf = _streaming(name, url, kind, group=group)
    items = windows = 0

    def fn(window):
        nonlocal items, windows
        n = len(window)
        items += n
        windows += 1
        with counter.get_lock():
            counter.value += n
            if counter.value >= total:
                done.set()

    def watcher():
        done.wait()
        sf.stop()

    threading.Thread(target=watcher, daemon=True).start()
    ready_q.put(wid)
    go.wait()
    t0 = time.time()
    sf.apply(fn)
    result_q.put({"wid": wid, "t0": t0, "t1": time.time(), "items": items, "windows": windows})


def latency(url: str, name: str, n: int, ready, result_q, poll: float | None = None) -> None:
    """A blocking ``size=1`` consumer recording (function start − item["t"]) for ``n`` items."""
    sf = _streaming(name, url, "count1", poll=poll)
    lat: list[float] = []

    def fn(window):
        now = time.time()
        for d in window.data:
            lat.append(now - d["t"])
        if len(lat) >= n:
            sf.stop()

    ready.set()
    sf.apply(fn)
    result_q.put(lat)


def idle(url: str, name: str, ready, poll: float | None = None) -> None:
    """A blocking consumer on a stream with nothing to do; ends on SIGTERM (graceful stop)."""
    sf = _streaming(name, url, "count1", poll=poll)
    ready.set()
    sf.apply(lambda window: None)


def memory(url: str, name: str, group: str, total: int, marks: list[int], result_q) -> None:
    """Process ``total`` items in windows of 100 (non-blocking), sampling RSS at ``marks``."""
    import gc

    import streamlog

    sf = streamlog.streaming(name, size=100, url=url, group=group, blocking=False,
                             max_windows=total // 100)
    samples = [{"items": 0, "rss": _rss(), "peak": _peak_rss()}]
    todo = sorted(marks)
    count = 0

    def fn(window):
        nonlocal count
        count += len(window)
        while todo and count >= todo[0]:
            todo.pop(0)
            samples.append({"items": count, "rss": _rss(), "peak": _peak_rss()})

    t0 = time.perf_counter()
    windows = sf.apply(fn)
    elapsed = time.perf_counter() - t0
    gc.collect()
    result_q.put({"windows": windows, "items": count, "seconds": elapsed, "samples": samples,
                  "peak": _peak_rss(), "final_rss": _rss()})


def _describe(command: tuple[str, str, tuple]) -> str:
    """``name collection[filter keys]`` of a command, e.g. ``find claims.rt[g,open,lease]``."""
    name, collection, keys = command
    out = f"{name} {collection}" if collection else name
    if name == "find":
        out += "[" + ",".join(keys) + "]"
    return out


def _timer_driven(desc: str) -> bool:
    """The reclaim scan for expired leases: run at most once a second by a consumer
    (RECLAIM_EVERY), whatever the window size or the stream length."""
    return desc.startswith("find claims.") and "lease" in desc


def roundtrips(url: str, sizes: list[int], batches: int, seed: int, result_q) -> None:
    """Database commands (round trips) per ``extend`` of 100 items and per window of 100,
    with ``sizes`` items already in the stream (pymongo command monitoring)."""
    from pymongo import monitoring

    from benchlib.common import store_commands

    listener = store_commands()
    monitoring.register(listener)

    def names(start: int, stop: int | None = None) -> list[str]:
        return [_describe(command) for command in listener.sent[start:stop]]

    import streamlog
    from benchlib.common import make_items, median

    stream = streamlog.stream("rt", url=url)
    filled = 0
    out = []
    for size in sizes:
        while filled < size:
            k = min(1000, size - filled)
            stream.extend(make_items(k, seed, filled))
            filled += k
        group = f"g{size}"
        stream.group(group, start="latest")
        per_extend, extend_names, extend_ms = [], [], []
        for _b in range(batches):
            items = make_items(100, seed, filled)
            n0 = len(listener.sent)
            t = time.perf_counter()
            stream.extend(items)
            extend_ms.append((time.perf_counter() - t) * 1000)
            per_extend.append(len(listener.sent) - n0)
            extend_names.append(names(n0))
            filled += 100
        marks: list[tuple[int, float]] = []

        def fn(window, marks=marks):
            marks.append((len(listener.sent), time.perf_counter()))

        n_start = len(listener.sent)
        t_start = time.perf_counter()
        windows = streamlog.streaming("rt", size=100, group=group, url=url, blocking=False).apply(fn)
        seconds = time.perf_counter() - t_start
        window_names = [names(a[0], b[0]) for a, b in zip(marks, marks[1:], strict=False)]
        per_window_all = [len(sent) for sent in window_names]
        per_window = [sum(1 for d in sent if not _timer_driven(d)) for sent in window_names]
        timer_scans = sum(1 for d in names(n_start) if _timer_driven(d))
        window_ms = [(b[1] - a[1]) * 1000 for a, b in zip(marks, marks[1:], strict=False)]
        typical = [d for d in (window_names[len(window_names) // 2] if window_names else []) if not _timer_driven(d)]
        out.append({
            "size": size, "windows": windows, "seconds": seconds,
            "per_extend": per_extend, "per_extend_median": median(per_extend), "per_extend_max": max(per_extend),
            "extend_commands": extend_names[len(extend_names) // 2],
            "per_window": per_window, "per_window_median": median(per_window),
            "per_window_max": max(per_window) if per_window else None,
            "per_window_all_median": median(per_window_all),
            "per_window_all_max": max(per_window_all) if per_window_all else None,
            "reclaim_scans": timer_scans, "reclaim_scans_per_s": timer_scans / seconds if seconds else None,
            "window_commands": typical,
            "setup_commands": names(n_start, marks[0][0]) if marks else [],
            "extend_ms_median": median(extend_ms), "window_ms_median": median(window_ms),
        })
    result_q.put(out)
