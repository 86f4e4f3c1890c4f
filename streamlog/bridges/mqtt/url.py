"""MQTT URLs: ``mqtt://[user:pass@]host[:port]/TOPIC`` (``mqtts://`` for TLS, port 8883 by
default) as an :class:`MQTTTarget` (:func:`parse_mqtt_url`), and the rules of topic
filters (:func:`check_topic_filter`). Every error is one line, the password masked."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from ...config import mask_url
from ...errors import BadURLError

DEFAULT_PORT = 1883

DEFAULT_TLS_PORT = 8883


@dataclass(frozen=True)
class MQTTTarget:
    """What an ``mqtt://`` URL names. ``topic`` is URL-decoded; for a source it may hold
    several comma-separated topic filters (:attr:`topics`)."""

    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)
    topic: str
    tls: bool = False
    url: str = field(default="", repr=False, compare=False)

    @property
    def topics(self) -> list[str]:
        """The comma-separated topic filters of a source URL."""
        return [t for t in self.topic.split(",") if t]

    @property
    def masked(self) -> str:
        """The URL without its password: safe for logs and messages."""
        return mask_url(self.url)

    @property
    def address(self) -> str:
        """``host:port``, for messages."""
        return f"{self.host}:{self.port}"


def bad_url(url: str, why: str) -> BadURLError:
    """A one-line error naming the URL without its password (and without any user
    information at all when the URL has no scheme: then nothing reliably delimits it)."""
    shown = mask_url(url) if re.match(r"[A-Za-z][A-Za-z0-9+.\-]*://", url) else "(not a URL)"
    return BadURLError(f"bad MQTT URL {shown!r}: {why} "
                       "(expected mqtt://[user:password@]host[:port]/topic)")


def parse_mqtt_url(url: str) -> MQTTTarget:
    """Parse ``mqtt://[user:pass@]host[:port]/TOPIC`` (or ``mqtts://``, TLS).

    The host ends at the first ``/``: a ``/``, ``@`` or ``:`` in the user name or password
    must be percent-encoded (``%2F``, ``%40``, ``%3A``). The topic is everything after
    that ``/``, URL-decoded
    (``%23`` → ``#``; a literal ``#`` works too: it is never a fragment here). User
    and password are URL-decoded. Port: 1883 (8883 for ``mqtts``). Raises a one-line
    :class:`BadURLError` (password masked) when the URL cannot be used.
    """
    if not isinstance(url, str):
        raise BadURLError(f"an MQTT URL must be a string, not {type(url).__name__}")
    match = re.match(r"([A-Za-z][A-Za-z0-9+.\-]*)://", url)
    if match is None:
        raise bad_url(url, "no scheme")
    scheme = match.group(1).lower()
    if scheme not in ("mqtt", "mqtts"):
        raise bad_url(url, f"scheme {scheme!r} is not mqtt or mqtts")
    rest = url[match.end():]
    authority, slash, path = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    username = password = None
    if at:
        name, colon, secret = userinfo.partition(":")
        username = unquote(name)
        password = unquote(secret) if colon else None
        if not username:
            raise bad_url(url, "empty user name")
    if hostport.startswith("["):  # [IPv6]:port
        end = hostport.find("]")
        if end < 0:
            raise bad_url(url, "unclosed [ in the host")
        host, port_text = hostport[1:end], hostport[end + 1:]
        if port_text and not port_text.startswith(":"):
            raise bad_url(url, "junk after the IPv6 address")
        port_text = port_text[1:]
    else:
        host, _, port_text = hostport.partition(":")
    if not host:
        raise bad_url(url, "no host")
    if any(c.isspace() for c in host):
        raise bad_url(url, "whitespace in the host")
    port = DEFAULT_TLS_PORT if scheme == "mqtts" else DEFAULT_PORT
    if port_text or hostport.endswith(":"):
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise bad_url(url, "the port is not a number from 1 to 65535 (a '/' or '@' in the password "
                            "must be written %2F, %40)")
        port = int(port_text)
    topic = unquote(path) if slash else ""
    if not topic:
        raise bad_url(url, "no topic (add /TOPIC after the host)")
    if "\x00" in topic:
        raise bad_url(url, "NUL in the topic")
    return MQTTTarget(host=host, port=port, username=username, password=password, topic=topic,
                      tls=scheme == "mqtts", url=url)


def check_topic_filter(url: str, topic: str) -> None:
    """Check a subscription filter (:func:`bad_url` if it is not one): ``+`` a whole level,
    ``#`` the whole last level."""
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise bad_url(url, f"in topic filter {topic!r}, '#' must be the whole last level")
        if "+" in level and level != "+":
            raise bad_url(url, f"in topic filter {topic!r}, '+' must be a whole level")
    if len(topic.encode()) > 65535:
        raise bad_url(url, "topic longer than 65535 bytes")
