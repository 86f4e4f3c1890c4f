"""``streamlog bridge``, ``streamlog listen`` and ``streamlog publish``: data in and out of
streams over MQTT, Kafka, TCP line sockets and existing MongoDB collections.

Each command runs one bridge of :mod:`streamlog.bridges` in the foreground, prints a
one-line status on stderr every few seconds, and stops on Ctrl-C or SIGTERM after
everything it received and acknowledged is in the log (exit code 0).
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from streamlog.config import mask_url
from streamlog.errors import BadURLError
from streamlog.names import check_name

from . import common
from .app import app
from .common import UrlOption, VerboseOption, duration, examples, global_settings
from .output import plural

StreamOption = Annotated[str, typer.Option(
    "--stream", "-s", metavar="NAME", show_default=False, help="The stream to append to.")]
def _status_every(value: float) -> float | None:
    """``--status-every``: a checked duration; 0 means no status lines (None)."""
    return duration(value) or None


StatusOption = Annotated[float, typer.Option(
    "--status-every", min=0, callback=_status_every, metavar="SECONDS",
    help="Seconds between status lines on stderr (0: none).")]
BatchOption = Annotated[int, typer.Option(
    "--batch", min=1, max=100_000, metavar="N", help="Append at most N items per round trip.")]
FlushOption = Annotated[int, typer.Option(
    "--flush-ms", min=1, max=3_600_000, metavar="MS", help="Append what was received at least this often.")]
TokenOption = Annotated[Optional[str], typer.Option(
    "--token", metavar="TOKEN", show_default=False, envvar="STREAMLOG_TOKEN",
    help="Needed to listen on anything but loopback: clients send 'AUTH TOKEN' first.")]
AllowOption = Annotated[Optional[list[str]], typer.Option(
    "--allow", metavar="CIDR", show_default=False,
    help="Client addresses allowed to connect (repeatable), instead of a token.")]


def _target(settings, name: str):
    """The stream a bridge appends to (created if need be)."""
    check_name(name)
    return common.client(settings).stream(name)


def _serve(runner, started: str) -> dict:
    """Run a bridge in the foreground until Ctrl-C or SIGTERM; its final counters."""
    typer.echo(f"{started}; Ctrl-C or SIGTERM stops", err=True)
    return runner.run()


@app.command("bridge", epilog=examples(
    "streamlog bridge 'mqtt://broker:1883/sensors/+/reading' --stream readings",
    "streamlog bridge mqtt://user:pass@broker/plant/# --stream plant --id-field id",
    "streamlog bridge mongodb-collection://db-host/shop/orders --stream orders",
    "streamlog bridge kafka://127.0.0.1:9092/orders,refunds --stream shop",
    note="MQTT: QoS 1, a persistent session, each message acknowledged only once it is in "
         "the log. Collections: change streams where the server has them, polling by _id "
         "otherwise; a restarted bridge resumes after the last document it appended. Kafka: "
         "every partition, exactly once: a restarted bridge (or one taking partitions over "
         "in a rebalance) reads each partition's position back from the stream.",
))
def bridge_command(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(
        metavar="SOURCE", show_default=False,
        help="mqtt://[user:pass@]host[:port]/TOPIC, kafka://[user:pass@]host[:port]/TOPIC[,TOPIC…] "
             "or mongodb-collection://host/DB/COLLECTION")],
    stream: StreamOption,
    qos: Annotated[int, typer.Option("--qos", min=0, max=2, help="MQTT subscription QoS.")] = 1,
    id_field: Annotated[Optional[str], typer.Option(
        "--id-field", metavar="FIELD", show_default=False,
        help="MQTT: a field of the JSON payload that identifies a message; a message redelivered "
             "by the broker is then stored at most once.")] = None,
    client_id: Annotated[Optional[str], typer.Option(
        "--client-id", metavar="ID", show_default=False,
        help="MQTT client id of the persistent session (default: derived from stream and topic).")] = None,
    poll: Annotated[float, typer.Option(
        "--poll", min=0.01, callback=duration, metavar="SECONDS",
        help="Collections without change streams: seconds between polls.")] = 0.5,
    group: Annotated[Optional[str], typer.Option(
        "--group", metavar="GROUP", show_default=False,
        help="Kafka consumer group (default streamlog-STREAM); bridges in one group split the partitions.")] = None,
    value_only: Annotated[bool, typer.Option(
        "--value-only", help="Kafka: store the JSON object value alone (plus _kafka, the position).")] = False,
    batch: BatchOption = 1000,
    flush_ms: FlushOption = 200,
    status_every: StatusOption = 5.0,
    url: UrlOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Append what an MQTT broker or a MongoDB collection delivers to a stream, until stopped.

    Also Kafka topics (kafka://host:port/TOPIC), every partition, exactly once."""
    settings = global_settings(ctx, url, None, verbose)
    target = _target(settings, stream)
    scheme = source.split("://", 1)[0].lower() if "://" in source else ""
    if scheme in ("mqtt", "mqtts"):
        from streamlog.bridges.mqtt import MQTTSource

        runner = MQTTSource(source, target, qos=qos, batch=batch, flush_ms=flush_ms, client_id=client_id,
                            id_field=id_field, status_every=status_every)
    elif scheme in ("mongodb-collection", "mongodb-collection+srv"):
        from streamlog.bridges.collection import CollectionSource

        runner = CollectionSource(source, target, batch=batch, poll=poll, status_every=status_every)
    elif scheme in ("kafka", "kafkas"):
        from streamlog.bridges.kafka import KafkaSource

        runner = KafkaSource(source, target, batch=batch, flush_ms=flush_ms, group=group, value_only=value_only,
                             status_every=status_every)
    else:
        raise BadURLError(f"{mask_url(source)}: a bridge source is mqtt://host/TOPIC, kafka://host:port/TOPIC or "
                          "mongodb-collection://host/DB/COLLECTION")
    done = _serve(runner, f"bridging {mask_url(source)} into {stream}")
    typer.echo(f"{plural(done['stored'], 'item')} appended to {stream} ({done['received']} received, "
               f"{plural(done['errors'], 'error')})")


