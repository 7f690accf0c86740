"""``resnetkit predict``: real photos, bad files reported not fatal, batching, CLI formats."""

from __future__ import annotations

import csv
import io
import json
import shutil
import struct
import zlib
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import resnetkit
from resnetkit.cli.main import main
from resnetkit.data.cifar import CIFAR_MEAN, CIFAR_STD
from resnetkit.data.images import REASON_CORRUPT, REASON_EMPTY, REASON_NOT_IMAGE
from resnetkit.models.loading import load_model
from resnetkit.models.model_dir import save_model_dir
from resnetkit.models.registry import create_model
from resnetkit.models.resnet import ResNet
from resnetkit.predict import PredictionReport, predict

CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
_ASSET_DIR = resources.files("resnetkit.assets")
ASSETS = [Path(str(_ASSET_DIR / name)) for name in ("cat.png", "automobile.png", "ship.png")]


def _chunk(kind: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_bomb(width: int, height: int) -> bytes:
    """A 57-byte PNG that declares ``width`` x ``height`` pixels: a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT") + _chunk(b"IEND")


def _by_index(prediction: dict) -> np.ndarray:
    """All-class probabilities of one prediction (made with top_k=10), indexed by class."""
    probs = np.zeros(len(CLASSES))
    for entry in prediction["top_k"]:
        probs[entry["index"]] = entry["probability"]
    return probs


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A random resnet20 model dir, and a folder of good copies and bad files."""
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("predict")
    model = create_model("resnet20", num_classes=10).eval()
    assert isinstance(model, ResNet)
    preprocessing = {
        "input_size": 32,
        "resize": 32,
        "crop": 32,
        "interpolation": "bilinear",
        "mean": list(CIFAR_MEAN["cifar10"]),
        "std": list(CIFAR_STD["cifar10"]),
    }
    model_dir = save_model_dir(
        model, tmp / "model", arch="resnet20", classes=CLASSES, preprocessing=preprocessing
    )
    folder = tmp / "images"
    (folder / "sub").mkdir(parents=True)
    copies = [folder / "a_cat.png", folder / "sub" / "car.PNG", folder / "sub" / "ship.png"]
    for asset, copy in zip(ASSETS, copies, strict=True):
        shutil.copy(asset, copy)
    data = ASSETS[0].read_bytes()
    bad = {
        folder / "empty.png": "",
        folder / "sub" / "truncated.png": data[: len(data) // 2],
        folder / "notes.jpg": "not a picture\n",
        folder / "bomb.png": _png_bomb(100_000, 100_000),
    }
    for path, content in bad.items():
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
    (folder / "readme.txt").write_text("not an image suffix: never read\n")
    report = predict(model_dir, [*ASSETS, folder], top_k=10, batch_size=4)
    return {
        "tmp": tmp,
        "model": model,
        "model_dir": model_dir,
        "folder": folder,
        "copies": copies,
        "bad": sorted(bad),
        "report": report,
    }


def test_predictions_for_every_good_file(setup: dict) -> None:
    report: PredictionReport = setup["report"]
    folder = setup["folder"]
    copies_sorted = sorted(setup["copies"])  # folders are searched recursively, sorted
    assert [p["path"] for p in report.predictions] == [str(p) for p in ASSETS + copies_sorted]
    assert str(folder / "readme.txt") not in json.dumps(report.to_dict())
    for pred in report.predictions:
        top = pred["top_k"]
        assert len(top) == 10
        probs = [t["probability"] for t in top]
        assert probs == sorted(probs, reverse=True)
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)
        assert sorted(t["index"] for t in top) == list(range(10))
        assert all(t["class"] == CLASSES[t["index"]] for t in top)
    # A copy of an image is predicted exactly like the original.
    by_path = {p["path"]: _by_index(p) for p in report.predictions}
    for asset, copy in zip(ASSETS, setup["copies"], strict=True):
        np.testing.assert_allclose(by_path[str(asset)], by_path[str(copy)], atol=1e-6)


def test_bad_files_are_reported_with_reasons(setup: dict) -> None:
    failures = {f["path"]: f["reason"] for f in setup["report"].failures}
    assert sorted(failures) == [str(p) for p in setup["bad"]]
    folder = setup["folder"]
    assert failures[str(folder / "empty.png")] == REASON_EMPTY
    assert failures[str(folder / "sub" / "truncated.png")] == REASON_CORRUPT
    assert failures[str(folder / "notes.jpg")] == REASON_NOT_IMAGE
    assert "bomb" in failures[str(folder / "bomb.png")]


def test_top1_matches_hand_normalisation(setup: dict) -> None:
    model = setup["model"]
    mean = torch.tensor(CIFAR_MEAN["cifar10"]).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD["cifar10"]).view(1, 3, 1, 1)
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in ASSETS])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        probs = model((x - mean) / std).softmax(1)
    for pred, expected in zip(setup["report"].predictions, probs, strict=False):
        assert pred["top_k"][0]["index"] == int(expected.argmax())
        np.testing.assert_allclose(_by_index(pred), expected.numpy(), atol=1e-5)


