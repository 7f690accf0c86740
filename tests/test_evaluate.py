"""``resnetkit evaluate``: metrics against a hand computation, 10-crop, loading, safety, plots."""

from __future__ import annotations

import json
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnetkit.cli.main import main
from resnetkit.data.cifar import CIFAR_MEAN, CIFAR_STD, ArrayDataset
from resnetkit.evaluate import evaluator, folders
from resnetkit.evaluate.evaluator import evaluate_model, ten_crop_views
from resnetkit.evaluate.plots import plot_confusion
from resnetkit.models.loading import load_model, preprocessing_of
from resnetkit.models.model_dir import save_model_dir
from resnetkit.models.registry import create_model
from resnetkit.models.resnet import ResNet

CLASSES = [f"class{i}" for i in range(10)]
N_IMAGES = 12


def _normalise(images: np.ndarray) -> torch.Tensor:
    """(N, 32, 32, 3) uint8 -> normalised (N, 3, 32, 32), independently of resnetkit."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(CIFAR_MEAN["cifar10"]).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD["cifar10"]).view(1, 3, 1, 1)
    return (x - mean) / std


def _write_cifar10(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # R, G, B planes
    records = np.concatenate([labels.astype(np.uint8)[:, None], planes], axis=1)
    (folder / "test_batch.bin").write_bytes(records.astype(np.uint8).tobytes())
    (folder / "batches.meta.txt").write_text("\n".join(CLASSES) + "\n")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A random resnet20 saved as a model dir, and CIFAR-10 data it gets exactly 50% right."""
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("evaluate")
    model = create_model("resnet20", num_classes=10).eval()
    assert isinstance(model, ResNet)
    images = np.random.default_rng(0).integers(0, 256, (N_IMAGES, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        logits = model(_normalise(images))
    pred = logits.argmax(1).numpy()
    # Even images labelled as predicted, odd ones as the next class: top-1 is exactly 50%.
    labels = np.where(np.arange(N_IMAGES) % 2 == 0, pred, (pred + 1) % 10).astype(np.int64)
    _write_cifar10(tmp / "data", images, labels)
    preprocessing = {
        "input_size": 32,
        "mean": list(CIFAR_MEAN["cifar10"]),
        "std": list(CIFAR_STD["cifar10"]),
    }
    model_dir = save_model_dir(
        model, tmp / "model", arch="resnet20", classes=CLASSES, preprocessing=preprocessing
    )
    return {
        "tmp": tmp,
        "model": model,
        "model_dir": model_dir,
        "data": tmp / "data",
        "images": images,
        "labels": labels,
        "logits": logits,
    }


def _run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(["evaluate", *argv, "--json"]) == 0
    result: dict[str, object] = json.loads(capsys.readouterr().out)
    return result


def test_metrics_match_hand_computation(setup: dict) -> None:
    model = load_model(setup["model_dir"])
    assert preprocessing_of(model)["classes"] == CLASSES
    result = evaluate_model(model, "cifar10", setup["data"], batch_size=5)  # 3 batches
    labels, logits = setup["labels"], setup["logits"]
    pred = logits.argmax(1).numpy()
    assert result["count"] == N_IMAGES
    assert result["top1"] == pytest.approx(100.0 * np.mean(pred == labels)) == 50.0
    top5 = (logits.topk(5, 1).indices.numpy() == labels[:, None]).any(1).mean()
    assert result["top5"] == pytest.approx(100.0 * top5)
    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels))
    assert result["loss"] == pytest.approx(float(loss), rel=1e-4)
    confusion = np.array(result["confusion"])
    assert confusion.sum() == N_IMAGES
    expected = np.zeros((10, 10), dtype=np.int64)
    np.add.at(expected, (labels, pred), 1)
    np.testing.assert_array_equal(confusion, expected)
    for k, name in enumerate(CLASSES):
        mask = labels == k
        if mask.any():
            assert result["per_class"][name] == pytest.approx(100.0 * np.mean(pred[mask] == k))
        else:  # no images of the class: no accuracy, rather than a 0% that reads as failure
            assert result["per_class"][name] is None
    assert None in result["per_class"].values()  # the fixture leaves a class out
    assert result["classes"] == CLASSES
    # Calibration: 15 equal-width bins of the top softmax probability.
    confidence = logits.softmax(1).amax(1).double().numpy()
    bins = np.minimum((confidence * 15).astype(int), 14)
    right = pred == labels
    ece = sum(
        np.mean(bins == b) * abs(right[bins == b].mean() - confidence[bins == b].mean())
        for b in np.unique(bins)
    )
    assert result["ece"] == pytest.approx(100.0 * ece, rel=1e-6)
    assert sum(b["count"] for b in result["reliability"]) == N_IMAGES