@app.command("listen", epilog=examples(
    "streamlog listen tcp://127.0.0.1:9000 --stream lines",
    "legacy-program | nc 127.0.0.1 9000          # newline-delimited JSON in",
    "streamlog listen tcp://0.0.0.0:9000 --stream lines --token s3cret   # other hosts: a token",
    note="A bad line is answered on its socket ('error line N: …') and skipped, or with "
         "--on-error dead-letter written to NAME.dead. Readers wait while the log catches up "
         "(back-pressure), so a fast client cannot fill memory.",
))
def listen_command(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(metavar="tcp://HOST:PORT", show_default=False)],
    stream: StreamOption,
    input_format: Annotated[str, typer.Option(
        "--input", metavar="json|csv", help="Line format: JSON objects, or CSV with a header row.")] = "json",
    on_error: Annotated[str, typer.Option(
        "--on-error", metavar="skip|dead-letter", help="What happens to a bad line.")] = "skip",
    token: TokenOption = None,
    allow: AllowOption = None,
    batch: BatchOption = 1000,
    flush_ms: FlushOption = 200,
    status_every: StatusOption = 5.0,
    url: UrlOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Accept TCP clients that send newline-delimited JSON (or CSV) and append the lines."""
    from streamlog.bridges.tcp import TCPListener

    settings = global_settings(ctx, url, None, verbose)
    if input_format not in ("json", "csv"):
        raise typer.BadParameter("use json or csv", ctx, param_hint="'--input'")
    if on_error not in ("skip", "dead-letter"):
        raise typer.BadParameter("use skip or dead-letter", ctx, param_hint="'--on-error'")
    target = _target(settings, stream)
    runner = TCPListener(address, target, format=input_format, batch=batch, flush_ms=flush_ms,
                         on_error=on_error, token=token, allow=allow, status_every=status_every)
    done = _serve(runner, f"listening on {address} for {stream}")
    typer.echo(f"{plural(done['stored'], 'item')} appended to {stream} ({plural(done['received'], 'line')}, "
               f"{plural(done['errors'], 'error')})")


@app.command("publish", epilog=examples(
    "streamlog publish sensors tcp://127.0.0.1:9001             # new items to every client",
    "streamlog publish sensors tcp://127.0.0.1:9001 --start earliest",
    "nc 127.0.0.1 9001 | jq .data                               # JSON lines out",
    "streamlog publish orders 'kafka://127.0.0.1:9092/orders?key=id' --start earliest",
    note="Kafka: each item's data as a JSON message (key: the key= field), from the consumer group "
         "--group (default publish-TOPIC): a restarted publish resumes after the last item the broker "
         "acknowledged.",
))
def publish_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", show_default=False)],
    address: Annotated[str, typer.Argument(metavar="tcp://HOST:PORT|kafka://HOST:PORT/TOPIC", show_default=False)],
    start: Annotated[str, typer.Option(
        "--start", metavar="latest|earliest|OFFSET",
        help="Where a connecting client (Kafka: a new group) starts: new items only, the whole history, "
             "or an offset.")] = "latest",
    group: Annotated[Optional[str], typer.Option(
        "--group", metavar="GROUP", show_default=False,
        help="Kafka: the consumer group of the stream that publishes (default publish-TOPIC).")] = None,
    token: TokenOption = None,
    allow: AllowOption = None,
    status_every: StatusOption = 5.0,
    url: UrlOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Serve a stream's items on a TCP port as JSON lines (what 'tail -f --json' prints).

    Or publish them to a Kafka topic (kafka://host:port/TOPIC), from a consumer group."""
    from streamlog.bridges.tcp import TCPPublisher

    settings = global_settings(ctx, url, None, verbose)
    where = common.offset_or("latest", "earliest")(start)
    stream = common.existing_client(ctx, settings.url).get(name)
    if address.split("://", 1)[0].lower() in ("kafka", "kafkas"):
        _publish_kafka(stream, address, where, group, settings.url)
        return
    runner = TCPPublisher(stream, address, start=where, token=token, allow=allow,
                          status_every=status_every)
    done = _serve(runner, f"publishing {name} on {address}")
    typer.echo(f"{plural(done['sent'], 'item')} sent")


def _publish_kafka(stream, address: str, start, group: str | None, url) -> None:
    """``streamlog publish NAME kafka://…``: a consumer group of the stream whose windows (up
    to 1000 items, every 50 ms) go to the topic; a window is committed only once the broker
    acknowledged all of it, and retried (without end) while the broker is down."""
    import streamlog
    from streamlog.bridges.kafka import parse_kafka_url

    topic = parse_kafka_url(address, one_topic=True).topic
    group = group or f"publish-{topic}"
    runner = streamlog.streaming(stream.name, interval=0.05, relaxed=True, max_size=1000, group=group, start=start,
                                 url=url, sink=address, max_retries=1_000_000, retry_delay=0.2, retry_max_delay=5.0)
    typer.echo(f"publishing {stream.name} to {mask_url(address)} (group {group}); Ctrl-C or SIGTERM stops", err=True)
    runner.apply(lambda window: window.data)
    typer.echo(f"{plural(getattr(runner.sink, 'sent', 0), 'item')} sent")
