"""Real servers for the integration tests, on loopback: PostgreSQL, an S3-compatible object store (moto
in server mode, from PyPI), an MLflow tracking server; and the browser that looks at pages.

Each is a context manager that starts the server on a free port, waits until it answers, and
stops it on exit. PostgreSQL is Debian's package (`.ci/run` installs it); where it is missing
the tests that need it are skipped, unless GENLAB_REQUIRE_SERVICES=1 (set by `.ci/run`) turns
the skip into a failure, so that CI cannot pass by skipping.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update"]  # no network beyond loopback


@contextlib.contextmanager
def chromium():
    """Headless Chromium (Debian's package) driven by Playwright; the test is skipped where either is missing."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        unavailable("Debian's chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def unavailable(reason: str) -> None:
    """Skip the test, or fail it where CI requires every service."""
    if os.environ.get("GENLAB_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (GENLAB_REQUIRE_SERVICES=1: CI must run this test)")
    pytest.skip(reason)


def _wait_until(ready, what: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited {process.returncode}:\n{log.read_text()[-4000:]}")
        if ready():
            return
        time.sleep(0.25)
    raise RuntimeError(f"{what} did not answer within {timeout:.0f} s:\n{log.read_text()[-4000:]}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


POSTGRES_TOOLS = ("initdb", "postgres", "pg_isready", "createdb")


def postgres_binaries() -> Path | None:
    """Debian's PostgreSQL folder (the newest version), or the folder of an `initdb` on PATH."""
    found = shutil.which("initdb")
    candidates = [Path(path) for path in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    candidates += [Path(found).parent] if found else []
    return next((folder for folder in candidates if all((folder / tool).exists() for tool in POSTGRES_TOOLS)), None)


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster; yields a SQLAlchemy URI of an empty `mlflow` database."""
    binaries = postgres_binaries()
    if binaries is None:
        unavailable("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    # its own folder under /tmp: pytest's folders are private to root, and PostgreSQL refuses to run as root
    folder = Path(tempfile.mkdtemp(prefix="genlab-postgres-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    data, log = folder / "data", folder / "server.log"
    port = free_port()
    try:
        subprocess.run([*prefix, str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                        "--no-sync"], check=True, capture_output=True)
        server = subprocess.Popen([*prefix, str(binaries / "postgres"), "-D", str(data), "-p", str(port),
                                   "-c", "listen_addresses=127.0.0.1", "-k", str(folder), "-F"],
                                  stdout=log.open("w"), stderr=subprocess.STDOUT)
        try:
            def ready() -> bool:
                return subprocess.run([str(binaries / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                                      capture_output=True).returncode == 0

            _wait_until(ready, "postgres", server, log, timeout=60)
            subprocess.run([str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                            "mlflow"], check=True, capture_output=True)
            yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
        finally:
            _stop(server)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "genlab-test", "AWS_SECRET_ACCESS_KEY": "genlab-test",
                  "AWS_DEFAULT_REGION": "us-east-1"}


@contextlib.contextmanager
def s3_server(bucket: str, log: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """An S3-compatible server on a free loopback port with an empty `bucket`; yields its endpoint and the
    environment an S3 client needs (credentials, and the endpoint for MLflow's artifact store)."""
    try:
        import boto3
        import moto.server  # noqa: F401
    except ImportError:
        unavailable("moto[server] is not installed (pip install -e '.[test]')")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"

    try:
        _wait_until(lambda: _answers(f"{endpoint}/moto-api/"), "moto server", server, log, timeout=60)
        boto3.client("s3", endpoint_url=endpoint, **{key.lower(): value for key, value in S3_CREDENTIALS.items()
                                                     if key != "AWS_DEFAULT_REGION"},
                     region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"]).create_bucket(Bucket=bucket)
        yield endpoint, S3_CREDENTIALS | {"MLFLOW_S3_ENDPOINT_URL": endpoint}
    finally:
        _stop(server)


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: Path | str, log: Path, env: dict[str, str] | None = None
                  ) -> Iterator[str]:
    """`mlflow server` on a free loopback port against `backend_uri`, its artifacts in `artifacts` (a folder or
    a URI such as s3://bucket/prefix, with `env` for its client); yields its http:// address."""
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    destination = artifacts.as_uri() if isinstance(artifacts, Path) else artifacts
    command = [str(mlflow), "server", "--backend-store-uri", backend_uri, "--artifacts-destination",
               destination, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")} | (env or {})
    server = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=environment,
                              start_new_session=True)
    address = f"http://127.0.0.1:{port}"

    try:
        _wait_until(lambda: _answers(f"{address}/health"), "mlflow server", server, log, timeout=120)
        yield address
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, 15)  # the server's workers too
        _stop(server)