def test_ece_of_an_overconfident_and_an_underconfident_bin() -> None:
    from resnetkit.evaluate.metrics import ConfusionMeter

    meter = ConfusionMeter(2)
    # Confidence 0.95 right once and wrong once (accuracy 50%), 0.55 right twice (100%).
    confidence = torch.tensor([0.95, 0.95, 0.55, 0.55], dtype=torch.float64)
    logits = torch.stack([confidence.log(), (1 - confidence).log()], 1)
    meter.update(logits, torch.tensor([0, 1, 0, 0]))
    summary = meter.summary()
    assert summary["ece"] == pytest.approx(0.5 * 45.0 + 0.5 * 45.0)
    filled = {i: b for i, b in enumerate(summary["reliability"]) if b["count"]}
    assert sorted(filled) == [8, 14]
    assert filled[14]["accuracy"] == 50.0 and filled[14]["confidence"] == pytest.approx(95.0)
    assert filled[8]["accuracy"] == 100.0 and filled[8]["lower"] == pytest.approx(8 / 15)
    assert summary["reliability"][0]["confidence"] is None


def test_cli_json_and_confusion_png(setup: dict, capsys: pytest.CaptureFixture[str]) -> None:
    png = setup["tmp"] / "plots" / "cm.png"
    out = _run_cli(
        capsys,
        "--model", str(setup["model_dir"]),
        "--dataset", "cifar10",
        "--data-dir", str(setup["data"]),
        "--confusion", str(png),
    )  # fmt: skip
    assert out["top1"] == 50.0
    assert 50.0 <= out["top5"] <= 100.0
    assert set(out["per_class"]) == set(CLASSES)
    assert png.read_bytes().startswith(b"\x89PNG")
    assert out["confusion_png"] == str(png)
    # A folder that does not exist yet, marked by its trailing slash: a default name inside.
    folder = setup["tmp"] / "new-plots"
    out = _run_cli(
        capsys,
        "--model", str(setup["model_dir"]),
        "--dataset", "cifar10",
        "--data-dir", str(setup["data"]),
        "--confusion", f"{folder}/",
    )  # fmt: skip
    assert out["confusion_png"] == str(folder / "confusion_cifar10_test.png")
    assert (folder / "confusion_cifar10_test.png").is_file()
    out = _run_cli(
        capsys,
        "--model", str(setup["model_dir"]),
        "--dataset", "cifar10",
        "--data-dir", str(setup["data"]),
        "--reliability", f"{folder}/",
    )  # fmt: skip
    assert out["reliability_png"] == str(folder / "reliability_cifar10_test.png")
    assert (folder / "reliability_cifar10_test.png").read_bytes().startswith(b"\x89PNG")
    assert 0.0 <= out["ece"] <= 100.0 and len(out["reliability"]) == 15


