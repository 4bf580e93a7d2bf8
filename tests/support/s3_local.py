"""A real S3-compatible server for the object-storage tests: moto's, on 127.0.0.1, in its own process.

Started once per session (``s3_server`` in conftest) and stopped by its recorded process id. Each
test gets its own bucket (``s3_bucket``) and its own local-copy cache, so tests never see each
other's objects.
"""

from __future__ import annotations

import uuid

import pytest

from benchmarks import s3_server
from benchmarks.s3_server import CREDENTIALS, stop, upload_corpus  # noqa: F401  (the tests' helpers)


def start(log_path):
    """The server process and its endpoint URL; skips the test when moto is missing or does not start."""
    try:
        return s3_server.start(log_path)
    except s3_server.ServerError as exc:
        pytest.skip(str(exc))


def new_bucket(endpoint: str) -> str:
    name = f"espnet3-{uuid.uuid4().hex[:12]}"
    s3_server.client(endpoint).create_bucket(Bucket=name)
    return name


def objects(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    """Every key in ``bucket`` under ``prefix``, read with boto3 (not through espnet3's own layer)."""
    client = s3_server.client(endpoint)
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return keys


def delete_object(endpoint: str, bucket: str, key: str) -> None:
    s3_server.client(endpoint).delete_object(Bucket=bucket, Key=key)


def environment(endpoint: str, cache_dir) -> dict[str, str]:
    return {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "ESPNET3_STORAGE_CACHE": str(cache_dir)}
