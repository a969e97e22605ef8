"""The ``/metrics`` endpoint.

prometheus_client's WSGI app does the content negotiation: a scraper that asks
for OpenMetrics gets exemplars (the trace id of a call on the map-duration
histogram), a plain scraper gets the classic text format. Around it payoff adds
what a network-facing endpoint needs and prometheus_client's own server lacks:

* TLS and HTTP basic auth, configured like any Prometheus exporter (the
  exporter-toolkit ``web.yml``: ``tls_server_config`` and ``basic_auth_users``
  with bcrypt hashes), so Prometheus' ``scheme: https`` and ``basic_auth`` work
  unchanged;
* only ``/metrics`` answers, every other path is a 404;
* a warning when the endpoint is reachable beyond this machine without TLS
  and basic auth.

It binds 127.0.0.1 unless told otherwise. A broken TLS or auth configuration
never falls back to open HTTP: the endpoint is not served at all.

The listening socket belongs to the process that opened it. A child made by
``os.fork`` (a ``processes`` pool's worker) closes its copy at once, so that
``stop()`` really frees the port while workers live on; an exec'd child never
inherits it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import importlib
import ipaddress
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from socketserver import ThreadingMixIn
from types import ModuleType
from typing import Any, cast
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import CollectorRegistry, make_wsgi_app

from payoff import _forks
from payoff.observers import warn_at_call_site
from payoff.worker import in_worker_process

log = logging.getLogger("payoff")

PORT_ENV = "PAYOFF_METRICS_PORT"
ADDR_ENV = "PAYOFF_METRICS_ADDR"
WEB_CONFIG_ENV = "PAYOFF_METRICS_WEB_CONFIG"
CERT_FILE_ENV = "PAYOFF_METRICS_CERT_FILE"
KEY_FILE_ENV = "PAYOFF_METRICS_KEY_FILE"
SERVED_BY_ENV = "PAYOFF_METRICS_SERVED_BY"
"""Set by the process that started the endpoint from ``PAYOFF_METRICS_PORT`` to its pid: the processes it starts
(any pool's workers, a dask cluster's, a subprocess) inherit both and leave the endpoint to it."""
DEFAULT_PORT = 9464
DEFAULT_ADDR = "127.0.0.1"
METRICS_PATH = "/metrics"
EXTRA = "metrics-web"
REQUEST_TIMEOUT = 30.0
"""Seconds a connection may take (TLS handshake included) before it is dropped, so a stalled client holds no thread."""

StrPath = str | os.PathLike[str]
_BCRYPT_HASH = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
_PORT = re.compile(r"[0-9]{1,5}")


class MetricsExposureWarning(UserWarning):
    """``/metrics`` listens beyond loopback without TLS and basic auth; filter this category to accept that."""


class MetricsConfigError(ValueError):
    """The TLS or basic-auth configuration cannot be used; nothing was served."""


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class WebConfig:
    """TLS and basic auth for ``/metrics``: the supported part of exporter-toolkit's web.yml."""

    certfile: str | None = None
    keyfile: str | None = None
    basic_auth_users: Mapping[str, str] = field(default_factory=dict)

    @property
    def tls(self) -> bool:
        return self.certfile is not None

    @property
    def auth(self) -> bool:
        return bool(self.basic_auth_users)


def _optional_module(name: str, purpose: str) -> ModuleType:
    """Import an optional dependency, or say which extra brings it (a bare ImportError would not)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise MetricsConfigError(f"{purpose} needs the {name!r} package: pip install 'payoff[{EXTRA}]'") from exc


def _read_mapping(path: Path) -> Any:
    """Parse a web config as YAML when PyYAML is there, else as JSON (a JSON file is valid YAML too)."""
    text = path.read_text(encoding="utf-8")
    try:
        yaml = importlib.import_module("yaml")
    except ImportError:
        try:
            return json.loads(text) if text.strip() else None
        except ValueError as exc:
            raise MetricsConfigError(f"{path}: PyYAML is not installed, so the web config must be JSON "
                                     f"(or pip install 'payoff[{EXTRA}]'): {exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MetricsConfigError(f"{path}: not valid YAML: {exc}") from exc


def _only_keys(section: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    """Refuse what payoff does not implement: silently ignoring e.g. ``client_auth_type`` would weaken security."""
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise MetricsConfigError(f"{where}: unsupported setting(s) {unknown}; payoff supports "
                                 f"tls_server_config.cert_file/key_file and basic_auth_users")


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise MetricsConfigError(f"{where} must be a mapping with string keys, got {type(value).__name__}")
    return value


def load_web_config(path: StrPath) -> WebConfig:
    """Read an exporter-toolkit style web config; relative file names are relative to the config's folder."""
    where = Path(path)
    data = _mapping(_read_mapping(where), str(where))
    _only_keys(data, ("tls_server_config", "basic_auth_users"), str(where))
    tls = _mapping(data.get("tls_server_config"), f"{where}: tls_server_config")
    _only_keys(tls, ("cert_file", "key_file"), f"{where}: tls_server_config")
    users = _mapping(data.get("basic_auth_users"), f"{where}: basic_auth_users")

    def resolve(name: str) -> str | None:
        value = tls.get(name)
        if value is None:
            return None
        return str(where.parent / str(value))

    return WebConfig(resolve("cert_file"), resolve("key_file"), {k: str(v) for k, v in users.items()})