def test_cli_figure_names_without_a_suffix_are_asked_about(
    setup: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--confusion out` (README's `out/` without its slash) wrote a PNG named `out`, which a
    later `--reliability out` replaced; it is refused before the evaluation, with both ways."""
    target = setup["tmp"] / "figs"
    argv = ["evaluate", "--model", "no-such-model", "--dataset", "cifar10-sample"]
    assert main([*argv, "--reliability", str(target)]) == 2
    err = capsys.readouterr().err
    assert f"--reliability {target}: a name without a suffix may be meant as a file or a" in err
    assert f"name the PNG {target}.png, or the folder {target}/ (the figure gets a" in err
    assert not target.exists()


def test_cli_figures_name_the_test_they_show(
    setup: dict, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 10-crop confusion matrix and reliability diagram say so in their titles, as their
    default file names do (a single-crop figure beside it had the same title)."""
    import resnetkit.evaluate.plots as plots

    titles: dict[str, str] = {}

    def keep_title(kind: str) -> object:
        def plot(*args: object) -> object:  # (..., path, title): the figure is not drawn
            titles[kind] = str(args[-1])
            return args[-2]

        return plot

    for kind in ("confusion", "reliability"):
        monkeypatch.setattr(plots, f"plot_{kind}", keep_title(kind))
    argv = ["--model", str(setup["model_dir"]), "--dataset", "cifar10"]
    argv += ["--data-dir", str(setup["data"]), "--confusion", str(setup["tmp"] / "c.png")]
    out = _run_cli(capsys, *argv, "--reliability", str(setup["tmp"] / "r.png"), "--ten-crop")
    assert titles["confusion"] == f"resnet20 on cifar10 test, 10-crop (top-1 {out['top1']:.2f}%)"
    assert titles["reliability"] == "resnet20 on cifar10 test, 10-crop"
    _run_cli(capsys, *argv)
    assert titles["confusion"].startswith("resnet20 on cifar10 test (top-1 ")


def test_cli_table(setup: dict, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["evaluate", "--model", str(setup["model_dir"]), "--dataset", "cifar10"]
    assert main([*args, "--data-dir", str(setup["data"])]) == 0
    text = capsys.readouterr().out
    assert "top-1  50.00%" in text and "ECE " in text
    assert "class9" in text


def test_ten_crop_matches_hand_computation(setup: dict) -> None:
    model, images, labels = setup["model"], setup["images"], setup["labels"]
    result = evaluate_model(load_model(setup["model_dir"]), "cifar10", setup["data"], ten_crop=True)
    padded = torch.nn.functional.pad(
        torch.from_numpy(images).permute(0, 3, 1, 2), (4, 4, 4, 4)
    ).permute(0, 2, 3, 1)
    x = _normalise(padded.numpy())
    views = ten_crop_views(x, 32)
    assert len(views) == 10 and all(v.shape == (N_IMAGES, 3, 32, 32) for v in views)
    torch.testing.assert_close(views[4], _normalise(images))  # the centre crop is the image
    torch.testing.assert_close(views[5], views[0].flip(-1))
    with torch.no_grad():
        probs = model(torch.cat(views)).softmax(1).view(10, N_IMAGES, 10).mean(0)
    pred = probs.argmax(1).numpy()
    assert result["count"] == N_IMAGES and result["ten_crop"]
    assert result["top1"] == pytest.approx(100.0 * np.mean(pred == labels))
    nll = -probs[torch.arange(N_IMAGES), torch.from_numpy(labels)].log().mean()
    assert result["loss"] == pytest.approx(float(nll), rel=1e-4)
    assert np.array(result["confusion"]).sum() == N_IMAGES
    # Averaging over crops moves the predictions only a little away from the single crop.
    assert np.mean(pred == setup["logits"].argmax(1).numpy()) >= 0.5


def test_a_model_given_by_its_path_is_loaded(setup: dict) -> None:
    """evaluate_model took a path as a model without a head ("nothing to evaluate"); predict
    takes one, and now evaluate_model too."""
    by_path = evaluate_model(str(setup["model_dir"]), "cifar10", setup["data"])
    loaded = evaluate_model(load_model(setup["model_dir"]), "cifar10", setup["data"])
    assert by_path["top1"] == loaded["top1"] == 50.0 and by_path["loss"] == loaded["loss"]
    with pytest.raises(ValueError, match="batch_size must be at least 1 .*got 0"):
        evaluate_model(setup["model_dir"], "cifar10", setup["data"], batch_size=0)


def test_class_mismatch_is_explained(setup: dict) -> None:
    model = create_model("resnet20", num_classes=5)
    with pytest.raises(ValueError, match="5 classes.*has 10"):
        evaluate_model(model, "cifar10", setup["data"])
    with pytest.raises(ValueError, match=r"the bundled cifar10-sample \(test\) has 10"):
        evaluate_model(model, "cifar10-sample", ".")  # it said "cifar10-sample test in ."


def test_label_map_names_both_sides_and_takes_the_callers_advice() -> None:
    """A command other than evaluate (quantize) says what to do in its own flags; evaluate's
    words stay the default."""
    data, model = ("a", "b"), ["x", "y", "z"]
    with pytest.raises(ValueError) as default:
        folders.label_map(data, 3, model, "folder data/val")
    assert str(default.value) == (
        "class mismatch: the model predicts 3 classes (x, y, z) but folder data/val has 2 "
        f"(a, b). {folders.EVALUATE_ADVICE}"
    )
    with pytest.raises(ValueError, match=r"has 2 \(a, b\)\. Pass --eval-dir DIR\.$") as own:
        folders.label_map(data, 3, model, "folder data/val", advice="Pass --eval-dir DIR.")
    assert "Evaluate on" not in str(own.value)
    with pytest.raises(ValueError, match=r"predicts 3 classes but folder d has 2"):
        folders.label_map(data, 3, [], "folder d")  # a model that names no classes


def test_bare_checkpoint_with_prefixes(
    setup: dict, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    state = {f"module.{k}": v for k, v in setup["model"].state_dict().items()}
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": state}, ckpt)
    loaded = load_model(ckpt, arch="resnet20")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), setup["model"](x))
    cfg = loaded.pretrained_cfg
    assert cfg["classes"] == [] and cfg["input_size"] == 32 and len(cfg["mean"]) == 3
    out = _run_cli(
        capsys,
        "--model", str(ckpt),
        "--arch", "resnet20",
        "--dataset", "cifar10",
        "--data-dir", str(setup["data"]),
    )  # fmt: skip
    assert out["count"] == N_IMAGES and 0.0 <= out["top1"] <= 100.0
    with pytest.raises(ValueError, match="--arch"):
        load_model(ckpt)


def _make_marker(path: str) -> None:
    Path(path).write_text("code ran")


class _Payload:
    """Unpickling this object would call ``_make_marker``: an arbitrary-code stand-in."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_make_marker, (str(self.marker),))


def test_unsafe_pickle_is_refused_without_running_code(
    setup: dict, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(probe)))  # plain unpickling does run the payload
    assert probe.exists()

    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": setup["model"].state_dict(), "extra": _Payload(marker)}, evil)
    with pytest.raises(ValueError, match="arbitrary unpickling") as err:
        load_model(evil, arch="resnet20")
    assert "safetensors" in str(err.value) and "_make_marker" in str(err.value)
    args = ["evaluate", "--model", str(evil), "--arch", "resnet20", "--dataset", "cifar10"]
    assert main([*args, "--data-dir", str(setup["data"])]) == 2
    assert "refuses it for safety" in capsys.readouterr().err
    assert not marker.exists()

    whole = tmp_path / "whole.pt"
    torch.save(setup["model"], whole)  # a pickled module, not a state dict
    with pytest.raises(ValueError, match="arbitrary unpickling"):
        load_model(whole, arch="resnet20")


def test_pixel_mean_model_dir(setup: dict, tmp_path: Path) -> None:
    model, images = setup["model"], setup["images"]
    pixel_mean = torch.from_numpy(images).permute(0, 3, 1, 2).float().mean(0) / 255.0
    model_dir = save_model_dir(
        model,
        tmp_path / "pm",
        arch="resnet20",
        classes=CLASSES,
        preprocessing={"input_size": 32, "pixel_mean": pixel_mean.flatten().tolist()},
    )
    result = evaluate_model(load_model(model_dir), "cifar10", setup["data"])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 - pixel_mean
    with torch.no_grad():
        pred = model(x).argmax(1).numpy()
    assert result["top1"] == pytest.approx(100.0 * np.mean(pred == setup["labels"]))
    ten = evaluate_model(load_model(model_dir), "cifar10", setup["data"], ten_crop=True)
    assert ten["count"] == N_IMAGES


def test_folder_dataset(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for name in ("cat", "dog"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / name / f"{i}.png")
    model = create_model("resnet20", num_classes=2)
    save_model_dir(
        model,
        tmp_path / "model",
        arch="resnet20",
        classes=["cat", "dog"],
        preprocessing={"input_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3},
    )
    loaded = load_model(tmp_path / "model")
    single = evaluate_model(loaded, "folder", tmp_path / "data")
    ten = evaluate_model(loaded, "folder", tmp_path / "data", ten_crop=True)
    for result in (single, ten):
        assert result["count"] == 6 and result["classes"] == ["cat", "dog"]
        assert np.array(result["confusion"]).sum() == 6
    assert ten["top5"] == 100.0  # two classes: always within the top 5
    # The layout finetune documents, DIR/train/<class> and DIR/val/<class>: without a test/,
    # the default split is refused, not read as the two "classes" train and val.
    split = tmp_path / "split"
    shutil.copytree(tmp_path / "data", split / "train")
    shutil.copytree(tmp_path / "data", split / "val")
    with pytest.raises(
        ValueError,
        match=r"has no test/ but holds the split folders \['train', "
        r"'val'\]: name the split to use, val \(--split val; for quantize --eval-split",
    ):
        evaluate_model(loaded, "folder", split)
    assert evaluate_model(loaded, "folder", split, split="val")["count"] == 6
    (split / "val").rename(split / "Validation")  # found whatever the case
    (split / "train").rename(split / "Training")
    assert evaluate_model(loaded, "folder", split, split="validation")["count"] == 6
    assert evaluate_model(loaded, "folder", split, split="val")["count"] == 6  # another name
    # Asked for the validation images of a folder of class folders: all are scored, and the
    # run says so (they may be the very images the model trained on).
    with pytest.warns(UserWarning, match=r"has no val/ folder, so --split val does not apply"):
        assert evaluate_model(loaded, "folder", tmp_path / "data", split="val")["count"] == 6
    # A test folder of some of the model's classes: scored by name, the others never seen.
    shutil.copytree(tmp_path / "data" / "dog", tmp_path / "dogs_only" / "dog")
    dogs = evaluate_model(loaded, "folder", tmp_path / "dogs_only")
    assert dogs["count"] == 3 and dogs["classes"] == ["cat", "dog"]
    assert dogs["per_class"]["cat"] is None and dogs["per_class"]["dog"] == dogs["top1"]
    # Other names altogether (ImageNet's wnid folders, say): compared by index, with a word
    # that says when that is right, and what to do when they are other classes altogether.
    other = tmp_path / "renamed"
    shutil.copytree(tmp_path / "data" / "cat", other / "n01")
    shutil.copytree(tmp_path / "data" / "dog", other / "n02")
    with pytest.warns(
        UserWarning, match=r"differ \(n01!=cat, n02!=dog\); labels are compared"
    ) as by:
        assert evaluate_model(loaded, "folder", other)["classes"] == ["n01", "n02"]
    said = next(str(w.message) for w in by if "labels are compared" in str(w.message))
    assert "right only if these are the model's classes in its order" in said
    assert said.endswith(f"the scores mean nothing. {folders.EVALUATE_ADVICE}")
    # A shared name at another position: by index "dog" would be scored as "cat".
    (other / "n01").rename(other / "zebra")
    (other / "n02").rename(other / "dog")
    unknown = r"has classes the model does not know: zebra \(the model's: cat, dog\)\. If"
    with pytest.raises(ValueError, match=unknown):
        evaluate_model(loaded, "folder", other)
    # A shared name in its place and another class: by index "horse" would be scored as "dog"
    # (it was, with a warning that the names differ).
    (other / "zebra").rename(other / "cat")
    (other / "dog").rename(other / "horse")
    with pytest.raises(ValueError, match=r"does not know: horse \(the model's: cat, dog\)"):
        evaluate_model(loaded, "folder", other)
    assert np.array(dogs["confusion"])[0].sum() == 0  # no cat row


def test_folder_is_seen_as_the_model_preprocessing_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shorter side to the model's resize (256, or torchvision V2's 232), then the centre 224
    crop: the field of view training validation, predict and the published numbers use."""

    rng = np.random.default_rng(2)
    for name in ("cat", "dog"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / name / f"{i}.png")
    seen: list[int] = []
    real = evaluator.folder_stream

    def spy(*args, load_size: int, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(load_size)
        return real(*args, load_size=load_size, **kwargs)

    monkeypatch.setattr(evaluator, "folder_stream", spy)
    model = create_model("resnet18", num_classes=2).eval()
    for resize, expected in ((232, 232), (None, 256)):
        model.pretrained_cfg = {"classes": ["cat", "dog"], "input_size": 224, "resize": resize}
        result = evaluate_model(model, "folder", tmp_path / "data", batch_size=4)
        assert seen[-1] == expected and result["count"] == 4
    crop = folders.center_crop(torch.arange(6 * 8).view(1, 1, 6, 8), 4)
    assert crop[0, 0, 0].tolist() == [10, 11, 12, 13]  # rows 1-4, columns 2-5


def test_grayscale_model_and_sample_ten_crop(setup: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    gray = create_model("resnet20", in_chans=1, num_classes=10).eval()
    result = evaluate_model(gray, "cifar10-sample", ".", batch_size=250)
    assert result["count"] == 500  # luminance in, not a channel-count error
    sample = evaluator.load_sample("test")
    # what it saw: Pillow's luma of each image, normalised by the averaged mean and std
    few = ArrayDataset(sample.images[:4], sample.labels[:4], sample.classes)
    monkeypatch.setattr(evaluator, "load_sample", lambda split: few)
    logits, _, _ = evaluator.collect_logits(gray, "cifar10-sample", ".")
    luma = np.stack([np.asarray(Image.fromarray(img).convert("L")) for img in few.images])
    cfg = preprocessing_of(gray)
    mean, std = sum(cfg["mean"]) / 3, sum(cfg["std"]) / 3
    x = (torch.from_numpy(luma).float().unsqueeze(1) / 255 - mean) / std
    with torch.no_grad():
        torch.testing.assert_close(logits, gray(x), atol=1e-4, rtol=1e-4)
    first = ArrayDataset(sample.images[:48], sample.labels[:48], sample.classes)
    monkeypatch.setattr(evaluator, "load_sample", lambda split: first)  # 10 crops x 48 images
    trained = load_model("resnet20.cifar10")
    ten = evaluate_model(trained, "cifar10-sample", ".", ten_crop=True, image_size=48)
    assert ten["count"] == 48 and ten["top1"] > 30  # resized crops: 52% here, chance 10%


def test_plot_confusion_png(tmp_path: Path) -> None:
    matrix = [[5, 1, 0], [2, 3, 1], [0, 0, 6]]
    path = plot_confusion(matrix, ["airplane", "automobile", "bird"], tmp_path / "a" / "c.png")
    assert path.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="shape"):
        plot_confusion(matrix, ["a", "b"], tmp_path / "bad.png")
    # Class names in a script the font lacks: one warning naming the characters, not one
    # per character per drawing.
    import matplotlib

    with (
        matplotlib.rc_context({"font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans"]}),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        plot_confusion(matrix, ["猫", "狗", "bird"], tmp_path / "cjk.png")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert "2 character(s) of its text are missing from the font (DejaVu Sans)" in messages[0]
    assert "show as boxes: 猫 狗. Install a font that has them (e.g. Noto Sans CJK" in messages[0]
    assert (tmp_path / "cjk.png").read_bytes().startswith(b"\x89PNG")


def test_unknown_model_name_is_explained(setup: dict) -> None:
    with pytest.raises(ValueError, match="not a model directory"):
        load_model("no_such_model")
    with pytest.raises(FileNotFoundError):
        load_model(setup["tmp"] / "missing.pt", arch="resnet20")


def test_evaluation_leaves_the_model_on_its_own_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model evaluated in the middle of training (on a GPU) must go on training there: it is
    moved to the evaluation device and back. Here its home is faked as 'meta'."""
    model = create_model("resnet20").train()
    moves: list[torch.device] = []
    real_to = model.to

    def to(device: torch.device) -> torch.nn.Module:
        moves.append(torch.device(device))
        return real_to(torch.device("cpu"))

    home = torch.empty(0, device="meta")
    monkeypatch.setattr(model, "to", to)
    monkeypatch.setattr(model, "parameters", lambda: iter([home]))
    with evaluator._evaluating(model, torch.device("cpu")):
        assert not model.training
    assert model.training and moves == [torch.device("cpu"), torch.device("meta")]
    moves.clear()
    monkeypatch.setattr(model, "parameters", lambda: iter([torch.empty(0)]))
    with evaluator._evaluating(model, torch.device("cpu")):
        pass
    assert moves == [torch.device("cpu")]  # already home: no second move


def test_precision_recall_f1_for_imbalanced_classes() -> None:
    """Worked by hand: a -> a x3, a -> b, b -> b x2, c -> a (c never predicted); d has no
    images. Precision a 3/4, b 2/3, c undefined; recall a 3/4, b 1, c 0."""
    from resnetkit.evaluate.metrics import ConfusionMeter

    pairs = [(0, 0)] * 3 + [(0, 1)] + [(1, 1)] * 2 + [(2, 0)]
    labels = torch.tensor([t for t, _ in pairs])
    logits = torch.nn.functional.one_hot(torch.tensor([p for _, p in pairs]), 4).float()
    meter = ConfusionMeter(4)
    meter.update(logits, labels)
    got = meter.summary(["a", "b", "c", "d"])
    assert got["precision"] == {"a": 75.0, "b": pytest.approx(200 / 3), "c": None, "d": None}
    assert got["recall"] == {"a": 75.0, "b": 100.0, "c": 0.0, "d": None}
    assert got["f1"] == {"a": 75.0, "b": pytest.approx(80.0), "c": 0.0, "d": None}
    assert got["macro_f1"] == pytest.approx((75 + 80 + 0) / 3)
    assert got["balanced_accuracy"] == pytest.approx((75 + 100 + 0) / 3)
    assert got["weighted_f1"] == pytest.approx((75 * 4 + 80 * 2) / 7)
    assert got["top1"] == pytest.approx(500 / 7)  # what top-1 alone says of the same model


def test_folders_are_decoded_batch_by_batch_as_the_in_memory_path_decodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder streams (a forward pass runs before the later files are even opened, so an
    ImageNet-sized folder needs no more memory than a batch), with the same pixels as
    decoding it all at once; undecodable files are named and left out."""
    from resnetkit.data.folder import ImageFolderDataset, load_folder_arrays

    rng = np.random.default_rng(3)
    for name in ("cat", "dog"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (150, 170 + 10 * i, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / name / f"{i}.png")
    (tmp_path / "data" / "dog" / "9_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n nope")
    model = create_model("resnet18", num_classes=2).eval()
    model.pretrained_cfg = {
        "classes": ["cat", "dog"], "input_size": 128, "mean": [0.5] * 3, "std": [0.25] * 3
    }  # fmt: skip
    events: list[str] = []
    real_getitem = ImageFolderDataset.__getitem__

    def getitem(self, index):  # noqa: ANN001, ANN202
        events.append("decode")
        return real_getitem(self, index)

    monkeypatch.setattr(ImageFolderDataset, "__getitem__", getitem)
    handle = model.register_forward_hook(lambda *_: events.append("forward"))
    with pytest.warns(UserWarning, match="9_broken.png"):
        logits, labels, classes = evaluator.collect_logits(
            model, "folder", tmp_path / "data", batch_size=2
        )
    handle.remove()
    assert events.index("forward") == 2 and events.count("decode") == 7
    assert classes == ["cat", "dog"] and labels.tolist() == [0, 0, 0, 1, 1, 1]
    # The pixels of the in-memory decoding: shorter side to 146 (128 / 0.875), centre crop.
    images, _, _, _ = load_folder_arrays(tmp_path / "data", 146)
    x = folders.center_crop(torch.from_numpy(images).permute(0, 3, 1, 2), 128)
    with torch.no_grad():
        expected = model((x.float() / 255 - 0.5) / 0.25)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    for path in (tmp_path / "data").rglob("[0-9].png"):
        path.write_bytes(b"")
    with pytest.raises(ValueError, match="no readable images"), pytest.warns(UserWarning):
        evaluate_model(model, "folder", tmp_path / "data")


def test_worker_processes_decode_a_folder_to_the_same_result(tmp_path: Path) -> None:
    """--num-workers: the same scores, and a broken file is still named (from a worker)."""
    rng = np.random.default_rng(4)
    for name in ("cat", "dog"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(5):
            pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / name / f"{i}.png")
    (tmp_path / "data" / "cat" / "broken.png").write_bytes(b"GIF89a nope")
    model = create_model("resnet20", num_classes=2).eval()
    model.pretrained_cfg = {"classes": ["cat", "dog"], "input_size": 32}
    results = []
    for workers in (0, 2):
        with pytest.warns(UserWarning, match="broken.png"):
            results.append(
                evaluate_model(
                    model, "folder", tmp_path / "data", batch_size=3, num_workers=workers
                )
            )
    serial, parallel = results
    assert serial["count"] == parallel["count"] == 10
    assert serial["loss"] == pytest.approx(parallel["loss"], rel=1e-6)
    assert serial["confusion"] == parallel["confusion"]


def test_folders_are_resized_with_the_models_interpolation(tmp_path: Path) -> None:
    """timm's weights say bicubic: evaluate resizes with it, as predict and timm do."""
    rng = np.random.default_rng(5)
    (tmp_path / "data" / "cat").mkdir(parents=True)
    pixels = rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "data" / "cat" / "0.png")
    model = create_model("resnet20", num_classes=1).eval()
    seen = {}
    for mode in ("bilinear", "bicubic"):
        model.pretrained_cfg = {"classes": ["cat"], "input_size": 32, "interpolation": mode}
        seen[mode], _, _ = evaluator.collect_logits(model, "folder", tmp_path / "data")
    resample = Image.Resampling.BICUBIC
    picture = Image.fromarray(pixels).resize((32, round(90 * 32 / 70)), resample)
    top = int(round((picture.height - 32) / 2.0))
    x = torch.from_numpy(np.asarray(picture.crop((0, top, 32, top + 32)))).permute(2, 0, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    with torch.no_grad():
        want = model(((x.float() / 255 - mean) / std)[None])
    torch.testing.assert_close(seen["bicubic"], want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(seen["bilinear"], want, atol=1e-5)
