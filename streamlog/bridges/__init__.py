"""Bridges: data in and out of streams over MQTT, TCP line sockets and existing MongoDB
collections. Each bridge is a :class:`~streamlog.bridges.base.Bridge`: ``run()`` blocks
until ``stop()``, SIGINT or SIGTERM, printing a one-line status every few seconds."""