def _combine(config: WebConfig, certfile: StrPath | None, keyfile: StrPath | None,
             users: Mapping[str, str] | None) -> WebConfig:
    """Merge explicit options into a web config; the same setting from two places is an error, not a guess."""
    if (certfile is not None or keyfile is not None) and (config.certfile or config.keyfile):
        raise MetricsConfigError("TLS is set both in the web config and as certfile/keyfile; keep one")
    if users and config.basic_auth_users:
        raise MetricsConfigError("basic auth users are set both in the web config and as basic_auth_users; keep one")
    cert = os.fspath(certfile) if certfile is not None else config.certfile
    key = os.fspath(keyfile) if keyfile is not None else config.keyfile
    if (cert is None) != (key is None):
        raise MetricsConfigError(f"TLS needs both a certificate and a key file ({CERT_FILE_ENV} and {KEY_FILE_ENV}, "
                                 f"or tls_server_config cert_file and key_file); got cert={cert!r}, key={key!r}")
    return WebConfig(cert, key, dict(users or config.basic_auth_users))


def parse_ports(raw: str, source: str = PORT_ENV) -> range:
    """A port, or a range ``first-last`` of them (each process of a pre-fork server takes one of its own)."""
    first, dash, last = raw.partition("-")
    if not (dash and first):  # "-1" is a negative port, not a range
        port = parse_port(raw, source)
        return range(port, port + 1)
    if _PORT.fullmatch(first) is None or _PORT.fullmatch(last) is None or not 0 < int(first) <= int(last) <= 65535:
        raise ValueError(f"{source}={raw!r} is not a port range: use first-last, ASCII digits, 1-65535, first no "
                         "greater than last (or one port, 0 for a free one)")
    return range(int(first), int(last) + 1)


def parse_port(raw: str, source: str = PORT_ENV) -> int:
    """A port from text: ASCII digits only, 0-65535 (``int()`` would take '٣', ' 9464', '+80' or '9_464')."""
    if _PORT.fullmatch(raw) is None or int(raw) > 65535:
        raise ValueError(f"{source}={raw!r} is not a port: use ASCII digits 0-65535 (0 picks a free port)")
    return int(raw)


# ---------------------------------------------------------------- the exposure warning


