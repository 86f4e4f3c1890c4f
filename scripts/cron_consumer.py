"""A non-blocking consumer for cron: process every window ready now, then exit.

    */5 * * * * cd /path/to/project && python scripts/cron_consumer.py >> consumer.log 2>&1

Each run claims the windows that are ready (``max_windows`` bounds a catch-up after a
long pause), commits them and exits 0; windows not yet full wait for the next run.
Several overlapping runs are safe: they share the group and never process an item twice.
"""

import argparse
from datetime import datetime, timezone

import streamlog

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--stream", default="mystream")
parser.add_argument("--size", type=int, default=10, help="items per window")
parser.add_argument("--timeout", type=float, default=300, help="emit a partial window after this many seconds")
parser.add_argument("--max-windows", type=int, default=1000)
args = parser.parse_args()


def summarize(window):
    print(f"{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%S} window #{window.seq}: {len(window)} items, "
          f"offsets {window.offsets[0]}..{window.offsets[-1]}", flush=True)


fn = streamlog.streaming(args.stream, size=args.size, timeout=args.timeout, group="cron",
                         blocking=False, max_windows=args.max_windows)
print(f"processed {fn.apply(summarize)} windows")
