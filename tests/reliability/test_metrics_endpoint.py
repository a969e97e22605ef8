"""The ``/metrics`` endpoint's hardening (issue 12): TLS, basic auth, strict paths, port parsing, exposure warning.

Everything that can be real is: a self-signed certificate made here with
``cryptography``, servers bound to 127.0.0.1 only, urllib clients that verify
against that certificate, bcrypt hashes, and (when installed) a real Prometheus
scraping over TLS with basic auth. The non-loopback warning is checked on
address strings and with the bind itself stubbed, so no test listens beyond
127.0.0.1.
"""

from __future__ import annotations

import base64
import datetime
import importlib.util
import ipaddress
import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from payoff import ParallelConfig, ParallelExecutor
from payoff.telemetry import server as srv
from payoff.telemetry.server import MetricsServer, serve_from_env, serve_metrics
from tests import tasks
from tests.conftest import require
from tests.prometheus import query, running_prometheus, targets, wait_until

USER, PASSWORD = "prom", "s3cret-pass"
ENV_VARS = ("PAYOFF_METRICS_PORT", "PAYOFF_METRICS_ADDR", "PAYOFF_METRICS_WEB_CONFIG",
            "PAYOFF_METRICS_CERT_FILE", "PAYOFF_METRICS_KEY_FILE")


@dataclass(frozen=True)
class Pki:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: str


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A self-signed certificate for 127.0.0.1 and localhost, made here so the test trusts exactly it."""
    require(importlib.util.find_spec("cryptography") is not None, "cryptography (in payoff's test extra)")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "payoff test")])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(key, hashes.SHA256()))
    work = tmp_path_factory.mktemp("pki")
    (work / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (work / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    return Pki(work / "cert.pem", work / "key.pem")


@pytest.fixture(scope="module")
def users() -> dict[str, str]:
    """Basic-auth users as in an exporter-toolkit web.yml: name -> bcrypt hash (cost 4 keeps tests quick)."""
    require(importlib.util.find_spec("bcrypt") is not None, "bcrypt (payoff extra metrics-web)")
    import bcrypt

    return {USER: bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()}


@pytest.fixture
def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Counter("payoff_probe", "a series the tests look for", registry=reg).inc(3)
    return reg


@pytest.fixture
def running() -> Iterator[list[MetricsServer]]:
    """Servers a test started; each is stopped after the test."""
    started: list[MetricsServer] = []
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """A clean slate for ``serve_from_env``: no metrics env vars, no server or failure remembered."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(srv, "_auto", None)
    monkeypatch.setattr(srv, "_failed_for", None, raising=False)
    yield monkeypatch
    if srv._auto is not None:
        srv._auto.stop()
    os.environ.pop(srv.SERVED_BY_ENV, None)  # set by the endpoint it started: this test's subprocesses inherited it


# ---------------------------------------------------------------- helpers


