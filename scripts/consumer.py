"""Consumer half of the walkthrough: print every window of ``mystream`` as it arrives.

    python scripts/consumer.py        # Ctrl-C stops it after the current window (exit 0)
"""

import streamlog


@streamlog.streaming("mystream")  # one item per window (CountWindow(1)); blocks until stopped
def consumer(window):
    print(window, flush=True)


print(f"processed {consumer} windows")  # decorating ran the consumer: the name holds the count
