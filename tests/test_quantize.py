"""int8 quantisation with ONNX Runtime on real bundled CIFAR-10 images."""

import copy
import json
import logging
import warnings
from pathlib import Path

import onnx
import pytest
import torch

from resnetkit.cli.main import main
from resnetkit.evaluate.evaluator import evaluate_model
from resnetkit.export.metadata import read_metadata
from resnetkit.export.quantize import (
    OrtClassifier,
    calibration_batches,
    quantize_model,
)
from resnetkit.models.loading import load_model
from resnetkit.models.model_dir import save_model_dir
from resnetkit.models.registry import create_model
from resnetkit.models.resnet import ResNet


@pytest.fixture(scope="module")
def trained() -> ResNet:
    """The shipped ResNet-20 (trained on CIFAR-10 by resnetkit): logits that mean something."""
    model = load_model("resnet20.cifar10")
    assert isinstance(model, ResNet)
    return model


def test_static_int8_is_smaller_and_keeps_accuracy(trained: ResNet, tmp_path: Path) -> None:
    model = copy.deepcopy(trained)
    report = quantize_model(
        model,
        tmp_path / "m.int8.onnx",
        calibration_dataset="cifar10-sample",
        calibration_size=128,
        eval_dataset="cifar10-sample",
    )
    assert report.calibration_images == 128
    assert report.int8_bytes < 0.4 * report.fp32_bytes
    ops = {node.op_type for node in onnx.load(report.int8_path).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    acc = report.accuracy
    torch_top1 = evaluate_model(model, "cifar10-sample", ".")["top1"]
    assert acc["fp32"]["top1"] == pytest.approx(torch_top1, abs=0.21)  # ONNX fp32 == PyTorch
    assert acc["fp32"]["top1"] > 20  # it learned something: chance is 10%
    assert abs(acc["top1_drop"]) <= 3.0
    # The int8 file says what it is and carries its own accuracy, not the fp32 model's.
    meta = read_metadata(report.int8_path)
    assert meta["metrics"] == {"test_top1": acc["int8"]["top1"], "test_top5": acc["int8"]["top5"]}
    assert meta["quantized"] == {"method": "static", "evaluated_on": "cifar10-sample:test"}


def test_int8_predictions_agree_with_fp32(trained: ResNet, tmp_path: Path) -> None:
    model = copy.deepcopy(trained)
    report = quantize_model(
        model, tmp_path / "m.int8.onnx", calibration_dataset="cifar10-sample", calibration_size=64
    )
    batch = torch.from_numpy(
        calibration_batches(model, "cifar10-sample", ".", split="test", count=200, batch_size=200)[
            0
        ]
    )
    fp32 = OrtClassifier(report.fp32_path, model)(batch)
    int8 = OrtClassifier(report.int8_path, model)(batch)
    agreement = float((fp32.argmax(1) == int8.argmax(1)).float().mean())
    assert agreement > 0.9


def test_dynamic_and_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    model = create_model("resnet20")
    pre = {"input_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    path = save_model_dir(
        model,
        tmp_path / "m",
        arch="resnet20",
        classes=[str(i) for i in range(10)],
        preprocessing=pre,
    )
    assert (
        main(
            [
                "quantize",
                "--model",
                str(path),
                "--out",
                str(tmp_path / "d.int8.onnx"),
                "--method",
                "dynamic",
            ]
        )
        == 0
    )
    shown = json.loads(capsys.readouterr().out)
    assert shown["method"] == "dynamic" and shown["calibration_images"] == 0
    # ONNX Runtime warned (pre-processing advised, option A's slices) until the graph was
    # prepared first, as for static quantisation
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    ops = {n.op_type for n in onnx.load(shown["int8_path"]).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"}
    logits = OrtClassifier(shown["int8_path"], model)(torch.randn(2, 3, 32, 32))
    assert bool(torch.isfinite(logits).all())
    assert "note" not in capsys.readouterr().err  # dynamic quantisation calibrates on nothing
    # Static, with the default calibration images, for a model of other classes: said so.
    argv = ["quantize", "--model", str(path), "--out", str(tmp_path / "s.onnx")]
    assert main([*argv, "--calibration-size", "16"]) == 0
    assert "calibrating on the bundled CIFAR-10 photos" in capsys.readouterr().err
    # A folder or split that is not there is found out before the fp32 file is written.
    for extra, message in (
        (
            ["--calibration-dataset", "folder"],
            "--calibration-dir is needed for --calibration-dataset folder",
        ),
        (["--calibration-split", "bogus"], "--calibration-split 'bogus': cifar10-sample has"),
        (["--eval-dataset", "cifar10"], "--eval-dir is needed for --eval-dataset cifar10"),
        (
            ["--eval-dataset", "folder", "--eval-dir", str(tmp_path / "typo")],
            "image folder not found",
        ),
    ):
        assert main([*argv[:-1], str(tmp_path / "x.onnx"), *extra]) == 2
        assert message in capsys.readouterr().err
        assert not list(tmp_path.glob("x*")), extra


def test_a_grayscale_model_calibrates_on_luminance(tmp_path: Path) -> None:
    """Static quantisation fed a 1-channel model 3-channel calibration batches (an ONNX
    Runtime error); its batches are now the images' luminance, as evaluate and predict feed."""
    model = create_model("resnet20", in_chans=1)
    model.pretrained_cfg = {"mean": [0.5] * 3, "std": [0.25] * 3, "input_size": 32}
    batches = calibration_batches(model, "cifar10-sample", ".", split="test", count=8)
    assert batches[0].shape == (8, 1, 32, 32)
    report = quantize_model(
        model, tmp_path / "gray.onnx", calibration_dataset="cifar10-sample", calibration_size=8
    )
    logits = OrtClassifier(report.int8_path, model)(torch.randn(2, 1, 32, 32))
    assert logits.shape == (2, 10) and bool(torch.isfinite(logits).all())


def test_a_folder_calibrates_on_what_the_model_is_fed_and_decodes_only_its_draw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image, ImageOps

    import resnetkit.data.folder as folder_module

    # Photos with a white frame: resized to the model's 80 and centre-cropped to 64, as
    # evaluate, predict and serve see them, no frame is left (resized straight to 64, it is).
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(5):
            inner = Image.new("RGB", (84, 84), (60 + 10 * i, 90, 80))
            ImageOps.expand(inner, border=8, fill="white").save(
                tmp_path / "data" / name / f"{i}.png"
            )
    model = create_model("resnet20", num_classes=2)
    model.pretrained_cfg = {"input_size": 64, "resize": 80, "mean": [0.0] * 3, "std": [1.0] * 3}
    decoded = []
    real = folder_module.load_image
    monkeypatch.setattr(
        folder_module, "load_image", lambda path, **kw: decoded.append(path) or real(path, **kw)
    )
    batches = calibration_batches(model, "folder", tmp_path / "data", count=3, batch_size=8)
    assert [b.shape for b in batches] == [(3, 3, 64, 64)]
    assert len(decoded) == 3  # of 10 files
    assert batches[0].max() < 0.5  # no white: (255 / 255 - 0) / 1 would be 1.0


def _model_dir(tmp_path: Path, classes: list[str]) -> Path:
    model = create_model("resnet20", num_classes=len(classes))
    pre = {"input_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    return save_model_dir(
        model, tmp_path / "m", arch="resnet20", classes=classes, preprocessing=pre
    )


def test_what_a_folder_is_noted_for_is_said_once_a_step_and_named_by_it(tmp_path: Path) -> None:
    """Calibrating and scoring on one folder with a .txt and an unreadable file in it, the
    'left out' line came three times and the unreadable file twice, each without saying
    whether calibration or the accuracy was meant."""
    from PIL import Image

    data = tmp_path / "data"
    for name in ("a", "b"):
        (data / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (100 * i, 50, 50)).save(data / name / f"{i}.png")
    (data / "a" / "notes.txt").write_text("taken at the airfield\n")
    (data / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    folder = ["--calibration-dataset", "folder", "--calibration-dir", str(data)]
    argv = ["quantize", "--model", str(_model_dir(tmp_path, ["a", "b"])), *folder]
    argv += ["--out", str(tmp_path / "q.onnx"), "--eval-dataset", "folder", "--eval-dir", str(data)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(argv) == 0
    said = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    for step in ("calibration images", "evaluation images"):
        for note in ("file(s) not named as images were left out (.txt: 1)", "broken.jpg: "):
            assert sum(m.startswith(f"{step}: ") and note in m for m in said) == 1, said
    assert len(said) == 4, said


def test_out_must_be_named_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--out q wrote an ONNX file named q (and q.fp32.onnx beside it); the name is refused
    before anything is loaded, with the name to use, as export refuses another format's."""
    path = _model_dir(tmp_path, ["x", "y"])
    for out, fixed in (("q", "q.onnx"), ("q.int8", "q.int8.onnx"), ("q.ts", "q.onnx")):
        with pytest.raises(SystemExit) as exit_:
            main(["quantize", "--model", str(path), "--out", str(tmp_path / out)])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert "argument --out" in err and f"must end in .onnx: name it {tmp_path / fixed}" in err
    with pytest.raises(ValueError, match=r"name it .*q\.onnx"):
        quantize_model(load_model(path), tmp_path / "q", calibration_dataset="cifar10-sample")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_eval_classes_are_checked_before_calibration_and_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Data of other classes were found out after the fp32 export and calibration (minutes),
    in evaluate's words and as "cifar10-sample test in ."; now first, naming the data and
    quantize's own flags."""
    from PIL import Image

    import resnetkit.export.quantize as quantize_module

    def too_late(*_: object, **__: object) -> None:
        raise AssertionError("calibrated or exported before the evaluation data were checked")

    monkeypatch.setattr(quantize_module, "calibration_batches", too_late)
    monkeypatch.setattr("resnetkit.export.exporter.export_model", too_late)
    path = _model_dir(tmp_path, ["x", "y", "z"])
    for name in ("a", "b"):
        (tmp_path / "ev" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "ev" / name / "0.png")
    argv = ["quantize", "--model", str(path), "--out", str(tmp_path / "q.onnx")]
    for extra, where in (
        (["--eval-dataset", "cifar10-sample"], "the bundled cifar10-sample (test) has 10"),
        (
            ["--eval-dataset", "folder", "--eval-dir", str(tmp_path / "ev")],
            f"folder {tmp_path / 'ev'} has 2 (a, b)",
        ),
    ):
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err
        assert f"the model predicts 3 classes (x, y, z) but {where}" in err
        assert "leave out --eval-dataset" in err and "--eval-dir" in err
        assert "Evaluate on" not in err and " in ." not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ev", "m"]


def test_a_flat_folder_calibrates_and_unreadable_images_are_named_and_skipped(
    tmp_path: Path,
) -> None:
    """Calibration needs no labels: a folder of images (no class folders) was refused."""
    from PIL import Image

    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 40), (40 * i, 90, 80)).save(flat / f"{i}.png")
    (flat / "broken.jpg").write_bytes(b"not a jpeg at all")
    (flat / "photo.heic").write_bytes(b"")  # left out by its name, and said so
    model = create_model("resnet20", num_classes=2)
    model.pretrained_cfg = {"input_size": 32, "mean": [0.0] * 3, "std": [1.0] * 3}
    with (
        pytest.warns(UserWarning, match=r"broken\.jpg: not an image.*\n1 bad image file\(s\) of 4"),
        pytest.warns(UserWarning, match=r"flat: 1 file\(s\) not named as images .*\(\.heic: 1\)"),
    ):
        batches = calibration_batches(model, "folder", flat, count=10, batch_size=8)
    assert [b.shape for b in batches] == [(3, 3, 32, 32)]
    # a folder of class folders still works, and an empty one says what it needs
    (tmp_path / "classes" / "a").mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(tmp_path / "classes" / "a" / "0.png")
    assert calibration_batches(model, "folder", tmp_path / "classes", count=4)[0].shape[0] == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no images in .*empty: put the calibration images in"):
        calibration_batches(model, "folder", tmp_path / "empty")
    (flat / "broken.jpg").unlink()
    (flat / "photo.heic").unlink()
    for i in range(3):
        (flat / f"{i}.png").write_bytes(b"")
    with (
        pytest.warns(UserWarning, match=r"3 bad image file\(s\) of 3"),
        pytest.raises(ValueError, match=r"no readable images in .*flat \(3 tried"),
    ):
        calibration_batches(model, "folder", flat)


def test_a_file_as_calibration_folder_says_what_calibration_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--calibration-dir photo.jpg` was refused with evaluate's class-folder layout
    (root/<class>/<image>), though a flat folder of images will do."""
    from PIL import Image

    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8)).save(photo)
    out = tmp_path / "q.onnx"
    argv = ["quantize", "--model", "resnet20.cifar10", "--out", str(out)]
    assert main([*argv, "--calibration-dataset", "folder", "--calibration-dir", str(photo)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"resnetkit quantize: error: not a folder: {photo}: calibration needs a folder of images "
        "(flat, or in class folders; no labels needed) or a .csv/.tsv label file\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.jpg"]  # nothing written


def test_the_evaluation_data_are_named_as_they_were_scored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder of class folders, with no test/ in it, is scored whole: the report said
    "folder:test" all the same, as though a test split had been found."""
    import shutil

    from resnetkit.export.quantize import scored_data_name

    assets = Path(__file__).parents[1] / "src" / "resnetkit" / "assets"
    for name in ("cat", "ship"):
        for root in (tmp_path / "whole", tmp_path / "split" / "test"):
            (root / name).mkdir(parents=True)
            shutil.copy(assets / f"{name}.png", root / name / "0.png")
    out = tmp_path / "q" / "r.int8.onnx"
    argv = ["quantize", "--model", "resnet20.cifar10", "--out", str(out), "--method", "dynamic"]
    assert main([*argv, "--eval-dataset", "folder", "--eval-dir", str(tmp_path / "whole")]) == 0
    accuracy = json.loads(capsys.readouterr().out)["accuracy"]
    whole = f"folder {tmp_path / 'whole'}, every image (no test split)"
    assert accuracy["dataset"] == whole and accuracy["int8"]["count"] == 2
    assert read_metadata(out)["quantized"]["evaluated_on"] == whole
    assert scored_data_name("folder", tmp_path / "split", "test") == "folder:test"
    assert scored_data_name("cifar10", tmp_path, "test") == "cifar10:test"
    for text, scored in (
        ("path,label\nwhole/cat/0.png,cat\n", f"folder {tmp_path / 'l.csv'}, every image (no "),
        ("path,label,split\nwhole/cat/0.png,cat,test\n", "folder:test"),
    ):
        (tmp_path / "l.csv").write_text(text)
        assert scored_data_name("folder", tmp_path / "l.csv", "test").startswith(scored)