def fetch(url: str, *, cafile: Path | None = None, auth: tuple[str, str] | None = None,
          headers: dict[str, str] | None = None) -> Reply:
    """One real request; HTTP errors come back as a Reply so tests can look at 401s and 404s."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    context = ssl.create_default_context(cafile=str(cafile)) if cafile is not None else None
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as resp:
            return Reply(resp.status, dict(resp.headers.items()), resp.read().decode())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers.items()), exc.read().decode())


def with_path(server: MetricsServer, path: str) -> str:
    return server.url.removesuffix("/metrics") + path


def write_web_config(path: Path, pki: Pki | None, users: dict[str, str] | None) -> Path:
    """An exporter-toolkit web.yml; cert paths relative to the file, as exporter-toolkit resolves them."""
    lines = []
    if pki is not None:
        lines += ["tls_server_config:", f"  cert_file: {pki.cert.name}", f"  key_file: {pki.key.name}"]
        for source in (pki.cert, pki.key):
            if source.parent != path.parent:
                shutil.copy(source, path.parent / source.name)
    if users:
        lines += ["basic_auth_users:", *(f"  {name}: {hashed}" for name, hashed in users.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def payoff_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "payoff" and r.levelno == logging.WARNING]


# ---------------------------------------------------------------- TLS and basic auth, over real sockets


def test_https_scrape_needs_the_right_credentials(pki: Pki, users: dict[str, str], registry: CollectorRegistry,
                                                  running: list[MetricsServer]) -> None:
    server = serve_metrics(0, registry=registry, certfile=pki.cert, keyfile=pki.key, basic_auth_users=users)
    running.append(server)
    assert server.url.startswith("https://127.0.0.1:")
    anonymous = fetch(server.url, cafile=pki.cert)
    assert anonymous.status == 401
    assert anonymous.headers.get("WWW-Authenticate", "").startswith("Basic ")
    assert "payoff_probe" not in anonymous.body
    assert fetch(server.url, cafile=pki.cert, auth=(USER, "wrong")).status == 401
    assert fetch(server.url, cafile=pki.cert, auth=("intruder", PASSWORD)).status == 401
    good = fetch(server.url, cafile=pki.cert, auth=(USER, PASSWORD))
    assert good.status == 200
    assert "payoff_probe_total 3.0" in good.body


def test_https_is_really_tls_with_the_given_certificate(pki: Pki, registry: CollectorRegistry,
                                                        running: list[MetricsServer]) -> None:
    server = serve_metrics(0, registry=registry, certfile=str(pki.cert), keyfile=str(pki.key))
    running.append(server)
    assert fetch(server.url, cafile=pki.cert).status == 200
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        fetch(server.url)  # the system's CAs do not vouch for a certificate made in this test
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        fetch(server.url.replace("https://", "http://"))


def test_openmetrics_negotiation_still_works_behind_tls_and_auth(pki: Pki, users: dict[str, str],
                                                                 registry: CollectorRegistry,
                                                                 running: list[MetricsServer]) -> None:
    server = serve_metrics(0, registry=registry, certfile=pki.cert, keyfile=pki.key, basic_auth_users=users)
    running.append(server)
    om = fetch(server.url, cafile=pki.cert, auth=(USER, PASSWORD),
               headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["Content-Type"].startswith("application/openmetrics-text")
    assert om.body.rstrip().endswith("# EOF")
    plain = fetch(server.url, cafile=pki.cert, auth=(USER, PASSWORD))
    assert plain.headers["Content-Type"].startswith("text/plain")


def test_basic_auth_is_checked_before_the_path(users: dict[str, str], registry: CollectorRegistry,
                                               running: list[MetricsServer]) -> None:
    server = serve_metrics(0, registry=registry, basic_auth_users=users)
    running.append(server)
    assert fetch(with_path(server, "/nope")).status == 401
    assert fetch(with_path(server, "/nope"), auth=(USER, PASSWORD)).status == 404


@pytest.mark.parametrize("header", ["Basic", "Basic !!!not-base64!!!", "Bearer abc",
                                    "Basic " + base64.b64encode(b"no-colon").decode(),
                                    "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
                                    "Basic " + base64.b64encode(f"{USER}:{'x' * 100}".encode()).decode()])
def test_malformed_authorization_headers_are_401_not_500(header: str, users: dict[str, str],
                                                         registry: CollectorRegistry,
                                                         running: list[MetricsServer]) -> None:
    server = serve_metrics(0, registry=registry, basic_auth_users=users)
    running.append(server)
    assert fetch(server.url, headers={"Authorization": header}).status == 401


def test_htpasswd_style_2y_hashes_are_accepted(users: dict[str, str], registry: CollectorRegistry,
                                               running: list[MetricsServer]) -> None:
    """``htpasswd -nBC 10`` writes $2y$ hashes, the form Prometheus' own docs suggest."""
    server = serve_metrics(0, registry=registry, basic_auth_users={USER: "$2y$" + users[USER][4:]})
    running.append(server)
    assert fetch(server.url, auth=(USER, PASSWORD)).status == 200
    assert fetch(server.url, auth=(USER, "nope")).status == 401


