"""Where a run's files live: a local path or an object-store URI (``s3://``, ``gs://``, ``abfs://``).

Every writer and reader of espnet3 goes through this module, so that a run directory in a bucket
needs no change in the stages. The model is the one Ray Train uses for checkpoints: a process
works on a **local copy** and the bucket is the truth.

- A URI ``s3://bucket/exp/run`` has one local copy on every node, at the same path
  (:func:`local_copy`: ``$ESPNET3_STORAGE_CACHE/s3/bucket/exp/run``, default under the system's
  temporary directory). The launcher replaces the URI keys of a config by their local copies, so
  ESPnet2 code that opens ``token_list`` or a ``stats_file`` by name keeps working.
- :func:`atomic_write`/:func:`atomic_save` write a file atomically (temp file + rename) and, when
  the file is a local copy, upload it (one PUT: readers of the bucket see the old object or the new
  one, never a part). :func:`pull` and :func:`pull_tree` fetch what another node wrote.
- :func:`listdir`, :func:`read_text`, :func:`exists`, :func:`delete` act on a location, which is a
  local path or a URI (a local copy's location is its URI: :func:`home`).

The filesystem layer is ``pyarrow.fs``, as in Ray Train; endpoint, region and credentials come
from the standard environment (``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``, ...).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CACHE_ENV = "ESPNET3_STORAGE_CACHE"
# The launcher's storage settings, handed to every Ray worker, actor and task of the run (a node
# started before them, or by someone else, lacks them). Credentials set as variables travel too;
# without them each node uses its own (instance role, ~/.aws), as Ray Train's storage_path does.
STORAGE_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE",
               "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_EC2_METADATA_DISABLED",
               "GOOGLE_APPLICATION_CREDENTIALS", "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY",
               CACHE_ENV)
# Seconds: a dead endpoint fails a request within this, it does not hang a stage.
CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 60.0
_URI = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def is_uri(value: Any) -> bool:
    """``scheme://...`` other than ``file://``: a location in an object store."""
    match = _URI.match(str(value)) if isinstance(value, (str, os.PathLike)) else None
    return bool(match) and match.group(1).lower() != "file"


# -- locations: a local path or a URI ---------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _s3(env: tuple) -> Any:
    import pyarrow.fs as pafs

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kwargs: dict[str, Any] = {}
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        # Explicit keys are part of the filesystem's pickle: Ray Train's checkpoint uploads in
        # the workers use exactly these.
        kwargs.update(access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                      session_token=os.environ.get("AWS_SESSION_TOKEN"))
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs.update(endpoint_override=parts.netloc, scheme=parts.scheme)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return pafs.S3FileSystem(
        region=region, connect_timeout=CONNECT_TIMEOUT_S, request_timeout=REQUEST_TIMEOUT_S,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=3), **kwargs,
    )


def filesystem(location: str | os.PathLike) -> tuple[Any, str]:
    """The ``pyarrow.fs`` filesystem of ``location`` and the path inside it (Ray Train's form)."""
    import pyarrow.fs as pafs

    if not is_uri(location):
        return pafs.LocalFileSystem(), os.path.abspath(location)
    uri = str(location)
    parts = urlsplit(uri)
    if parts.scheme.lower() in ("s3", "s3a"):
        return _s3(tuple(os.environ.get(k) for k in STORAGE_ENV)), f"{parts.netloc}{parts.path}".rstrip("/")
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path.rstrip("/")


def join(location: str | os.PathLike, *parts: str) -> str:
    base = str(location).rstrip("/")
    return "/".join([base, *parts]) if is_uri(base) else os.path.join(base, *parts)


def info(location: str | os.PathLike):
    """``pyarrow.fs.FileInfo`` of a location: type, size, ``mtime_ns``."""
    fs, path = filesystem(location)
    return fs.get_file_info(path)


def exists(location: str | os.PathLike) -> bool:
    import pyarrow.fs as pafs

    return info(location).type != pafs.FileType.NotFound


def is_file(location: str | os.PathLike) -> bool:
    import pyarrow.fs as pafs

    return info(location).type == pafs.FileType.File


def is_dir(location: str | os.PathLike) -> bool:
    import pyarrow.fs as pafs

    return info(location).type == pafs.FileType.Directory


def listdir(location: str | os.PathLike) -> list[str]:
    """Names of the entries directly under ``location`` (none when it does not exist)."""
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    return sorted(info.base_name for info in fs.get_file_info(pafs.FileSelector(path)))