def test_batch_size_does_not_change_results(setup: dict) -> None:
    model = load_model(setup["model_dir"])
    model.train()  # predict must evaluate in eval mode and then restore the mode
    one = predict(model, [*ASSETS, setup["folder"]], top_k=10, batch_size=1, progress=True)
    assert model.training
    batched = setup["report"]
    assert [p["path"] for p in one.predictions] == [p["path"] for p in batched.predictions]
    assert one.failures == batched.failures
    for a, b in zip(one.predictions, batched.predictions, strict=True):
        np.testing.assert_allclose(_by_index(a), _by_index(b), atol=1e-5)
    assert resnetkit.predict is predict  # the package exports the function, not the module
    three = resnetkit.predict(model, ASSETS[0], top_k=3)
    assert [t["index"] for t in three.predictions[0]["top_k"]] == [
        t["index"] for t in batched.predictions[0]["top_k"][:3]
    ]


def test_pixel_mean_model(setup: dict, tmp_path: Path) -> None:
    model = setup["model"]
    pixel_mean = torch.linspace(0.3, 0.6, 3 * 32 * 32).view(3, 32, 32)
    model_dir = save_model_dir(
        model,
        tmp_path / "pm",
        arch="resnet20",
        classes=CLASSES,
        preprocessing={"input_size": 32, "pixel_mean": pixel_mean.flatten().tolist()},
    )
    report = predict(model_dir, ASSETS[:1], top_k=10)
    x = torch.from_numpy(np.asarray(Image.open(ASSETS[0]).convert("RGB")).copy())
    x = x.permute(2, 0, 1).float() / 255.0 - pixel_mean
    with torch.no_grad():
        expected = model(x[None]).softmax(1)[0]
    np.testing.assert_allclose(_by_index(report.predictions[0]), expected.numpy(), atol=1e-5)


def _cli(setup: dict, *extra: str) -> int:
    args = ["predict", "--model", str(setup["model_dir"]), *map(str, ASSETS)]
    return main([*args, str(setup["folder"]), *extra])


def test_cli_json(setup: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(setup, "--json", "--top-k", "3", "--batch-size", "2") == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["predictions"]) == 6 and len(out["failures"]) == 4
    assert all(len(p["top_k"]) == 3 for p in out["predictions"])
    expected = setup["report"].predictions
    assert [p["top_k"][0]["class"] for p in out["predictions"]] == [
        p["top_k"][0]["class"] for p in expected
    ]


