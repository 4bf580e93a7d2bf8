"""A real S3-compatible server for the object-storage tests: moto's, on 127.0.0.1, in its own process.

Started once per session (``s3_server`` in conftest) and stopped by its recorded process id. Each
test gets its own bucket (``s3_bucket``) and its own local-copy cache, so tests never see each
other's objects.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from net_utils import free_ports

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}


def start(log_path) -> tuple[subprocess.Popen, str]:
    """The server process and its endpoint URL; skips the test when moto is missing or does not start."""
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"moto[server] is not installed ({exc}): `make install` adds it")
    port = free_ports(1)[0]
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.skip(f"the moto S3 server exited with {proc.returncode} (log: {log_path})")
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2)
            return proc, endpoint
        except OSError:
            time.sleep(0.2)
    proc.kill()
    pytest.skip(f"the moto S3 server did not answer on {endpoint} within 60 s (log: {log_path})")


def new_bucket(endpoint: str) -> str:
    import boto3

    name = f"espnet3-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, **_boto_credentials()).create_bucket(Bucket=name)
    return name


def objects(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    """Every key in ``bucket`` under ``prefix``, read with boto3 (not through espnet3's own layer)."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return keys


def upload_corpus(endpoint: str, bucket: str, root, prefix: str) -> str:
    """Upload a Kaldi corpus (``root/<split>/wav.scp, text, wav/...``) as a dump directory is
    uploaded: every file as it is, with ``wav.scp`` naming the audio by URI. Returns its URI."""
    from pathlib import Path

    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
    root = Path(root)
    uri = f"s3://{bucket}/{prefix}"
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        body = path.read_bytes()
        if path.name == "wav.scp":
            body = body.decode().replace(f"{root}/", f"{uri}/").encode()
        client.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(root)}", Body=body)
    return uri


def delete_object(endpoint: str, bucket: str, key: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, **_boto_credentials()).delete_object(Bucket=bucket, Key=key)


def _boto_credentials() -> dict:
    return {"aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"], "region_name": CREDENTIALS["AWS_REGION"]}


def environment(endpoint: str, cache_dir) -> dict[str, str]:
    return {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "ESPNET3_STORAGE_CACHE": str(cache_dir)}


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