def _is_loopback(addr: str) -> bool:
    """Whether every address ``addr`` stands for is loopback; "" and unresolvable names count as exposed."""
    if not addr:
        return False
    try:
        infos = socket.getaddrinfo(addr, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return False
    ips = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    return bool(ips) and all(
        ip.is_loopback or (isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None
                           and ip.ipv4_mapped.is_loopback) for ip in ips)


def exposure_warning(addr: str, *, tls: bool, auth: bool) -> str | None:
    """The warning binding ``addr`` deserves, or None when it is loopback or has both TLS and basic auth."""
    if (tls and auth) or _is_loopback(addr):
        return None
    missing = []
    if not tls:
        missing.append("without TLS (metrics" + (" and passwords" if auth else "") + " travel in clear text)")
    if not auth:
        missing.append("without basic auth (anyone who can reach it can read it)")
    return (f"payoff is about to serve /metrics on {addr or 'every interface'!r} (warned before the bind, which "
            f"may still fail), beyond this machine, "
            f"{' and '.join(missing)}. Set {WEB_CONFIG_ENV} (tls_server_config, basic_auth_users) or "
            f"certfile/keyfile/basic_auth_users, or bind 127.0.0.1")


# ---------------------------------------------------------------- HTTP


class _BasicAuth:
    """Checks ``Authorization: Basic`` against bcrypt hashes in constant time, like exporter-toolkit.

    An unknown user still costs one bcrypt check (against another user's hash),
    so response time does not tell which user names exist. Verdicts are cached
    under a SHA-256 of user, password and hash: bcrypt is slow on purpose and a
    scraper sends the same credentials every few seconds.
    """

    _CACHE_LIMIT = 256

    def __init__(self, users: Mapping[str, str]) -> None:
        for user, hashed in users.items():
            if ":" in user:
                raise MetricsConfigError(f"basic_auth_users: the user name {user!r} contains ':', which Basic auth "
                                         "uses to split the user from the password: that user could never log in")
            if _BCRYPT_HASH.fullmatch(hashed) is None:
                raise MetricsConfigError(f"basic_auth_users[{user!r}] is not a bcrypt hash ($2b$...); "
                                         "store hashes, never passwords")
        self._bcrypt = _optional_module("bcrypt", "basic auth")
        self._users = {user: hashed.encode() for user, hashed in users.items()}
        self._dummy = next(iter(self._users.values()))
        self._cache: dict[bytes, bool] = {}

    def allows(self, header: str | None) -> bool:
        credentials = _decode_basic(header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self._users.get(user)
        key = hashlib.sha256(repr((user, password, hashed)).encode()).digest()  # repr: no field-boundary games
        verdict = self._cache.get(key)
        if verdict is None:
            verdict = self._check(password, hashed or self._dummy) and hashed is not None
            if len(self._cache) >= self._CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = verdict
        return verdict

    def _check(self, password: bytes, hashed: bytes) -> bool:
        try:
            return bool(self._bcrypt.checkpw(password, hashed))
        except ValueError:  # e.g. a password over bcrypt's 72 bytes
            return False


def _decode_basic(header: str | None) -> tuple[str, bytes] | None:
    """User and password from a Basic header, or None for anything malformed (which is then a 401, not a 500)."""
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).partition(b":")
        return (user.decode("utf-8"), password) if sep else None
    except (binascii.Error, UnicodeDecodeError):
        return None


def _reply(start_response: StartResponse, status: str, body: bytes,
           extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), *(extra or [])])
    return [body]