def test_cli_csv(setup: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(setup, "--csv", "--top-k", "2") == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert list(rows[0]) == ["path", "rank", "class", "probability"]
    assert len(rows) == 6 * 2
    assert [r["rank"] for r in rows[:2]] == ["1", "2"]
    assert all(r["class"] in CLASSES and 0.0 <= float(r["probability"]) <= 1.0 for r in rows)
    for bad in setup["bad"]:
        assert str(bad) in captured.err and str(bad) not in captured.out


def test_cli_text(setup: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(setup) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(str(ASSETS[0])) and lines[0].count("%") == 5
    assert lines[-1] == "6 predicted, 4 failed"
    assert f"  {setup['folder'] / 'empty.png'}: {REASON_EMPTY}" in lines


def test_text_and_csv_are_written_a_batch_at_a_time(
    setup: dict, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`resnetkit predict` over a large folder printed nothing until every image was done: a
    user saw nothing for minutes, and Ctrl-C lost every result. Each batch's lines are now
    written (and flushed) as it completes; the failures and counts still come at the end."""
    import importlib

    module = importlib.import_module("resnetkit.predict")  # (resnetkit.predict: the function)
    batches: list[tuple[list[str], int]] = []
    report = predict(
        setup["model_dir"],
        [*ASSETS, setup["folder"]],
        top_k=2,
        batch_size=4,
        on_batch=lambda done, files: batches.append(([p["path"] for p in done], len(files))),
    )
    assert [paths for paths, _ in batches] == [
        [p["path"] for p in report.predictions[:4]],
        [p["path"] for p in report.predictions[4:]],
    ]
    assert {count for _, count in batches} == {6 + len(setup["bad"])}  # every file to be read

    # A completed run: the CSV rows of the report, in its order, then the failures on stderr.
    assert _cli(setup, "--csv", "--top-k", "2", "--batch-size", "4") == 0
    captured = capsys.readouterr()
    expected = ["path,rank,class,probability"] + [
        f"{p['path']},{rank},{t['class']},{t['probability']:.6f}"
        for p in report.predictions
        for rank, t in enumerate(p["top_k"], start=1)
    ]
    assert captured.out.splitlines() == expected
    assert captured.err.count("resnetkit predict: ") == len(setup["bad"])
    # The text table: paths padded to the longest of the files to be read (known before the
    # first batch), failed ones included (sub/truncated.png is longer than any read).
    assert _cli(setup, "--top-k", "2", "--batch-size", "4") == 0
    lines = capsys.readouterr().out.splitlines()
    width = max(len(str(p)) for p in [*ASSETS, *setup["copies"], *setup["bad"]])
    for line, pred in zip(lines[:6], report.predictions, strict=True):
        assert line[:width].rstrip() == pred["path"]
        assert line[width : width + 2] == "  " and line[width + 2] != " "
    assert lines[6] == f"failed ({len(setup['bad'])}):" and lines[-1] == "6 predicted, 4 failed"

    # Stopped (Ctrl-C) while the second batch is scored: the first batch's lines are kept.
    ranked = module.rank_classes
    scored: list[int] = []

    def stop_at_the_second_batch(*args: object, **kwargs: object) -> object:
        scored.append(1)
        if len(scored) == 2:
            raise KeyboardInterrupt
        return ranked(*args, **kwargs)

    monkeypatch.setattr(module, "rank_classes", stop_at_the_second_batch)
    for fmt, kept in ((["--csv"], expected[: 1 + 4 * 2]), ([], lines[:4])):
        scored.clear()
        assert _cli(setup, *fmt, "--top-k", "2", "--batch-size", "4") == 130
        captured = capsys.readouterr()
        assert captured.out.splitlines() == kept
        assert captured.err == "resnetkit predict: interrupted (Ctrl-C)\n"


def test_cli_exit_codes(setup: dict, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = [str(p) for p in setup["bad"]]
    empty_dir = tmp_path / "nothing"
    empty_dir.mkdir()
    assert main(["predict", "--model", str(setup["model_dir"]), *bad, str(empty_dir)]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "0 predicted, 5 failed" and "holds no image files" in out
    missing = tmp_path / "no" / "model"
    assert main(["predict", "--model", str(missing), str(ASSETS[0])]) == 2
    assert "resnetkit predict: error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--model", str(setup["model_dir"]), "--top-k", "0", str(ASSETS[0])])
    assert exit_info.value.code == 2
    with pytest.raises(ValueError, match="no images"):
        predict(setup["model"], [])


def test_grayscale_model_predicts_and_exports(tmp_path: Path) -> None:
    """A model converted to one input channel (--in-chans 1 --adapt-in-chans) gets the
    photos' luminance, normalised with its RGB statistics averaged."""
    from resnetkit.export.exporter import export_model
    from resnetkit.predict import Preprocessing

    torch.manual_seed(0)
    model = create_model("resnet20", in_chans=1, num_classes=10).eval()
    pre = {"input_size": 32, "mean": list(CIFAR_MEAN["cifar10"]), "std": list(CIFAR_STD["cifar10"])}
    gray = save_model_dir(model, tmp_path / "gray", arch="resnet20", classes=CLASSES,
                          preprocessing=pre)  # fmt: skip
    loaded = load_model(gray)
    prep = Preprocessing.of(loaded)
    assert prep.channels == 1 and prep.mean == pytest.approx([sum(pre["mean"]) / 3])
    x = prep.transform()(Image.open(ASSETS[0]).convert("RGB"))
    luminance = np.asarray(Image.open(ASSETS[0]).convert("L"), dtype=np.float32) / 255.0
    expected = (luminance - prep.mean[0]) / prep.std[0]
    assert x.shape == (1, 32, 32) and np.allclose(x[0].numpy(), expected, atol=1e-5)
    report = predict(gray, ASSETS, top_k=1)
    assert len(report.predictions) == 3 and not report.failures
    exported = export_model(loaded, "onnx", tmp_path / "gray.onnx")
    assert exported.max_abs_diff_image < 1e-4
    with pytest.raises(ValueError, match="takes 4 input channels"):
        Preprocessing.of(create_model("resnet20", in_chans=4))


def test_predict_takes_any_iterable_and_refuses_a_backbone(tmp_path: Path) -> None:
    model = load_model("resnet20.cifar10")
    report = predict(model, (path for path in ASSETS))  # a generator is read once, whole
    assert len(report.predictions) == 3
    backbone = create_model("resnet20.cifar10", pretrained=True, features_only=True)
    with pytest.raises(ValueError, match="features_only=True: it returns feature maps"):
        predict(backbone, ASSETS)
    with pytest.raises(FileNotFoundError, match="no such model directory"):
        load_model("./no-such-model")  # a path, not a tag to look up
    for name, value in (("top_k", 2.5), ("top_k", "3"), ("batch_size", True)):
        with pytest.raises(ValueError, match=f"{name} must be at least 1 .*got {value!r}"):
            predict(model, ASSETS, **{name: value})  # torch's errors, or one image a batch


def test_a_file_or_checkpoint_of_a_model_names_the_model_directory(
    setup: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--model RUN/model/model.safetensors --arch resnet20` loaded the weights bare: the
    classes came out as indices and the CIFAR model was fed ImageNet-normalised pixels (other
    probabilities, no error); config.json was taken for a checkpoint needing --arch resnet50,
    and a run's checkpoints/ or ckpt-N folder for a broken model directory."""
    model_dir = setup["model_dir"]
    for name in ("model.safetensors", "config.json"):
        for arch in ([], ["--arch", "resnet20"]):
            argv = ["predict", "--model", str(model_dir / name), *arch, str(ASSETS[0])]
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert f"is a file of the model directory {model_dir}" in err, err
            assert f"(--model {model_dir})" in err
    run = tmp_path / "run"
    checkpoint = run / "checkpoints" / "ckpt-00000004"
    checkpoint.mkdir(parents=True)
    shutil.copy(model_dir / "model.safetensors", checkpoint)
    (checkpoint / "state.pt").write_bytes(b"")
    (run / "run.json").write_text('{"model": "resnet20", "origin": {"command": "finetune"}}')
    for given in (checkpoint, checkpoint.parent):  # unfinished: that checkpoint's weights
        with pytest.raises(ValueError, match=f"{given} is part of the training run {run} "):
            load_model(given)
    with pytest.raises(ValueError, match=f"--model {checkpoint}/model.safetensors --arch"):
        load_model(checkpoint)
    shutil.copytree(model_dir, run / "model")  # finished: the model it wrote
    with pytest.raises(ValueError, match=f"the model it trained is {run / 'model'}; pass"):
        load_model(checkpoint)
    bare = load_model(checkpoint / "model.safetensors", arch="resnet20")  # as the error advises
    assert bare.pretrained_cfg["classes"] == []


def test_predict_takes_another_librarys_resnet() -> None:
    """A torchvision ResNet has no num_classes attribute: its head says how many classes."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=5).eval()
    report = predict(net, ASSETS[:1], top_k=5, batch_size=1)
    got = report.predictions[0]["top_k"]
    assert sorted(p["class"] for p in got) == ["0", "1", "2", "3", "4"]
    with pytest.raises(ValueError, match="neither num_classes nor an fc layer"):
        predict(torch.nn.Sequential(torch.nn.Flatten()), ASSETS[:1])
    import timm  # its pretrained_cfg: input_size (3, 224, 224), bicubic, crop_pct 0.875

    tm = timm.create_model("resnet18", num_classes=3).eval()
    assert len(predict(tm, ASSETS[:1], top_k=3).predictions[0]["top_k"]) == 3


def test_the_models_preprocessing_is_public() -> None:
    """resnetkit.Preprocessing (as timm's resolve_data_config + create_transform): the input
    predict builds for an image, usable on its own."""
    model = resnetkit.create_model("resnet20.cifar10", pretrained=True).eval()
    prep = resnetkit.Preprocessing.of(model)
    assert (prep.image_size, prep.resize, prep.mean) == (32, 32, tuple(CIFAR_MEAN["cifar10"]))
    x = prep.transform()(Image.open(ASSETS[0]).convert("RGB"))
    # another mode is converted as image files are (RGBA failed: four channels, three means)
    assert torch.equal(prep.transform()(Image.open(ASSETS[0]).convert("RGBA")), x)
    with torch.no_grad():
        probs = model(x.unsqueeze(0)).softmax(1)[0]
    top = predict(model, ASSETS[:1], top_k=1).predictions[0]["top_k"][0]
    assert top["index"] == int(probs.argmax())
    assert top["probability"] == pytest.approx(float(probs.max()), abs=1e-5)


def test_an_unknown_interpolation_set_in_python_is_named() -> None:
    """config.json refuses 'cubicc' with the allowed values; set in Python it reached
    torchvision, whose error names neither the field nor the values to use."""
    model = resnetkit.create_model("resnet20.cifar10", pretrained=True).eval()
    model.pretrained_cfg = {**model.pretrained_cfg, "interpolation": "cubicc"}
    with pytest.raises(
        ValueError,
        match=r"pretrained_cfg\['interpolation'\] 'cubicc' is not one resnetkit resizes with; "
        r"use one of nearest, .*bicubic",
    ):
        predict(model, ASSETS[:1])


def test_predict_sees_through_wrappers(setup: dict) -> None:
    """An EMA (AveragedModel) or DataParallel wrapper has no preprocessing of its own: the
    model inside it gives classes, preprocessing and the same answers."""
    from torch.optim.swa_utils import AveragedModel

    model = resnetkit.create_model("resnet20.cifar10", pretrained=True).eval()
    plain = predict(model, ASSETS, top_k=2).predictions
    for wrapped in (AveragedModel(model), torch.nn.DataParallel(model)):
        assert predict(wrapped, ASSETS, top_k=2).predictions == plain
    backbone = resnetkit.create_model("resnet20", features_only=True)
    with pytest.raises(ValueError, match="features_only=True"):
        predict(AveragedModel(backbone), ASSETS[:1])


@pytest.mark.parametrize("tag", ["resnet20.cifar10", "lopsided-mean"])
def test_tta_averages_each_image_with_its_mirror_image(
    tag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The mirror image is preprocessed as an image of its own: a per-pixel mean is
    subtracted unmirrored (a mean image dark on the left, bright on the right shows it; the
    paper's CIFAR mean is nearly symmetric)."""
    from PIL import ImageOps

    from resnetkit.predict import Preprocessing

    if tag == "lopsided-mean":
        ramp = torch.linspace(0.0, 1.0, 32).expand(3, 32, 32)
        pre = {"input_size": 32, "mean": [0.0] * 3, "std": [1.0] * 3}
        pre["pixel_mean"] = ramp.flatten().tolist()
        torch.manual_seed(0)
        names = [str(i) for i in range(10)]
        model_dir = save_model_dir(
            create_model("resnet20"), tmp_path / "m", arch="resnet20", classes=names,
            preprocessing=pre,
        )  # fmt: skip
        tag = str(model_dir)
    model = load_model(tag)
    assets = [Path(str(resources.files("resnetkit.assets") / n)) for n in ("cat.png", "ship.png")]
    got = resnetkit.predict(model, assets, top_k=10, tta=True).predictions
    plain = resnetkit.predict(model, assets, top_k=10).predictions
    transform = Preprocessing.of(model).transform()
    for path, with_tta, without in zip(assets, got, plain, strict=True):
        image = Image.open(path).convert("RGB")
        x = torch.stack([transform(image), transform(ImageOps.mirror(image))])
        with torch.no_grad():
            want = model(x).softmax(1).mean(0)
        probs = {t["index"]: t["probability"] for t in with_tta["top_k"]}
        assert probs == pytest.approx(dict(enumerate(want.tolist())), abs=1e-5)
        assert probs != pytest.approx({t["index"]: t["probability"] for t in without["top_k"]})
    assert main(["predict", "--model", tag, str(assets[0]), "--tta", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)["predictions"][0]["top_k"][0]
    assert printed["class"] == got[0]["top_k"][0]["class"]


def test_files_left_out_of_a_folder_are_named(tmp_path: Path) -> None:
    """An iPhone folder: the .heic photos are not decoded, and the run says so."""
    from resnetkit.predict import collect_images

    mixed, only = tmp_path / "mixed", tmp_path / "only"
    mixed.mkdir()
    only.mkdir()
    Image.new("RGB", (8, 8)).save(mixed / "a.png")
    for folder in (mixed, only):
        (folder / "IMG_1.HEIC").write_bytes(b"ftypheic")
        (folder / "IMG_2.heic").write_bytes(b"ftypheic")
    (mixed / "notes.txt").write_text("x")
    with pytest.warns(UserWarning, match=r"3 file\(s\) not named as images .*\.heic: 2, \.txt: 1"):
        files, failures = collect_images([mixed])
    assert files == [mixed / "a.png"] and not failures
    files, failures = collect_images([only])
    assert not files and failures[0]["reason"].endswith("; other files: .heic: 2")
