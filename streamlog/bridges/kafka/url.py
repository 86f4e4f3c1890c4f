"""Kafka URLs: ``kafka://[user:pass@]host[:port][,host[:port]…]/TOPIC[,TOPIC…][?options]``
(``kafkas://`` for TLS) as a :class:`KafkaTarget` (:func:`parse_kafka_url`). Every error
is one line, the password masked.

Credentials in the URL mean SASL (``mechanism=PLAIN``, the default, or ``SCRAM-SHA-256`` /
``SCRAM-SHA-512``): ``kafka://`` is then ``SASL_PLAINTEXT``, ``kafkas://`` ``SASL_SSL``.
TLS options pass through to librdkafka: ``tls_ca=PATH`` (``ssl.ca.location``),
``tls_cert=PATH``, ``tls_key=PATH``, ``tls_key_password=…`` (masked like a password),
``tls_verify=false`` (no certificate check: testing only). A sink's URL also takes
``key=FIELD``: the record field whose value is each message's key."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

from ...config import mask_url
from ...errors import BadURLError

DEFAULT_PORT = 9092

MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

#: URL options → librdkafka settings (TLS)
TLS_OPTIONS = {"tls_ca": "ssl.ca.location", "tls_cert": "ssl.certificate.location",
               "tls_key": "ssl.key.location", "tls_key_password": "ssl.key.password"}

_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


@dataclass(frozen=True)
class KafkaTarget:
    """What a ``kafka://`` URL names: bootstrap servers, topics, security settings."""

    servers: str
    topics: tuple[str, ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    mechanism: str = "PLAIN"
    tls: bool = False
    tls_options: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    #: a sink's ``key=FIELD``: the record field whose value is the message key
    key_field: str | None = None
    url: str = field(default="", repr=False, compare=False)

    @property
    def masked(self) -> str:
        """The URL without its password: safe for logs and messages."""
        return mask_url(self.url)

    @property
    def topic(self) -> str:
        """The one topic of a sink URL."""
        return self.topics[0]

    @property
    def security_protocol(self) -> str:
        sasl = self.username is not None
        return {(False, False): "PLAINTEXT", (False, True): "SSL", (True, False): "SASL_PLAINTEXT",
                (True, True): "SASL_SSL"}[(sasl, self.tls)]


def bad_url(url: str, why: str) -> BadURLError:
    """A one-line error naming the URL without its password."""
    shown = mask_url(url) if re.match(r"[A-Za-z][A-Za-z0-9+.\-]*://", url) else "(not a URL)"
    return BadURLError(f"bad Kafka URL {shown!r}: {why} (expected kafka://[user:password@]host[:port]/TOPIC)")


def _servers(url: str, hosts: str) -> str:
    out = []
    for server in hosts.split(","):
        host, colon, port = server.rpartition(":") if not server.endswith("]") else (server, "", "")
        if not colon:
            host, port = server, str(DEFAULT_PORT)
        if not host or any(c.isspace() for c in host):
            raise bad_url(url, f"no host in {server!r}" if not host else "whitespace in the host")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise bad_url(url, "the port is not a number from 1 to 65535 (a '/' or '@' in the password must be "
                               "written %2F, %40)")
        out.append(f"{host}:{port}")
    return ",".join(out)


def _options(url: str, query: str, sink: bool) -> tuple[str, tuple[tuple[str, str], ...], str | None]:
    mechanism, verify, tls, key = "PLAIN", True, [], None
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "key" and sink:
            if not value:
                raise bad_url(url, "key= needs a field name")
            key = value
        elif name == "mechanism":
            mechanism = value.upper()
            if mechanism not in MECHANISMS:
                raise bad_url(url, f"mechanism must be one of {', '.join(MECHANISMS)}")
        elif name in TLS_OPTIONS:
            tls.append((TLS_OPTIONS[name], value))
        elif name == "tls_verify":
            if value.lower() not in ("true", "false"):
                raise bad_url(url, "tls_verify must be true or false")
            verify = value.lower() == "true"
        else:
            known = "key, mechanism" if sink else "mechanism"
            raise bad_url(url, f"unknown option {name!r} ({known}, tls_ca, tls_cert, tls_key, tls_key_password, "
                               "tls_verify)")
    if not verify:
        tls.append(("enable.ssl.certificate.verification", "false"))
    return mechanism, tuple(tls), key


def parse_kafka_url(url: str, *, one_topic: bool = False) -> KafkaTarget:
    """Parse ``kafka://[user:pass@]host[:port][,host[:port]…]/TOPIC[,TOPIC…][?options]``
    (module docstring). ``one_topic``: a sink's URL, naming exactly one topic (and taking
    ``key=FIELD``). User and
    password are URL-decoded (write ``/ @ :`` in them as ``%2F %40 %3A``). Raises a
    one-line :class:`BadURLError` (password masked)."""
    if not isinstance(url, str):
        raise BadURLError(f"a Kafka URL must be a string, not {type(url).__name__}")
    match = re.match(r"([A-Za-z][A-Za-z0-9+.\-]*)://", url)
    if match is None:
        raise bad_url(url, "no scheme")
    scheme = match.group(1).lower()
    if scheme not in ("kafka", "kafkas"):
        raise bad_url(url, f"scheme {scheme!r} is not kafka or kafkas")
    rest, _, query = url[match.end():].partition("?")
    authority, slash, path = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    username = password = None
    if at:
        name, colon, secret = userinfo.partition(":")
        username, password = unquote(name), unquote(secret) if colon else None
        if not username or password is None:
            raise bad_url(url, "SASL needs a user name and a password (user:password@)")
    if not hosts:
        raise bad_url(url, "no host")
    servers = _servers(url, hosts)
    topics = tuple(unquote(t) for t in path.split(",") if t) if slash else ()
    if not topics:
        raise bad_url(url, "no topic (add /TOPIC after the host)")
    for topic in topics:
        if not _TOPIC.fullmatch(topic) or topic in (".", ".."):
            raise bad_url(url, f"{topic!r} is not a Kafka topic name (letters, digits, '.', '_', '-'; at most 249)")
    if one_topic and len(topics) != 1:
        raise bad_url(url, "name exactly one topic to publish to")
    mechanism, tls_options, key_field = _options(url, query, one_topic)
    if tls_options and scheme == "kafka":
        raise bad_url(url, "TLS options (tls_…) need kafkas://")
    return KafkaTarget(servers=servers, topics=topics, username=username, password=password, mechanism=mechanism,
                       tls=scheme == "kafkas", tls_options=tls_options, key_field=key_field, url=url)