# ---------------------------------------------------------------- strict paths


@pytest.mark.parametrize("path", ["/", "/metrics/", "/metricsx", "/favicon.ico", "/other", "/metrics/../x"])
def test_only_the_metrics_path_is_served(path: str, registry: CollectorRegistry,
                                         running: list[MetricsServer]) -> None:
    server = serve_metrics(0, registry=registry)
    running.append(server)
    reply = fetch(with_path(server, path))
    assert reply.status == 404, (path, reply.status)
    assert "payoff_probe" not in reply.body


def test_query_strings_on_metrics_are_allowed(registry: CollectorRegistry, running: list[MetricsServer]) -> None:
    server = serve_metrics(0, registry=registry)
    running.append(server)
    reply = fetch(server.url + "?name[]=payoff_probe_total")
    assert reply.status == 200
    assert "payoff_probe_total 3.0" in reply.body


# ---------------------------------------------------------------- configuration through the environment


def test_web_config_file_turns_on_tls_and_auth_from_env(tmp_path: Path, pki: Pki, users: dict[str, str],
                                                        env: pytest.MonkeyPatch) -> None:
    config = write_web_config(tmp_path / "web.yml", pki, users)
    env.setenv("PAYOFF_METRICS_PORT", "0")
    env.setenv("PAYOFF_METRICS_WEB_CONFIG", str(config))
    server = serve_from_env()
    assert server is not None
    assert server.url.startswith("https://127.0.0.1:")
    assert fetch(server.url, cafile=pki.cert).status == 401
    assert fetch(server.url, cafile=pki.cert, auth=(USER, PASSWORD)).status == 200


def test_cert_and_key_env_vars_turn_on_tls(pki: Pki, env: pytest.MonkeyPatch) -> None:
    env.setenv("PAYOFF_METRICS_PORT", "0")
    env.setenv("PAYOFF_METRICS_CERT_FILE", str(pki.cert))
    env.setenv("PAYOFF_METRICS_KEY_FILE", str(pki.key))
    server = serve_from_env()
    assert server is not None
    assert server.url.startswith("https://")
    assert fetch(server.url, cafile=pki.cert).status == 200


def test_web_config_may_be_json_when_pyyaml_is_missing(tmp_path: Path, pki: Pki, users: dict[str, str],
                                                       registry: CollectorRegistry, running: list[MetricsServer],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)
    shutil.copy(pki.cert, tmp_path / "c.pem")
    shutil.copy(pki.key, tmp_path / "k.pem")
    config = tmp_path / "web.json"
    config.write_text(json.dumps({"tls_server_config": {"cert_file": "c.pem", "key_file": "k.pem"},
                                  "basic_auth_users": users}))
    server = serve_metrics(0, registry=registry, web_config=config)
    running.append(server)
    assert fetch(server.url, cafile=pki.cert, auth=(USER, PASSWORD)).status == 200
    yaml_only = write_web_config(tmp_path / "web.yml", pki, users)
    with pytest.raises(srv.MetricsConfigError, match=r"payoff\[metrics-web\]"):
        serve_metrics(0, registry=registry, web_config=yaml_only)


@pytest.mark.parametrize("problem", ["missing cert", "cert without key", "unsupported key", "not a mapping",
                                     "malformed hash", "bad yaml"])
