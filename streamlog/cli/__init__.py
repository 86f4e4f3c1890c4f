"""The ``streamlog`` command line: look at streams, follow them, push items in, run
consumers, manage consumer groups and dead letters.

    streamlog ls                                  # every stream, with pending items per group
    streamlog info sensors                        # one stream in detail: groups, models, retention
    streamlog tail sensors -n 20 -f               # the last 20 items, then new ones as they land
    streamlog tail sensors --from 100 --to 199    # a range of offsets
    producer | streamlog append sensors           # JSON lines (or --format csv) as they arrive
    streamlog run mymodule:consume --stream sensors --size 60 --once    # a cron job
    streamlog trim sensors --processed            # drop what every group has processed
    streamlog drop sensors --yes
    streamlog group ls sensors                    # consumer groups; group reset / group delete
    streamlog redrive sensors --group kmeans      # dead letters back onto the stream
    streamlog bridge mqtt://broker/sensors/+ --stream sensors   # MQTT in (also mongodb-collection://)
    streamlog listen tcp://127.0.0.1:9000 --stream lines        # JSON lines over TCP in
    streamlog publish sensors tcp://127.0.0.1:9001              # … and out
    streamlog up app.toml                         # every stage of a pipeline file, supervised
    streamlog serve                               # HTTP API + live dashboard on 127.0.0.1:8765

Global options ``--url`` (default: ``$STREAMLOG_URL``, then the embedded file database),
``--format table|json|csv`` and ``-v`` go before the command or after it.

Modules: :mod:`.app` (the typer app, global options, errors → one line and an exit
code), :mod:`.common` (settings, clients, checks, confirmation), :mod:`.output`
(tables, JSON, CSV), and one module per command group: :mod:`.inspect` (``ls``,
``info``, ``tail``), :mod:`.append`, :mod:`.run`, :mod:`.maintain` (``trim``, ``drop``),
:mod:`.groups` (``group …``), :mod:`.redrive`, :mod:`.bridges` (``bridge``, ``listen``,
``publish``), :mod:`.up`, :mod:`.serve`. The commands do no domain work of their
own: everything comes from the public API (``streamlog.Client``, ``Stream``, group
handles).

Start-up is kept short: heavy modules (pandas, scikit-learn, pymongo, rich) are imported
only by the commands that need them.
"""

from __future__ import annotations  # noqa: I001 - the command modules below are imported in help order

# Importing the command modules registers their commands, in this order (of the help).
from . import inspect, append, run, maintain, redrive, groups, bridges, up, serve  # noqa: F401 - imported to register their commands
from .app import app, main
from .maintain import parse_duration

__all__ = ["app", "main", "parse_duration"]