def read_bytes(location: str | os.PathLike) -> bytes:
    fs, path = filesystem(location)
    with fs.open_input_stream(path) as f:
        return f.read()


def read_text(location: str | os.PathLike) -> str:
    return read_bytes(location).decode("utf-8")


def read_json_files(location: str | os.PathLike, prefix: str) -> list[Any]:
    """The values of the files ``<prefix>*.json`` directly under ``location``, in name order (none
    when it does not exist): records written one file each, as an object store has no append."""
    return [json.loads(read_text(join(location, name))) for name in listdir(location)
            if name.startswith(prefix) and name.endswith(".json")]


def delete(location: str | os.PathLike) -> None:
    """Remove a file, or a directory with everything in it."""
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif kind == pafs.FileType.File:
        fs.delete_file(path)


# -- local copies of URIs ---------------------------------------------------------------------


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "espnet3-storage")


def local_copy(uri: str) -> Path:
    """Where ``uri``'s local copy lives: the same path on every node, one per object."""
    parts = urlsplit(uri)
    return cache_root() / parts.scheme.lower() / parts.netloc / parts.path.strip("/")


def uri_of(path: str | os.PathLike) -> str | None:
    """The URI whose local copy ``path`` is, or None for a plain local file."""
    path = Path(os.path.abspath(path))
    root = cache_root()
    if not path.is_relative_to(root):
        return None
    scheme, netloc, *rest = path.relative_to(root).parts + ("",) * 2
    return f"{scheme}://{netloc}/{'/'.join(p for p in rest if p)}".rstrip("/")


def home(path: str | os.PathLike) -> str:
    """Where ``path`` really lives: its URI for a local copy, else the path itself."""
    return uri_of(path) or str(path)


def localize(value: str) -> str:
    """The local copy of a URI (a plain path is returned as it is)."""
    return str(local_copy(value)) if is_uri(value) else value


def push(path: str | os.PathLike) -> None:
    """Upload a local copy to its URI (nothing to do for a plain local file)."""
    uri = uri_of(path)
    if uri is not None:
        fs, target = filesystem(uri)
        with open(path, "rb") as src, fs.open_output_stream(target) as dst:
            while chunk := src.read(8 << 20):
                dst.write(chunk)


def push_tree(directory: str | os.PathLike) -> None:
    """Upload every file under a local copy's directory."""
    if uri_of(directory) is None or not Path(directory).is_dir():
        return
    for path in sorted(Path(directory).rglob("*")):
        if path.is_file():
            push(path)


def pull(path: str | os.PathLike, refresh: bool = False) -> Path:
    """Make a local copy present (downloaded when missing, or always with ``refresh``); returns it.

    A plain local path, or a URI object that does not exist, is left alone.
    """
    path = Path(path)
    uri = uri_of(path)
    if uri is None or (path.exists() and not refresh) or not is_file(uri):
        return path
    atomic_write(path, read_bytes(uri), upload=False)
    return path


def pull_tree(directory: str | os.PathLike, skip: Callable[[str], bool] = lambda name: False,
              refresh: bool = False) -> None:
    """Download the files under a local copy's directory that are missing here.

    ``skip(relative_path)`` leaves out what this process does not need (e.g. checkpoints).
    """
    import pyarrow.fs as pafs

    uri = uri_of(directory)
    if uri is None:
        return
    fs, root = filesystem(uri)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        relative = info.path[len(root):].lstrip("/")
        if info.type == pafs.FileType.File and not skip(relative):
            pull(Path(directory, relative), refresh=refresh)


