"""An S3 API server for tests (moto's server mode), on loopback or inside a network namespace of the test cluster.

    with s3_server() as s3:                       # 127.0.0.1, a free port
        os.environ.update(s3.env)                 # AWS_ENDPOINT_URL and dummy credentials: pyarrow and boto3 use it
        s3.create_bucket("dsr-test")

The server is one process started by this module and ended by its pid (SIGTERM, then SIGKILL). Nothing leaves the
machine: the endpoint is 127.0.0.1 or an address inside the namespaces the tests create.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class S3Server:
    """A running S3 API server: its endpoint and the environment that points pyarrow and boto3 at it."""

    endpoint: str  # http://host:port
    env: Mapping[str, str]

    def create_bucket(self, name: str) -> None:
        import boto3

        self.client().create_bucket(Bucket=name)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.env["AWS_DEFAULT_REGION"],
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"])

    def upload_folder(self, folder: Path, bucket: str, prefix: str) -> int:
        """Upload every file under `folder` to s3://bucket/prefix/...; returns how many."""
        client, count = self.client(), 0
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            client.upload_file(str(path), bucket, f"{prefix.strip('/')}/{path.relative_to(folder).as_posix()}")
            count += 1
        return count

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        return [item["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
                for item in page.get("Contents", [])]


def s3_env(endpoint: str) -> dict[str, str]:
    """Variables that send pyarrow, boto3 and Ray Tune's storage to `endpoint` with throwaway credentials."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata lookups for credentials
    }


@contextlib.contextmanager
def s3_server(host: str = "127.0.0.1", port: int | None = None, namespace: str | None = None,
              start_timeout: float = 60.0) -> Iterator[S3Server]:
    """Start moto's S3 server on host:port (inside network namespace `namespace` when given) and end it on exit."""
    port = port or free_port()
    prefix: Sequence[str] = ("ip", "netns", "exec", namespace) if namespace else ()
    argv = [*prefix, sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)]
    # moto logs every request: to a file, never to a pipe nobody reads (a full pipe would stall the server)
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    endpoint = f"http://{host}:{port}"
    try:
        _wait_until_up(proc, log, host, port, namespace, start_timeout)
        yield S3Server(endpoint=endpoint, env=s3_env(endpoint))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@contextlib.contextmanager
def s3_server_in_environment() -> Iterator[S3Server]:
    """An S3 server on loopback whose endpoint and credentials are in os.environ while it runs (then restored),
    so that code reading pyarrow's usual settings reaches it."""
    with s3_server() as server:
        saved = {key: os.environ.get(key) for key in server.env}
        os.environ.update(server.env)
        try:
            yield server
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _wait_until_up(proc: subprocess.Popen, log, host: str, port: int, namespace: str | None,
                   timeout: float) -> None:
    probe = f"import socket; socket.create_connection(({host!r}, {port}), timeout=1).close()"
    argv = [*(("ip", "netns", "exec", namespace) if namespace else ()), sys.executable, "-c", probe]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"the S3 server exited at start: {log.read().decode()[-1000:]}")
        if namespace is None:
            try:
                socket.create_connection((host, port), timeout=1).close()
                return
            except OSError:
                pass
        elif subprocess.run(argv, capture_output=True, check=False).returncode == 0:
            return
        time.sleep(0.3)
    raise RuntimeError(f"the S3 server did not open {host}:{port} within {timeout:.0f} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
