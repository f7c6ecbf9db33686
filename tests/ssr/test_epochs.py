"""The one epoch driver: checkpoint cadence, a report only after its epoch's checkpoint, resume."""

from __future__ import annotations

from pathlib import Path

import torch

from ssr.train.checkpoint import load_checkpoint
from ssr.train.epochs import EpochDriver


def _epoch(e: int) -> dict[str, object]:
    return {"epoch": float(e + 1), "loss": float(torch.rand(()).item()), "tag": "x"}


def test_checkpoints_on_the_cadence_and_at_the_end_before_each_report(tmp_path: Path) -> None:
    ckpt = tmp_path / "last.pt"
    seen: list[tuple[int, int | None, dict[str, float]]] = []

    def reporter(metrics: dict[str, float], epoch: int) -> None:
        saved = load_checkpoint(ckpt)["epoch"] if ckpt.is_file() else None
        seen.append((epoch, saved, metrics))

    driver = EpochDriver(5, 2, checkpoint=ckpt, reporter=reporter,
                         history_file=tmp_path / "history.jsonl")  # fmt: skip
    history = driver.run(_epoch, lambda: {"model": {"w": torch.ones(1)}})
    assert [h["epoch"] for h in history] == [1.0, 2.0, 3.0, 4.0, 5.0]
    # epochs 2, 4 (cadence) and 5 (the last) are saved before they are reported
    assert [(e, s) for e, s, _ in seen] == [(1, None), (2, 2), (3, 2), (4, 4), (5, 5)]
    assert all(set(m) == {"epoch", "loss"} for _, _, m in seen)  # the row's floats only
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) == 5


def test_resume_continues_after_the_checkpoint_with_its_history_and_rng(tmp_path: Path) -> None:
    ckpt = tmp_path / "last.pt"
    torch.manual_seed(0)
    whole = EpochDriver(4, 1).run(_epoch, dict)
    torch.manual_seed(0)
    EpochDriver(4, 1, checkpoint=ckpt).run(_epoch, lambda: {"part": 7}, stop=lambda: True)
    torch.manual_seed(123)  # a new process: the generator is wherever it is
    restored: list[int] = []
    again = EpochDriver(4, 1, checkpoint=ckpt)
    assert again.resume(lambda state: restored.append(state["part"]))
    assert (again.start, restored) == (1, [7])
    assert again.run(_epoch, dict) == whole  # the same rows, random draws included
    assert not EpochDriver(4, 1, checkpoint=tmp_path / "none.pt").resume(restored.append)