@contextlib.contextmanager
def uploading(paths: list[str | os.PathLike], every_s: float = 60.0):
    """Upload files or directories that are local copies every ``every_s`` seconds and at the end
    (also when the block raises): logs reach the bucket while a run is alive and after it died."""
    paths = [p for p in paths if uri_of(p) is not None]
    if not paths:
        yield
        return
    stop = threading.Event()

    def upload() -> None:
        for path in paths:
            try:
                push_tree(path) if Path(path).is_dir() else push(path) if Path(path).is_file() else None
            except OSError as exc:  # a flaky endpoint must not end training; the next round retries
                print(f"[espnet3] could not upload {path}: {exc}", file=sys.stderr, flush=True)

    def loop() -> None:
        while not stop.wait(every_s):
            upload()

    thread = threading.Thread(target=loop, name="espnet3-log-upload", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        upload()


_CREDENTIALS_FIX = "set the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws) for this bucket"


def check_reachable(uri: str) -> str | None:
    """Why ``uri``'s bucket cannot be written, in words with the fix; None when it can.

    One write and one delete of a marker object: a listing alone passes with read-only keys.
    """
    def write_marker(fs, path: str) -> None:
        marker = f"{path}/.espnet3-write-check-{os.getpid()}"
        with fs.open_output_stream(marker) as f:
            f.write(b"")
        fs.delete_file(marker)

    return _check(uri, write_marker)


def check_readable(uri: str) -> str | None:
    """Why the file or directory ``uri`` (data, which may be in a read-only bucket) cannot be
    read, in words with the fix; None when it can."""
    import pyarrow.fs as pafs

    def look(fs, path: str) -> str | None:
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            return f"{uri} does not exist: upload the data there, or fix the URI"
        return None

    return _check(uri, look)


def _check(uri: str, probe: Callable[[Any, str], str | None]) -> str | None:
    import pyarrow.fs as pafs

    parts = urlsplit(uri)
    if parts.scheme.lower() in ("s3", "s3a") and not _s3_credentials_anywhere():
        return f"no credentials for {uri} (none in the environment, ~/.aws, or the instance metadata): {_CREDENTIALS_FIX}"
    try:
        fs, path = filesystem(uri)
        bucket = path.split("/", 1)[0]
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            return f"the bucket `{parts.scheme}://{bucket}` does not exist: create it, or fix the URI"
        return probe(fs, path)
    except (OSError, ValueError) as exc:
        text = " ".join(str(exc).split())
        if re.search(r"ACCESS_?DENIED|AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|credential|403|Forbidden", text, re.I):
            fix = _CREDENTIALS_FIX
        elif re.search(r"connect|resolve|timed? ?out|refused|network|curl", text, re.I):
            fix = ("check the endpoint (AWS_ENDPOINT_URL for an S3-compatible server, e.g. "
                   "http://127.0.0.1:9000) and that it is reachable from here")
        else:
            fix = "check the URI, the endpoint (AWS_ENDPOINT_URL) and the credentials"
        return f"cannot reach {uri} ({text[:300]}): {fix}"


def _s3_credentials_anywhere() -> bool:
    """Whether the AWS credential chain has a source at all; without one every request is
    unsigned and fails far from here (or, against some servers, half-succeeds)."""
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_PROFILE") or env.get("AWS_WEB_IDENTITY_TOKEN_FILE") or any(
            k.startswith("AWS_CONTAINER_CREDENTIALS") for k in env):
        return True
    files = [env.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials", env.get("AWS_CONFIG_FILE") or "~/.aws/config"]
    if any(Path(f).expanduser().is_file() for f in files):
        return True
    return env.get("AWS_EC2_METADATA_DISABLED", "").lower() != "true"  # an instance role may answer


def worker_env() -> dict[str, str]:
    """The launcher's storage settings, for :func:`use_env` in a Ray worker."""
    return {k: os.environ[k] for k in STORAGE_ENV if os.environ.get(k)}


def use_env(env: dict[str, str] | None) -> None:
    """In a Ray worker, actor or task: reach the buckets as the launcher does (:func:`worker_env`)."""
    os.environ.update(env or {})


# -- atomic writes (local, and uploaded when the file is a local copy of a URI) -------------


def _temp_beside(path: Path) -> Path:
    # Same directory, so the rename is atomic (one filesystem); pid-unique, so concurrent
    # writers never share a temp file.
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write(path: str | os.PathLike, data: bytes | str, upload: bool = True) -> Path:
    """Replace ``path`` with ``data``: readers see the old file or the new one, never a part."""
    return atomic_save(path, lambda tmp: tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data),
                       upload=upload)


def atomic_write_json(path: str | os.PathLike, value: Any) -> Path:
    return atomic_write(path, json.dumps(value, indent=2) + "\n")


def atomic_save(path: str | os.PathLike, save: Callable[[Path], None], upload: bool = True) -> Path:
    """Let ``save(tmp_path)`` write a file (torch.save, np.savez, ...), then move it into place
    (and upload it when ``path`` is a local copy of a URI)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(path)
    try:
        save(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if upload:
        push(path)
    return path