def test_a_broken_tls_or_auth_config_never_falls_back_to_open_http(problem: str, tmp_path: Path, pki: Pki,
                                                                   users: dict[str, str],
                                                                   env: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    env.setenv("PAYOFF_METRICS_PORT", "0")
    config = tmp_path / "web.yml"
    if problem == "missing cert":
        config.write_text("tls_server_config:\n  cert_file: nowhere.pem\n  key_file: nowhere.key\n")
    elif problem == "cert without key":
        config.write_text(f"tls_server_config:\n  cert_file: {pki.cert}\n")
    elif problem == "unsupported key":
        config.write_text(f"tls_server_config:\n  cert_file: {pki.cert}\n  key_file: {pki.key}\n"
                          "  client_auth_type: RequireAndVerifyClientCert\n")
    elif problem == "not a mapping":
        config.write_text("- just\n- a list\n")
    elif problem == "malformed hash":
        config.write_text(f"basic_auth_users:\n  {USER}: {PASSWORD}\n")
    else:
        config.write_text("tls_server_config: [unclosed\n")
    env.setenv("PAYOFF_METRICS_WEB_CONFIG", str(config))
    with caplog.at_level(logging.WARNING, logger="payoff"):
        assert serve_from_env() is None
    messages = payoff_warnings(caplog)
    assert len(messages) == 1, messages
    assert "PAYOFF_METRICS_WEB_CONFIG" in messages[0]
    assert "not serving /metrics" in messages[0]


def test_cert_env_var_without_key_is_refused(pki: Pki, env: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    env.setenv("PAYOFF_METRICS_PORT", "0")
    env.setenv("PAYOFF_METRICS_CERT_FILE", str(pki.cert))
    with caplog.at_level(logging.WARNING, logger="payoff"):
        assert serve_from_env() is None
    assert any("PAYOFF_METRICS_KEY_FILE" in m for m in payoff_warnings(caplog))


def test_a_missing_bcrypt_names_the_extra(users: dict[str, str], registry: CollectorRegistry,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bcrypt", None)
    with pytest.raises(srv.MetricsConfigError, match=r"pip install 'payoff\[metrics-web\]'"):
        serve_metrics(0, registry=registry, basic_auth_users=users)


# ---------------------------------------------------------------- port parsing


ARABIC_INDIC_3, FULLWIDTH_3, DEVANAGARI_9464 = "\u0663", "\uff13", "\u096f\u096a\u096c\u096a"  # int() takes all three


BAD_PORTS = [ARABIC_INDIC_3, FULLWIDTH_3, DEVANAGARI_9464, "9_464", " 9464", "9464 ", "+80", "-1", "70000", "000080",
             "0x10", "1e3", "port"]
BAD_RANGES = ["9470-9464", "0-5", "9464-70000", "9464-", "9464-9_470", "a-b", "9464--9470"]


@pytest.mark.parametrize("raw", BAD_PORTS + BAD_RANGES)
def test_a_bad_port_env_value_is_logged_and_nothing_is_bound(raw: str, env: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    env.setenv("PAYOFF_METRICS_PORT", raw)
    with caplog.at_level(logging.WARNING, logger="payoff"):
        server = serve_from_env()
    assert server is None, f"{raw!r} was accepted as port {server.port if server else None}"
    messages = payoff_warnings(caplog)
    assert len(messages) == 1, messages
    assert "PAYOFF_METRICS_PORT" in messages[0] and "ASCII digits" in messages[0]
    said = "0-65535" if raw in BAD_PORTS else "is not a port range: use first-last"
    assert said in messages[0], messages[0]


def test_the_same_bad_env_is_warned_about_once(env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """serve_from_env runs on every map call; a bad value must not log (and retry a bind) each time."""
    env.setenv("PAYOFF_METRICS_PORT", ARABIC_INDIC_3)
    with caplog.at_level(logging.WARNING, logger="payoff"):
        for _ in range(3):
            assert serve_from_env() is None
    assert len(payoff_warnings(caplog)) == 1


@given(st.text(max_size=8))
def test_parse_port_accepts_exactly_ascii_decimal_0_to_65535(raw: str) -> None:
    """At most five ASCII digits (leading zeros allowed), value 0-65535; anything else is a ValueError."""
    valid = 1 <= len(raw) <= 5 and all(c in "0123456789" for c in raw) and int(raw) <= 65535
    if valid:
        assert srv.parse_port(raw) == int(raw)
    else:
        with pytest.raises(ValueError, match="ASCII digits"):
            srv.parse_port(raw)


def test_serve_metrics_still_rejects_non_int_ports() -> None:
    with pytest.raises(ValueError, match="port"):
        serve_metrics("9464")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="port"):
        serve_metrics(True)


# ---------------------------------------------------------------- the non-loopback warning


@pytest.mark.parametrize(("addr", "exposed"), [
    ("0.0.0.0", True), ("::", True), ("", True), ("192.168.1.10", True), ("10.0.0.7", True), ("2001:db8::1", True),
    ("127.0.0.1", False), ("127.3.2.1", False), ("::1", False), ("localhost", False), ("::ffff:127.0.0.1", False),
])
def test_which_addresses_count_as_exposed(addr: str, exposed: bool) -> None:
    message = srv.exposure_warning(addr, tls=False, auth=False)
    assert (message is not None) == exposed, (addr, message)
    if message is not None:
        assert "TLS" in message
        assert "basic auth" in message
        assert "PAYOFF_METRICS_WEB_CONFIG" in message


def test_exposure_warning_names_what_is_missing() -> None:
    assert srv.exposure_warning("0.0.0.0", tls=True, auth=True) is None
    tls_only = srv.exposure_warning("0.0.0.0", tls=True, auth=False)
    auth_only = srv.exposure_warning("0.0.0.0", tls=False, auth=True)
    assert tls_only is not None
    assert "basic auth" in tls_only
    assert auth_only is not None
    assert "clear text" in auth_only


def _refuse_to_bind(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stub the bind so the wiring is tested without listening on every interface."""
    asked: list[str] = []

    def listen(addr: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(addr)
        raise OSError("test: not binding beyond 127.0.0.1")

    monkeypatch.setattr(srv, "_listen", listen)
    return asked


def test_serve_metrics_warns_before_binding_every_interface(registry: CollectorRegistry,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _refuse_to_bind(monkeypatch)
    with pytest.warns(srv.MetricsExposureWarning, match=r"0\.0\.0\.0"), pytest.raises(OSError, match="test:"):
        serve_metrics(0, addr="0.0.0.0", registry=registry)
    assert asked == ["0.0.0.0"]


def test_payoff_metrics_addr_all_interfaces_is_not_silent(env: pytest.MonkeyPatch) -> None:
    asked = _refuse_to_bind(env)
    env.setenv("PAYOFF_METRICS_PORT", "0")
    env.setenv("PAYOFF_METRICS_ADDR", "0.0.0.0")
    with pytest.warns(srv.MetricsExposureWarning, match="PAYOFF_METRICS_WEB_CONFIG") as caught:
        assert serve_from_env() is None
    assert asked == ["0.0.0.0"]
    assert [w.filename for w in caught] == [__file__], "at the line that asked, not inside payoff's server"
    assert "about to serve" in str(caught[0].message), "warned before the bind, which may still fail"


def test_exposure_warning_as_error_refuses_to_bind_and_does_not_raise(env: pytest.MonkeyPatch,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """With ``-W error`` the exposure is refused; serve_from_env still must not raise into a map call."""
    asked = _refuse_to_bind(env)
    env.setenv("PAYOFF_METRICS_PORT", "0")
    env.setenv("PAYOFF_METRICS_ADDR", "0.0.0.0")
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="payoff"):
        warnings.simplefilter("error", srv.MetricsExposureWarning)
        assert serve_from_env() is None
    assert asked == []
    assert any("MetricsExposureWarning" in m for m in payoff_warnings(caplog))


def test_loopback_binds_quietly(registry: CollectorRegistry, running: list[MetricsServer]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        running.append(serve_metrics(0, addr="127.0.0.1", registry=registry))
    assert running[0].url.startswith("http://127.0.0.1:")


def test_stop_closes_the_socket(registry: CollectorRegistry) -> None:
    server = serve_metrics(0, registry=registry)
    assert fetch(server.url).status == 200
    server.stop()
    with pytest.raises(urllib.error.URLError):
        fetch(server.url)


def _refused(port: int) -> bool:
    """Whether a connect to 127.0.0.1:``port`` is refused (nothing listens) rather than accepted or left hanging."""
    with socket.socket() as probe:
        probe.settimeout(10)
        try:
            probe.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
        return False


def test_stop_releases_the_port_while_forked_pool_workers_live(registry: CollectorRegistry) -> None:
    """Workers forked while the endpoint ran must not keep its listening socket once stop() closed it."""
    server = serve_metrics(0, registry=registry)
    port = server.port
    config = ParallelConfig(strategy="processes", max_workers=2, start_method="fork", tiny_workload_threshold=0.0)
    with ParallelExecutor(config, observers=[]) as ex:
        assert ex.map(tasks.square, range(64)) == [x * x for x in range(64)]
        assert ex.worker_pids(), "the pool's workers must be alive for this test"
        server.stop()
        assert _refused(port), "a worker process still holds the stopped endpoint's listening socket"
        again = serve_metrics(port, registry=registry)  # EADDRINUSE while a worker holds the old socket
        try:
            assert fetch(again.url).status == 200
        finally:
            again.stop()


def test_the_listening_socket_is_not_inherited_by_exec(registry: CollectorRegistry,
                                                       running: list[MetricsServer]) -> None:
    server = serve_metrics(0, registry=registry)
    running.append(server)
    assert server.server.socket.get_inheritable() is False


def _wait_child(pid: int, seconds: float = 30.0) -> int | None:
    """A forked child's exit code, or None when it hung (then it is killed)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


def _in_a_forked_child(report: Callable[[], str]) -> str:
    """``report()`` run in a child made by ``os.fork``, its text sent back through a pipe; the child never
    returns into pytest, and one that hangs or fails fails the test."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            os.write(write_end, report().encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        assert _wait_child(pid) == 0, "the child hung or failed"
        return fh.read().decode()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork")
def test_a_forked_child_neither_holds_nor_claims_the_parents_endpoint(env: pytest.MonkeyPatch) -> None:
    """In a child made by os.fork the parent's endpoint is closed; stop() there returns, and the child
    does not report the parent's server as its own."""
    env.setenv("PAYOFF_METRICS_PORT", "0")
    server = serve_from_env()
    assert server is not None

    def in_child() -> str:
        closed = server.server.socket.fileno() == -1
        server.stop()  # must not wait for a serving thread that only exists in the parent
        return f"{closed} {serve_from_env() is not None}"

    closed, claimed = _in_a_forked_child(in_child).split()
    assert closed == "True", "the child kept the parent's listening socket open"
    assert claimed == "False", "serve_from_env in the child returned the parent's server"
    assert fetch(server.url).status == 200, "the parent's endpoint must still serve"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork")
def test_a_forked_childs_metrics_count_its_own_calls_only() -> None:
    """A process's counters start at zero: a child made by os.fork reported the parent's calls before the fork
    as its own on its own /metrics, so that summing the two targets counted them twice."""
    from payoff.telemetry.metrics import PrometheusMetrics

    metrics = PrometheusMetrics(CollectorRegistry())

    def calls() -> float:
        text = generate_latest(metrics.registry).decode()
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "payoff_map_calls_total" and s.labels.get("workload") == "fork-counts")

    with ParallelExecutor(ParallelConfig(strategy="serial"), observers=[metrics]) as ex:
        for _ in range(3):
            ex.map(abs, range(5), workload="fork-counts")

        def in_child() -> str:
            at_start = calls()
            ex.map(abs, range(5), workload="fork-counts")
            return f"{at_start} {calls()}"

        at_start, after = (float(v) for v in _in_a_forked_child(in_child).split())
    assert (at_start, after) == (0.0, 1.0)
    assert calls() == 3, "the parent's own count changed"


@pytest.mark.parametrize("blank", ["", "   ", "\t"])
def test_a_blank_payoff_metrics_addr_means_the_default_loopback(blank: str, env: pytest.MonkeyPatch) -> None:
    """``PAYOFF_METRICS_ADDR=`` (as an env file leaves it) is unset, not "every interface"."""
    env.setenv("PAYOFF_METRICS_PORT", "0")
    env.setenv("PAYOFF_METRICS_ADDR", blank)
    with warnings.catch_warnings():
        warnings.simplefilter("error", srv.MetricsExposureWarning)  # so a failing run never listens beyond loopback
        server = serve_from_env()
    assert server is not None
    assert server.server.server_address[0] == "127.0.0.1"
    assert server.url.startswith("http://127.0.0.1:")
    assert fetch(server.url).status == 200


def test_a_blank_port_is_unset_and_blank_tls_files_never_serve_open_http(pki: Pki, env: pytest.MonkeyPatch,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    env.setenv("PAYOFF_METRICS_PORT", "  ")
    with caplog.at_level(logging.WARNING, logger="payoff"):
        assert serve_from_env() is None
    assert payoff_warnings(caplog) == []
    env.setenv("PAYOFF_METRICS_PORT", "0")
    env.setenv("PAYOFF_METRICS_CERT_FILE", str(pki.cert))
    env.setenv("PAYOFF_METRICS_KEY_FILE", " ")
    with caplog.at_level(logging.WARNING, logger="payoff"):
        assert serve_from_env() is None, "a blank key next to a certificate must not fall back to plain HTTP"
    assert any("PAYOFF_METRICS_KEY_FILE" in m for m in payoff_warnings(caplog))


def test_url_of_an_all_interfaces_bind_names_a_real_host() -> None:
    """``serve_metrics(addr="")`` binds every interface; its url must not read ``http://:PORT``."""

    class Bound:
        server_port = 9464
        server_address = ("0.0.0.0", 9464)

    url = MetricsServer(Bound(), None, "").url  # type: ignore[arg-type]
    assert url == "http://0.0.0.0:9464/metrics"


# ---------------------------------------------------------------- a real Prometheus over TLS with basic auth


def _scrape_job(name: str, port: int, pki: Pki, password: str) -> str:
    return (f"  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {pki.cert}\n"
            f"    basic_auth:\n      username: {USER}\n      password: {password}\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{port}']\n")


def test_a_real_prometheus_scrapes_over_tls_with_basic_auth(tmp_path: Path, pki: Pki, users: dict[str, str],
                                                            registry: CollectorRegistry,
                                                            running: list[MetricsServer]) -> None:
    server = serve_metrics(0, registry=registry, certfile=pki.cert, keyfile=pki.key, basic_auth_users=users)
    running.append(server)
    config = ("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n"
              + _scrape_job("right", server.port, pki, PASSWORD) + _scrape_job("wrong", server.port, pki, "guess"))
    with running_prometheus(tmp_path, config) as api:
        wait_until(lambda: bool(query(api, 'payoff_probe_total{job="right"}')), "a scrape over TLS with basic auth")
        assert float(query(api, 'payoff_probe_total{job="right"}')[0]["value"][1]) == 3.0
        wait_until(lambda: "401" in targets(api)["wrong"]["lastError"], "the wrong password to be refused")
        assert targets(api)["wrong"]["health"] == "down"
        assert not query(api, 'payoff_probe_total{job="wrong"}')


def test_a_port_this_process_already_serves_is_named_as_such() -> None:
    """A re-run notebook cell: the error names the port and that this very process holds it."""
    first = serve_metrics(0, registry=CollectorRegistry())
    try:
        with pytest.raises(OSError, match=rf"127\.0\.0\.1:{first.port}: the port is in use by this process's own"):
            serve_metrics(first.port, registry=CollectorRegistry())
    finally:
        first.stop()


def test_a_rerun_cell_asking_for_the_same_endpoint_gets_the_running_one() -> None:
    """Re-running ``srv = serve_metrics(9464)`` raised, skipping the rest of the cell, and the first handle
    was then the only way to stop it. The same port, address, registry and security give the endpoint
    this process already serves; anything else asked of that port is still refused, naming it."""
    registry = CollectorRegistry()
    first = serve_metrics(0, registry=registry)
    try:
        again = serve_metrics(first.port, registry=registry)
        assert again is first
        with urllib.request.urlopen(first.url, timeout=5) as answer:
            assert answer.status == 200
        with pytest.raises(OSError, match=r"own /metrics endpoint \(serve_metrics or PAYOFF_METRICS_PORT\) "
                                          r"with other settings"):
            serve_metrics(first.port, registry=CollectorRegistry())
    finally:
        first.stop()
    replaced = serve_metrics(first.port, registry=registry)  # stopped: the port is free to serve anew
    try:
        assert replaced is not first
    finally:
        replaced.stop()


def test_a_port_another_process_holds_is_named() -> None:
    with socket.socket() as other:  # stands for another program's listener
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(OSError, match=rf"127\.0\.0\.1:{port}: the port is in use; pass port=0") as info:
            serve_metrics(port, registry=CollectorRegistry())
    assert "this process" not in str(info.value)


def test_a_basic_auth_user_name_with_a_colon_is_refused() -> None:
    """Basic auth splits user and password at the first ':': such a user could never log in."""
    hashed = "$2b$12$" + "a" * 53
    with pytest.raises(srv.MetricsConfigError, match="'ops:team' contains ':'"):
        serve_metrics(0, registry=CollectorRegistry(), basic_auth_users={"ops:team": hashed})


def test_port_0_from_the_environment_can_be_found() -> None:
    """PAYOFF_METRICS_PORT=0 picks a free port; the endpoint the environment started says which."""
    code = ("import json, urllib.request, payoff, payoff.telemetry as t\n"
            "payoff.map(abs, [-1, 2])\n"
            "port = t.serve_from_env().port\n"
            "body = urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=10).read().decode()\n"
            "print(port, 'payoff_map_calls_total' in body)\n")
    env = {**os.environ, "PAYOFF_METRICS_PORT": "0"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    port, found = done.stdout.split()
    assert int(port) > 0 and found == "True"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork")
def test_a_forked_child_of_a_single_port_endpoint_says_its_metrics_go_unserved(
        env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A pre-fork server whose master mapped before the fork (gunicorn's ``preload_app``) with one port: the master
    served it and every worker's calls went unserved, silently (pre-fork trial). The child's first map now logs
    once why, and what to set instead; a range of ports stays quiet (each process serves one of its own)."""
    env.setenv("PAYOFF_METRICS_PORT", "0")
    server = serve_from_env()
    assert server is not None

    def in_child() -> str:
        seen: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
        logging.getLogger("payoff").addHandler(handler)
        logging.getLogger("payoff").setLevel(logging.WARNING)
        with ParallelExecutor(ParallelConfig(strategy="serial")) as ex:
            ex.map(abs, range(3))
            ex.map(abs, range(3))
        return json.dumps(seen)

    said = [m for m in json.loads(_in_a_forked_child(in_child)) if "/metrics" in m]
    assert len(said) == 1, said
    assert str(os.getpid()) in said[0] and str(server.port) in said[0], said[0]
    assert "not served" in said[0] and "PAYOFF_METRICS_PORT" in said[0] and "range" in said[0], said[0]
    assert fetch(server.url).status == 200, "the parent's endpoint must still serve"
