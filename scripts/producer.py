"""Producer half of the omega|ml-style walkthrough: append one item to ``mystream``.

    python scripts/producer.py        # run it three times; scripts/consumer.py prints three windows
"""

import streamlog

stream = streamlog.stream("mystream")  # created on first use; embedded default unless STREAMLOG_URL is set
offset = stream.append({"foo": "bar"})
print(f"appended {{'foo': 'bar'}} at offset {offset}")
