"""A real S3 API for the tests: moto's server on 127.0.0.1, started and stopped by process group.

Yields the standard AWS variables that reach it (``AWS_ENDPOINT_URL``, keys, region), as a user
points the sweep at MinIO or a cloud bucket, and a boto3 client; the variables are also set in
the test process (pyarrow reads them) until the server stops.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sweep_helpers import BIN, kill_group, reap_group

#: The bucket every S3 test uses.
BUCKET = "ssr-test"


@contextlib.contextmanager
def moto_server(folder: Path, bucket: str = BUCKET) -> Iterator[dict]:
    """moto's S3 server with ``bucket``; ``{AWS_*: value, "client": boto3 client}``."""
    pytest.importorskip("moto")
    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = folder / "moto.log"
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
        client.create_bucket(Bucket=bucket)
        os.environ.update(env)
        yield {**env, "client": client}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        kill_group(proc, signal.SIGTERM, wait=10)
        reap_group(proc)


def keys(s3: dict, prefix: str, bucket: str = BUCKET) -> set[str]:
    """Every key of ``bucket`` under ``prefix``."""
    pages = s3["client"].get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def aws_env(s3: dict) -> dict[str, str]:
    """The AWS variables of a server from :func:`moto_server` (without its client)."""
    return {k: v for k, v in s3.items() if k.startswith("AWS_")}