def _guarded(app: WSGIApplication, auth: _BasicAuth | None) -> WSGIApplication:
    """Authenticate first (so paths do not leak), then serve ``/metrics`` only."""

    def guarded(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if auth is not None and not auth.allows(environ.get("HTTP_AUTHORIZATION")):
            return _reply(start_response, "401 Unauthorized", b"401 Unauthorized\n",
                          [("WWW-Authenticate", 'Basic realm="payoff /metrics", charset="UTF-8"')])
        if environ.get("PATH_INFO") != METRICS_PATH:
            return _reply(start_response, "404 Not Found", b"404 Not Found: payoff serves /metrics only\n")
        return app(environ, start_response)

    return guarded


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr for every scrape."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib names it so
        pass


class _Server(ThreadingMixIn, WSGIServer):
    """Thread per connection; the TLS handshake runs in that thread, so a slow client cannot stall ``accept``."""

    daemon_threads = True
    ssl_context: ssl.SSLContext | None = None
    owner_pid = 0
    """The process serving on this socket; in any other (a forked child) the object is an inert copy."""

    def server_bind(self) -> None:
        self.socket.set_inheritable(False)  # the default since PEP 446; said here because the port depends on it
        self.owner_pid = os.getpid()
        _listening.add(self)
        super().server_bind()

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(REQUEST_TIMEOUT)
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        with self.ssl_context.wrap_socket(request, server_side=True) as tls:
            super().finish_request(tls, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A failed handshake or a dropped client is the client's problem: debug log, no traceback on stderr."""
        log.debug("payoff /metrics: connection from %s failed", client_address, exc_info=True)


_listening: weakref.WeakSet[WSGIServer] = weakref.WeakSet()
"""Every endpoint socket this process opened and has not closed: a forked child closes its copies."""


def _close_in_child() -> None:
    """In a child made by ``os.fork``: the parent's endpoints are not the child's to hold open or to serve.

    A worker holding a copy of the listening socket kept the port bound after the
    parent's ``stop()``: connections queued there unanswered and a new server got
    EADDRINUSE until the worker exited. The child also forgets the endpoint
    started from the environment (it is the parent's, and serving the same port
    again would only fail), without a warning.
    """
    global _auto, _failed_for, _unserved, _retry_at
    for server in list(_listening):
        with contextlib.suppress(OSError):
            server.socket.close()
    _listening.clear()
    one_each = _one_port_each()
    if one_each:  # a range: a port of its own, tried afresh (also where the parent's try met a busy port)
        _auto, _failed_for, _retry_at = None, None, None
        return
    _retry_at = None  # one port: the parent's to serve or retry, no child's
    if _auto is not None:
        _unserved = (os.getppid(), _auto.port)
        _auto = None
        _failed_for = _env_snapshot()


def _ssl_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise MetricsConfigError(f"cannot load TLS certificate {certfile!r} with key {keyfile!r}: {exc}") from exc
    return context


STOP_POLL_SECONDS = 0.05
"""How often the serving thread looks for ``stop()``: the stdlib's 0.5 s made every ``stop()`` take that long
(a select in C and a flag check 20 times a second cost the process nothing it could measure)."""


PORT_ZERO_ADVICE = "; pass port=0 for a free one"
"""Said to a caller of the Python API; a command line says its own flag instead."""


def _listen(addr: str, port: int, app: WSGIApplication,
            context: ssl.SSLContext | None) -> tuple[WSGIServer, threading.Thread]:
    """Bind (IPv4 or IPv6, as ``addr`` needs) and serve on a daemon thread."""
    family, _, _, _, sockaddr = socket.getaddrinfo(addr or None, port, type=socket.SOCK_STREAM,
                                                   flags=socket.AI_PASSIVE)[0]

    class Server(_Server):
        address_family = family
        ssl_context = context

    try:
        server = make_server(str(sockaddr[0]), port, app, Server, handler_class=_QuietHandler)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise OSError(exc.errno, f"cannot serve /metrics on {addr or '*'}:{port}: the port is in use"
                                 f"{_used_by_us(port)}{PORT_ZERO_ADVICE}") from exc
    thread = threading.Thread(target=server.serve_forever, args=(STOP_POLL_SECONDS,), name="payoff-metrics",
                              daemon=True)
    thread.start()
    return server, thread


def _used_by_us(port: int) -> str:
    """Name the endpoint of this process that holds ``port`` (a re-run notebook cell), if one does."""
    for server in list(_listening):
        if server.server_address[1] == port and server.socket.fileno() != -1:  # still open: closed ones linger
            return " by this process's own /metrics endpoint (serve_metrics or PAYOFF_METRICS_PORT) with other " \
                   "settings: stop() it, or keep using it"
    return ""


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint; ``stop()`` closes the socket and joins the thread."""

    server: WSGIServer
    thread: threading.Thread
    addr: str
    tls: bool = False
    asked: tuple[object, ...] = field(default=(), repr=False, compare=False)
    """What :func:`serve_metrics` was asked for (address, registry, security): the same again gets this one."""

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    @property
    def url(self) -> str:
        addr = self.addr if self.addr.strip() else str(self.server.server_address[0])  # "": every interface
        host = f"[{addr}]" if ":" in addr else addr
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{METRICS_PATH}"

    def stop(self) -> None:
        server = self.server
        if getattr(server, "owner_pid", os.getpid()) != os.getpid():
            server.server_close()  # a forked child's copy: the serving thread exists in the parent only
            return
        server.shutdown()
        server.server_close()
        _listening.discard(server)
        self.thread.join(5)


def serve_metrics(port: int = DEFAULT_PORT, addr: str = DEFAULT_ADDR, registry: CollectorRegistry | None = None,
                  *, certfile: StrPath | None = None, keyfile: StrPath | None = None,
                  basic_auth_users: Mapping[str, str] | None = None,
                  web_config: WebConfig | StrPath | None = None) -> MetricsServer:
    """Serve payoff's metrics on ``/metrics``; ``port=0`` picks a free port.

    ``certfile``/``keyfile`` turn on HTTPS; ``basic_auth_users`` maps user names
    to bcrypt hashes (extra ``metrics-web``); ``web_config`` is an exporter-toolkit
    web.yml path (or a :class:`WebConfig`) giving the same. Configuration errors
    raise :class:`MetricsConfigError` before anything is bound.
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int from 0 to 65535, got {port!r}")
    if web_config is None or isinstance(web_config, WebConfig):
        base = web_config or WebConfig()
    else:
        base = load_web_config(web_config)
    config = _combine(base, certfile, keyfile, basic_auth_users)
    auth = _BasicAuth(config.basic_auth_users) if config.auth else None
    context = _ssl_context(config.certfile, config.keyfile) if config.certfile and config.keyfile else None
    if registry is None:
        from payoff.telemetry import metrics_observer

        registry = metrics_observer().registry
    asked = (addr, registry, config)
    running = _serving(port)
    if running is not None and running.asked == asked:
        return running  # a re-run notebook cell: the endpoint it started the first time
    message = exposure_warning(addr, tls=config.tls, auth=config.auth)
    if message is not None:  # before the bind: with the warning made an error, nothing is ever exposed
        warn_at_call_site(MetricsExposureWarning(message))
    server, thread = _listen(addr, port, _guarded(make_wsgi_app(registry), auth), context)
    endpoint = MetricsServer(server, thread, addr, tls=context is not None, asked=asked)
    server.payoff_endpoint = endpoint  # type: ignore[attr-defined]
    return endpoint


def _serving(port: int) -> MetricsServer | None:
    """The endpoint this process serves on ``port`` (never for ``port=0``, which asks for a new one)."""
    for server in list(_listening) if port else ():
        endpoint = getattr(server, "payoff_endpoint", None)
        if server.server_address[1] == port and server.socket.fileno() != -1 and endpoint is not None:
            return cast(MetricsServer, endpoint)
    return None


# ---------------------------------------------------------------- from the environment


def web_config_from_env() -> WebConfig:
    """TLS and basic auth as the environment sets them: ``PAYOFF_METRICS_WEB_CONFIG`` plus cert/key variables."""
    path = os.environ.get(WEB_CONFIG_ENV)
    try:
        base = load_web_config(path) if path else WebConfig()
    except OSError as exc:
        raise MetricsConfigError(f"cannot read {path!r}: {exc}") from exc
    cert, key = os.environ.get(CERT_FILE_ENV) or None, os.environ.get(KEY_FILE_ENV) or None
    return _combine(base, cert, key, None)


def _env_snapshot() -> tuple[str | None, ...]:
    return tuple(os.environ.get(name) for name in (PORT_ENV, ADDR_ENV, WEB_CONFIG_ENV, CERT_FILE_ENV, KEY_FILE_ENV))


_auto: MetricsServer | None = None
_failed_for: tuple[str | None, ...] | None = None
_retry_at: float | None = None
"""When a port that was busy may be tried again (``time.monotonic()``); None: the failure is no busy port."""
_auto_lock = _forks.Lock()

PORT_RETRY_SECONDS = 5.0
"""How often maps try a ``PAYOFF_METRICS_PORT`` again that was in use: a restarted service's predecessor may hold
it for a moment, and its target stayed down for the new process's whole life."""


def addr_from_env() -> str:
    """``PAYOFF_METRICS_ADDR``, or 127.0.0.1 when it is unset, empty or blank.

    ``PAYOFF_METRICS_ADDR=`` in an env or compose file sets it to "", which a
    socket binds as every interface: an unset-looking value must not expose
    the endpoint.
    """
    raw = os.environ.get(ADDR_ENV, "")
    return raw if raw.strip() else DEFAULT_ADDR


def _start_from_env(raw_port: str, retry: bool = False) -> tuple[MetricsServer | None, bool]:
    """One attempt, and whether it failed on a busy port (tried again later); every failure is logged with the
    variables involved, once (a retry says only when it serves), none escapes into the user's map call."""
    addr = addr_from_env()
    try:
        ports = parse_ports(raw_port)
        server = _serve_one_of(ports, addr)
        os.environ[SERVED_BY_ENV] = _served_mark(str(os.getpid()))
        if ports[0] == 0:  # a free port: nothing else would tell anyone which
            log.warning("payoff: serving /metrics at %s (%s=0 took a free port)", server.url, PORT_ENV)
        elif retry:
            log.warning("payoff: serving /metrics at %s now that the port is free", server.url)
        return server, False
    except OSError as exc:
        busy = exc.errno == errno.EADDRINUSE
        if not retry:
            said = str(exc).replace(PORT_ZERO_ADVICE, "")
            log.warning("payoff: not serving /metrics on %s=%r %s=%r: %s%s", ADDR_ENV, addr, PORT_ENV, raw_port,
                        said, _busy_advice(len(parse_ports(raw_port)) > 1) if busy else "")
        return None, busy
    except MetricsExposureWarning as exc:  # warnings turned into errors: then refuse to expose
        log.warning("payoff: not serving /metrics (MetricsExposureWarning is an error here): %s", exc)
    except MetricsConfigError as exc:
        log.warning("payoff: not serving /metrics: the TLS/basic-auth settings (%s, %s, %s) are unusable: %s",
                    WEB_CONFIG_ENV, CERT_FILE_ENV, KEY_FILE_ENV, exc)
    except ValueError as exc:
        log.warning("payoff: not serving /metrics: %s", exc)
    return None, False


def _busy_advice(a_range: bool) -> str:
    again = f"; maps try it again every {PORT_RETRY_SECONDS:g} s"
    if a_range:  # the error already says to give the range a port for each process
        return again
    return f"{again}; set {PORT_ENV}=0 for a free port, or a range (9464-9472) for one each per process"


def _serve_one_of(ports: range, addr: str) -> MetricsServer:
    """The first port of ``ports`` no other process holds: one each for a pre-fork server's workers, which all
    inherit one variable (with one port, the first worker to map took it and the others served nothing)."""
    for port in ports[:-1]:
        try:
            return serve_metrics(port, addr, web_config=web_config_from_env())
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
    try:
        return serve_metrics(ports[-1], addr, web_config=web_config_from_env())
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or len(ports) == 1:
            raise
        raise OSError(exc.errno, f"cannot serve /metrics on {addr}: every port of {ports[0]}-{ports[-1]} is in "
                                 "use; give a range with a port for each process") from exc


def _one_port_each() -> bool:
    """``PAYOFF_METRICS_PORT`` names a range: every process serves a port of it, forked children and the
    processes the serving one starts too."""
    first, dash, _ = os.environ.get(PORT_ENV, "").partition("-")
    return bool(dash and first)


def _served_mark(pid: str) -> str:
    """``SERVED_BY_ENV``'s value: the serving pid and the settings it serves, as its children inherit them."""
    return f"{pid} {os.environ.get(PORT_ENV, '').strip()} {addr_from_env()}"


def _inherited_mark() -> bool:
    """Whether this process inherited the variables of one that serves them: a process given a port or address
    of its own (a separate program a host starts) serves it; one that inherited a mark alone stayed quiet (a
    pid, as the mark was before it named the settings)."""
    mark = os.environ.get(SERVED_BY_ENV, "")
    pid, _, settings = mark.partition(" ")
    if not pid or pid == str(os.getpid()) or _one_port_each():
        return False
    return not settings or mark == _served_mark(pid)


_unserved: tuple[int, int] | None = None
"""In a child forked from the process serving the one port the environment names: that process's pid and port,
until the child's first map says that its own calls go unserved."""


def _say_unserved() -> None:
    """Once, in a forked child of a single-port endpoint: the master of a pre-fork server that mapped before the
    fork (gunicorn's ``preload_app``) served the port, and every worker's calls went unserved without a word."""
    global _unserved
    with _auto_lock:
        unserved, _unserved = _unserved, None
    if unserved is None:
        return
    pid, port = unserved
    log.warning("payoff: this process (pid %d) was forked from pid %d, which serves /metrics on port %d; the calls "
                "of this process are not served (each process counts its own): give %s a range of ports, one for "
                "each process (e.g. %s=%d-%d), and each process serves one of its own", os.getpid(), pid, port,
                PORT_ENV, PORT_ENV, port, port + 8)


def serve_from_env() -> MetricsServer | None:
    """Start the endpoint once per process when ``PAYOFF_METRICS_PORT`` is set (and not empty or blank).

    Runs as every map call starts, so a configuration that failed is remembered and
    neither retried nor logged again until the variables change, but a port in use, which its holder may free,
    is tried again every ``PORT_RETRY_SECONDS``. Never in a process the serving one started
    (``SERVED_BY_ENV``), nor in a payoff worker process, also where its parent's start failed: each inherits
    the variable, and a nested map there logged "port in use" in every worker started afresh.
    """
    global _auto, _failed_for, _retry_at
    raw = os.environ.get(PORT_ENV)
    if not raw or not raw.strip() or in_worker_process():  # empty or blank: unset, as an env file leaves it
        return None
    if _unserved is not None:
        _say_unserved()
    if _inherited_mark():  # a process the server started, with the settings it serves
        return None
    with _auto_lock:
        if _auto is None:
            snapshot = _env_snapshot()
            retry = snapshot == _failed_for
            if retry and (_retry_at is None or time.monotonic() < _retry_at):
                return None
            _auto, busy = _start_from_env(raw, retry)
            _failed_for = snapshot if _auto is None else None
            _retry_at = time.monotonic() + PORT_RETRY_SECONDS if _auto is None and busy else None
        return _auto


_forks.in_child(_close_in_child)
