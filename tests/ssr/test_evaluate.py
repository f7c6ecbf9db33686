"""``python -m ssr evaluate``: scores of .pt and ONNX weights, and one-line refusals.

A tiny genotype with weights saved here (as a retrained trial saves ``best.pt``), evaluated on a
small CamVid folder at 48x64; on the real 480x360 sample when ``SSR_CAMVID_SAMPLE`` is set.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssr.cli import main
from ssr.data.camvid import CAMVID_CLASSES
from ssr.method.genotype import Genotype
from ssr.method.network import DerivedNet
from ssr.train.checkpoint import save_checkpoint

H, W = 48, 64  # 4:3, as CamVid


def tiny_genotype(c_out: int = 20) -> Genotype:
    layers = [
        dict(stage=0, dilation=1, pool=2, c_in=16, c_mid=12, c_out=16),
        dict(stage=1, dilation=2, pool=1, c_in=24, c_mid=16, c_out=c_out),
    ]
    reductions = [{"c_in": 8, "c_conv": 8}, {"c_in": 16, "c_conv": 8}]
    return Genotype.from_dict({"stem": 8, "reductions": reductions, "layers": layers})


def make_camvid(root: Path, splits: dict[str, int]) -> None:
    """Images whose colour follows the label (so a network can be right), labels 0-11."""
    rng = np.random.default_rng(0)
    for split, n in splits.items():
        for i in range(n):
            label = np.repeat(np.repeat(rng.integers(0, 12, (H // 8, W // 8)), 8, 0), 8, 1)
            image = (label[..., None] * [20, 7, 13] % 256).astype(np.uint8)
            for folder, array in ((split, image), (f"{split}annot", label.astype(np.uint8))):
                (root / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / folder / f"0001TP_{i:06d}.png")


@pytest.fixture(scope="module")
def trial(tmp_path_factory) -> dict[str, Path]:
    """A genotype file, its best.pt (as retraining writes it) and a CamVid folder."""
    out = tmp_path_factory.mktemp("trial")
    genotype = tiny_genotype()
    genotype.save(out / "genotype.json")
    torch.manual_seed(0)
    model = DerivedNet(genotype, 11).eval()
    save_checkpoint(out / "best.pt", model=model.state_dict(), epoch=3, miou=0.1,
                    genotype=genotype.to_json())  # fmt: skip
    data = out / "camvid"
    make_camvid(data, {"train": 2, "val": 3, "test": 4})
    return {"genotype": out / "genotype.json", "pt": out / "best.pt", "root": data}


@pytest.fixture(scope="module")
def onnx_trial(trial) -> dict[str, Path]:
    """``trial`` plus its network exported at 48x64 as a pipeline trial exports it (~30 s)."""
    from ssr.deploy.onnx_export import export_onnx

    model = DerivedNet(tiny_genotype(), 11).eval()
    model.load_state_dict(torch.load(trial["pt"], weights_only=True)["model"])
    path = trial["pt"].with_name("model.onnx")
    export_onnx(model, (1, 3, H, W), path, verify=False)
    return {**trial, "onnx": path}


def evaluate(capsys, trial, *args: str, weights: str = "pt") -> tuple[int, dict | str]:
    argv = ["evaluate", "--genotype", str(trial["genotype"]), "--weights", str(trial[weights]),
            "--data", "camvid", "--set", f"data.root={trial['root']}", *args]  # fmt: skip
    code = main(argv)
    out, err = capsys.readouterr()
    if code != 0:
        return code, err
    return code, json.loads(out) if "--json" in args else out


@pytest.mark.slow
def test_pt_and_onnx_agree(capsys, onnx_trial) -> None:
    trial = onnx_trial
    code, pt = evaluate(capsys, trial, "--split", "test", "--json")
    assert code == 0, pt
    code, ox = evaluate(capsys, trial, "--split", "test", "--json", weights="onnx")
    assert code == 0, ox
    assert pt["images"] == ox["images"] == 4 and pt["input_size"] == ox["input_size"] == "48x64"
    assert pt["label_size"] == "48x64" and (pt["format"], ox["format"]) == ("torch", "onnx")
    assert list(pt["per_class_iou"]) == list(CAMVID_CLASSES)
    for key in ("miou", "miou_lo", "miou_hi", "pixel_acc"):
        assert ox[key] == pytest.approx(pt[key], abs=2e-3), key
    assert 0 <= pt["miou_lo"] <= pt["miou"] <= pt["miou_hi"] <= 1
    assert pt["miou_hi"] > pt["miou_lo"]  # 4 different images: the interval has a width
    assert pt["level"] == 0.9 and pt["resamples"] == 1000


def test_scores_are_those_of_the_metrics(capsys, trial) -> None:
    """The command's numbers are ssr.train.metrics' on the same predictions, upsampled to the labels."""
    import torch.nn.functional as F

    from ssr.train.metrics import ConfusionMatrix

    code, row = evaluate(capsys, trial, "--split", "val", "--input", "24x32", "--json")
    assert code == 0, row
    assert row["input_size"] == "24x32" and row["label_size"] == "48x64" and row["images"] == 3
    model = DerivedNet(tiny_genotype(), 11).eval()
    model.load_state_dict(torch.load(trial["pt"], weights_only=True)["model"])
    conf = ConfusionMatrix(11)
    for name in sorted((trial["root"] / "val").iterdir()):
        image = Image.open(name).convert("RGB").resize((32, 24), Image.Resampling.BILINEAR)
        x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 255
        label = torch.from_numpy(np.array(Image.open(trial["root"] / "valannot" / name.name)))
        label = torch.where(label == 11, 255, label.long())[None]
        with torch.inference_mode():
            logits = F.interpolate(model(x), size=(H, W), mode="bilinear", align_corners=False)
        conf.update(logits.argmax(1), label)
    assert row["miou"] == pytest.approx(conf.miou(), abs=1e-9)
    assert row["pixel_acc"] == pytest.approx(conf.pixel_accuracy(), abs=1e-9)
    iou = conf.per_class_iou().tolist()
    for got, want in zip(row["per_class_iou"].values(), iou):
        assert (got is None and math.isnan(want)) or got == pytest.approx(want, abs=1e-9)


def test_text_output_names_every_class(capsys, trial) -> None:
    code, out = evaluate(capsys, trial, "--split", "test", "--level", "0.8", "--resamples", "50")
    assert code == 0, out
    assert "mIoU " in out and "80 % interval" in out and "pixel accuracy" in out
    assert all(name in out for name in CAMVID_CLASSES)
    code, row = evaluate(capsys, trial, "--split", "test", "--set", "data.val_size=2", "--json")
    assert code == 0 and row["images"] == 2  # capped only when asked


def _one_line(err: str) -> str:
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_bad_inputs_are_one_line(capsys, trial, tmp_path) -> None:
    code, err = evaluate(capsys, trial, "--split", "nope")
    assert code == 2 and "split must be train, val, test or trainval" in _one_line(err)
    trial2 = {**trial, "pt": tmp_path / "missing.pt"}
    code, err = evaluate(capsys, trial2)
    assert code == 2 and "missing.pt does not exist" in _one_line(err)
    other = tmp_path / "other.json"
    tiny_genotype(c_out=24).save(other)
    code, err = evaluate(capsys, {**trial, "genotype": other})
    assert code == 2 and "does not fit" in _one_line(err)
    # same tensor shapes, another genotype recorded in the checkpoint
    moved = tmp_path / "best.pt"
    state = torch.load(trial["pt"], weights_only=True)
    state["genotype"] = tiny_genotype().to_json().replace('"pool": 2', '"pool": 1')
    save_checkpoint(moved, **state)
    code, err = evaluate(capsys, {**trial, "pt": moved})
    assert code == 2 and "was trained for genotype" in _one_line(err)
    text = tmp_path / "w.txt"
    text.write_text("x")
    code, err = evaluate(capsys, {**trial, "pt": text})
    assert code == 2 and "expected a .pt/.pth" in _one_line(err)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    code, err = evaluate(capsys, {**trial, "onnx": junk}, weights="onnx")
    assert code == 2 and "is not an ONNX model" in _one_line(err)


@pytest.mark.slow
def test_onnx_bad_inputs_are_one_line(capsys, onnx_trial, tmp_path) -> None:
    other = tmp_path / "other.json"
    tiny_genotype(c_out=24).save(other)
    code, err = evaluate(capsys, {**onnx_trial, "genotype": other}, weights="onnx")
    assert code == 2 and "does not fit genotype" in _one_line(err)
    code, err = evaluate(capsys, onnx_trial, "--input", "24x32", weights="onnx")
    assert code == 2 and "exported for 48x64" in _one_line(err)


SAMPLE = os.environ.get("SSR_CAMVID_SAMPLE")


@pytest.mark.skipif(not SAMPLE, reason="SSR_CAMVID_SAMPLE (real 480x360 CamVid files) is not set")
@pytest.mark.parametrize("size", [None, "180x240"])
def test_real_camvid_sample(capsys, trial, size) -> None:
    """On real files: labels at their native 360x480 whatever the input size."""
    extra = ["--input", size] if size else []
    code, row = evaluate(
        capsys, {**trial, "root": Path(SAMPLE)}, "--split", "val", "--json", *extra
    )
    assert code == 0, row
    assert row["label_size"] == "360x480" and row["input_size"] == (size or "360x480")
    assert row["images"] == len(list((Path(SAMPLE) / "val").glob("*.png")))
    assert 0 <= row["miou_lo"] <= row["miou_hi"] <= 1 and 0 <= row["pixel_acc"] <= 1


def test_a_retrained_trial_scores_what_retraining_recorded(capsys, trial, tmp_path) -> None:
    """``retrain`` then ``evaluate`` on its best.pt and resolved config: the same val mIoU."""
    out = tmp_path / "retrain"
    sets = [f"data.root={trial['root']}", "data.height=48", "data.width=64",
            "data.eval_label_size=[48, 64]", "data.train_size=null", "data.val_size=null",
            "data.batch_size=2", "data.num_workers=0"]  # fmt: skip
    argv = ["retrain", "--genotype", str(trial["genotype"]), "--data", "camvid", "--epochs",
            "1", "--out", str(out), *(a for s in sets for a in ("--set", s))]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    capsys.readouterr()
    code = main(["evaluate", "--genotype", str(out / "genotype.json"), "--weights",
                 str(out / "best.pt"), "--config", str(out / "config.resolved.yaml"), "--json"])  # fmt: skip
    text = capsys.readouterr()
    assert code == 0, text.err
    row = json.loads(text.out)
    assert row["images"] == 3 and row["label_size"] == "48x64"
    assert row["miou"] == pytest.approx(summary["best_miou"], abs=1e-9)
    assert row["pixel_acc"] == pytest.approx(summary["pixel_acc"], abs=1e-9)
