"""A local S3-compatible server (moto's, on 127.0.0.1, in its own process) for the object-storage
benchmarks and tests: started by them, stopped by its recorded process id."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}


class ServerError(RuntimeError):
    """moto is missing or did not start; the message says why."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(log_path, timeout_s: float = 60) -> tuple[subprocess.Popen, str]:
    """The server process and its endpoint URL (``http://127.0.0.1:<port>``)."""
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        raise ServerError(f"moto[server] is not installed ({exc}): `make install` adds it") from None
    port = _free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"the moto S3 server exited with {proc.returncode} (log: {log_path})")
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2)
            return proc, endpoint
        except OSError:
            time.sleep(0.2)
    stop(proc)
    raise ServerError(f"the moto S3 server did not answer on {endpoint} within {timeout_s:.0f} s (log: {log_path})")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region_name=CREDENTIALS["AWS_REGION"])


def upload_corpus(endpoint: str, bucket: str, root, prefix: str) -> str:
    """Upload a Kaldi corpus (``root/<split>/wav.scp, text, wav/...``) as a dump directory is
    uploaded: every file as it is, with ``wav.scp`` naming the audio by URI. Returns its URI."""
    from pathlib import Path

    s3 = client(endpoint)
    root = Path(root)
    uri = f"s3://{bucket}/{prefix}"
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        body = path.read_bytes()
        if path.name == "wav.scp":
            body = body.decode().replace(f"{root}/", f"{uri}/").encode()
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(root)}", Body=body)
    return uri
