"""Selective classification: the threshold, the bound, and models that answer unsure in
calibrate, predict, evaluate, serve, export and convert."""

from __future__ import annotations

import asyncio
import json
import math
from importlib import resources
from pathlib import Path

import httpx
import pytest
import torch

from resnetkit.cli.main import main
from resnetkit.evaluate.metrics import ConfusionMeter
from resnetkit.evaluate.selective import (
    accuracy_lower_bound,
    fit_min_confidence,
    selective_scores,
)
from resnetkit.models.loading import load_model
from resnetkit.models.model_dir import save_model_dir
from resnetkit.models.registry import create_model
from resnetkit.predict import predict

pytestmark = pytest.mark.usefixtures("one_thread")

ASSETS = [
    Path(str(resources.files("resnetkit.assets") / name))
    for name in ("cat.png", "automobile.png", "ship.png")
]


def test_the_threshold_answers_the_most_images_at_the_target() -> None:
    conf = torch.tensor([0.9, 0.8, 0.8, 0.7, 0.6])
    right = torch.tensor([True, True, False, True, False])
    # answering the 4 most confident: 3 right = 75%; all 5: 60%
    assert fit_min_confidence(conf, right, 0.75) == pytest.approx(0.7)
    # 2 of the first 2 are right, but the two 0.8s go together (2 of 3): only the 0.9 is left
    assert fit_min_confidence(conf, right, 0.8) == pytest.approx(0.9)
    assert fit_min_confidence(conf, right, 0.5) == pytest.approx(0.6)  # every image
    with pytest.raises(ValueError, match=r"makes 99% .* best is 40.00%, answering the 5 most"):
        fit_min_confidence(conf, ~right, 0.99)  # the most confident is wrong
    with pytest.raises(ValueError, match="a fraction in"):
        fit_min_confidence(conf, right, 99)
    shuffled = torch.randperm(5)
    assert fit_min_confidence(conf[shuffled], right[shuffled], 0.75) == pytest.approx(0.7)
    # 999 of 1000 right is 99.9%, though 99.9 / 100 rounds above 0.999
    many = torch.linspace(0.99, 0.5, 1000)
    hits = torch.ones(1000, dtype=torch.bool)
    hits[-1] = False
    assert fit_min_confidence(many, hits, 99.9 / 100) == pytest.approx(0.5)
    # only saturated answers reach it: a threshold of 1 answers nothing new; scale first
    with pytest.raises(ValueError, match="exactly 1 .* temperature scaling"):
        fit_min_confidence(torch.tensor([1.0, 1.0, 0.99]), torch.tensor([True, True, False]), 0.9)


def test_the_risk_coverage_curve_by_hand() -> None:
    from resnetkit.evaluate.selective import risk_coverage

    conf = torch.tensor([0.9, 0.8, 0.8, 0.7])
    right = torch.tensor([True, False, True, False])
    curve = risk_coverage(conf, right)
    # cuts after the 0.9, after both 0.8s, after all: 1/1, 2/3, 2/4 right
    assert curve["coverage"] == pytest.approx([25.0, 75.0, 100.0])
    assert curve["accuracy"] == pytest.approx([100.0, 200 / 3, 50.0])
    # error of the answers at 1..4 images answered: 0, then within the tie 1/4 (one right of
    # the two, spread evenly), 1/3, 1/2
    assert curve["aurc"] == pytest.approx(100 * (0 + 1 / 4 + 1 / 3 + 1 / 2) / 4)
    swapped = risk_coverage(conf, torch.tensor([True, True, False, False]))
    assert swapped["aurc"] == pytest.approx(curve["aurc"])  # ties' order means nothing
    half = risk_coverage(torch.full((10,), 0.5), torch.arange(10) < 5)
    assert half["aurc"] == pytest.approx(50.0) and half["coverage"] == [100.0]
    many = risk_coverage(torch.rand(5000), torch.rand(5000) < 0.9)
    assert len(many["coverage"]) == 200 and many["coverage"][-1] == 100.0


def test_the_lower_bound_by_hand() -> None:
    # all right: the rate p with p**n = 5% (Clopper-Pearson's closed form)
    assert accuracy_lower_bound(10, 10) == pytest.approx(0.05 ** (1 / 10), abs=1e-9)
    assert accuracy_lower_bound(0, 10) == 0.0 and math.isnan(accuracy_lower_bound(0, 0))
    # 9 of 10: at the bound, 9 or more successes have probability 5%
    low = accuracy_lower_bound(9, 10)
    tail = sum(math.comb(10, j) * low**j * (1 - low) ** (10 - j) for j in (9, 10))
    assert tail == pytest.approx(0.05, abs=1e-9) and 0.6 < low < 0.9
    assert accuracy_lower_bound(900, 1000) < 0.9 < accuracy_lower_bound(950, 1000)


def test_scores_and_the_meter_count_the_same_answers() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 4, generator=g) * 2
    labels = torch.randint(0, 4, (200,), generator=g)
    conf, top = logits.softmax(1).max(1)
    right = top == labels
    cut = float(conf.median())
    by_hand = selective_scores(conf, right, cut)
    assert by_hand["answered"] == int((conf >= cut).sum())
    assert by_hand["top1"] == pytest.approx(100 * float(right[conf >= cut].float().mean()))
    assert by_hand["unsure_top1"] == pytest.approx(100 * float(right[conf < cut].float().mean()))
    meter = ConfusionMeter(4, cut)
    for part in range(0, 200, 64):
        meter.update(logits[part : part + 64], labels[part : part + 64])
    assert meter.summary()["selective"] == pytest.approx(by_hand)
    assert "selective" not in ConfusionMeter(4).summary()
    # 0.9 is no float32: an image whose top probability is float32(0.9) < 0.9 is unsure in
    # predict's ranking and in the meter alike
    from resnetkit.predict import rank_classes

    probs = torch.tensor([[0.9, 0.1]])
    assert rank_classes(probs, ["a", "b"], 1, min_confidence=0.9)[0]["unsure"]
    meter = ConfusionMeter(2, 0.9)
    meter.update(probs.log(), torch.tensor([0]))
    assert meter.selective()["answered"] == 0
    assert selective_scores(probs[:, 0], torch.tensor([True]), 0.9)["answered"] == 0


def test_calibrate_chooses_it_and_every_consumer_answers_unsure_below_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "selective"
    argv = ["calibrate", "--model", "resnet20.cifar10", "--dataset", "cifar10-sample"]
    assert main([*argv, "--target-accuracy", "97", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    cut = report["min_confidence"]
    assert 0.3 < cut < 1 and report["fit_images"] == report["check_images"] == 250
    after, before = report["after"], report["before"]
    assert after["top1"] > before["top1"] and 0 < after["coverage"] < 100
    assert after["top1_lower_bound"] < after["top1"]
    meta = json.loads((out / "config.json").read_text())
    assert meta["task"] == {"multi_label": False, "min_confidence": cut}
    assert meta["metrics"]["test_top1"] == 91.53  # every image's scores are the model's
    assert "is marked unsure" in (out / "README.md").read_text()
    curve = tmp_path / "curve.png"
    assert main([*argv, "--target-accuracy", "97", "--curve", str(curve)]) == 0
    text = capsys.readouterr().out
    assert "answered" in text and f"risk-coverage curve: {curve}" in text and "AURC" in text
    assert curve.read_bytes().startswith(b"\x89PNG") and 0 < report["aurc"] < 10
    assert main([*argv, "--curve", str(curve)]) == 2  # a curve of what --target-accuracy does
    assert "add --target-accuracy" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a percentage, not a fraction
        main([*argv, "--target-accuracy", "0.97"])
    assert "a percentage between 1 and 100" in capsys.readouterr().err

    # predict: unsure exactly where the top probability is below it
    model = load_model(out)
    report_p = predict(model, ASSETS)
    for pred in report_p.predictions:
        assert pred["unsure"] == (pred["top_k"][0]["probability"] < cut)
    assert all(p["unsure"] for p in predict(model, ASSETS, min_confidence=0.9999).predictions)
    assert all("unsure" not in p for p in predict(model, ASSETS, min_confidence=0).predictions)
    assert "unsure" not in predict("resnet20.cifar10", ASSETS).predictions[0]
    with pytest.raises(ValueError, match="a probability in"):
        predict(model, ASSETS, min_confidence=1.0)
    capsys.readouterr()
    assert main(["predict", "--model", str(out), "--min-confidence", "0.9999", "--csv",
                 *map(str, ASSETS)]) == 0  # fmt: skip
    rows = capsys.readouterr().out.splitlines()
    assert rows[0] == "path,rank,class,probability,unsure" and rows[1].endswith(",1")
    assert (
        main(["predict", "--model", str(out), "--min-confidence", "0.9999", *map(str, ASSETS)]) == 0
    )
    assert "(unsure)" in capsys.readouterr().out

    # evaluate: coverage and accuracy of the answers, at the model's own or a given one
    assert main(["evaluate", "--model", str(out), "--dataset", "cifar10-sample", "--json"]) == 0
    chosen = json.loads(capsys.readouterr().out)["selective"]
    assert chosen["min_confidence"] == cut and chosen["top1"] > 91.53 - 5
    assert main(["evaluate", "--model", str(out), "--dataset", "cifar10-sample"]) == 0
    assert f"answered at min confidence {cut:.4g}" in capsys.readouterr().out
    argv_e = ["evaluate", "--model", "resnet20.cifar10", "--dataset", "cifar10-sample", "--json"]
    assert main([*argv_e, "--min-confidence", "0.5"]) == 0
    assert json.loads(capsys.readouterr().out)["selective"]["min_confidence"] == 0.5
    # chosen on single crops at 32 pixels: not applied to other views unless asked
    argv_o = ["evaluate", "--model", str(out), "--dataset", "cifar10-sample", "--json"]
    for views in (["--ten-crop"], ["--image-size", "40"]):
        with pytest.warns(UserWarning, match="single-view probabilities at its own input size"):
            assert main([*argv_o, *views]) == 0
        assert "selective" not in json.loads(capsys.readouterr().out)
    with pytest.warns(UserWarning, match="with --tta"):
        assert all("unsure" not in p for p in predict(model, ASSETS, tta=True).predictions)
    assert all(
        p["unsure"] for p in predict(model, ASSETS, tta=True, min_confidence=0.9999).predictions
    )

    # serve: unsure in the answers, the threshold in /metadata, ?min_confidence= for a request
    from resnetkit.serve import create_app

    app = create_app(out)

    async def scenario() -> tuple[dict[str, object], dict[str, object], dict[str, object]]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                files = {
                    "files": [("files", (p.name, p.read_bytes(), "image/png")) for p in ASSETS]
                }
                own = (await c.post("/predict", **files)).json()  # type: ignore[arg-type]
                none = (await c.post("/predict?min_confidence=0", **files)).json()  # type: ignore[arg-type]
                served = (await c.get("/metadata")).json()
                served["metrics_text"] = (await c.get("/metrics")).text
                return own, none, served

    own, none, served = asyncio.run(scenario())
    assert served["min_confidence"] == cut
    # counted by the model's own threshold, whatever a request asks: both requests count
    unsure_count = 2 * sum(p["unsure"] for p in report_p.predictions)
    assert f"resnetkit_images_unsure_total {float(unsure_count)}" in served["metrics_text"]
    for got, want in zip(own["predictions"], report_p.predictions, strict=True):  # type: ignore[call-overload]
        assert got["unsure"] == want["unsure"]
    assert all("unsure" not in p for p in none["predictions"])  # type: ignore[attr-defined]

    # an ONNX export carries it (not a float16 one, nor int8); convert keeps it, and a new
    # head or an adapted stem drops it
    from resnetkit.export.metadata import read_metadata

    onnx_file = tmp_path / "model.onnx"
    assert main(["export", "--model", str(out), "--format", "onnx", "--out", str(onnx_file)]) == 0
    from_file = predict(onnx_file, ASSETS).predictions
    assert [p["unsure"] for p in from_file] == [p["unsure"] for p in report_p.predictions]
    half = tmp_path / "half.onnx"
    assert (
        main(["export", "--model", str(out), "--format", "onnx", "--half", "--out", str(half)]) == 0
    )
    assert "min_confidence" not in read_metadata(half)
    capsys.readouterr()
    gray = tmp_path / "gray"
    assert main(["convert", str(out), "--arch", "resnet20", "--in-chans", "1", "--adapt-in-chans",
                 "--out", str(gray)]) == 0  # fmt: skip
    assert "task" not in json.loads((gray / "config.json").read_text())
    assert "not these adapted ones" in capsys.readouterr().out
    capsys.readouterr()
    copy = tmp_path / "converted"
    assert main(["convert", str(out), "--arch", "resnet20", "--out", str(copy)]) == 0
    assert json.loads((copy / "config.json").read_text())["task"]["min_confidence"] == cut
    model.reset_classifier(3)
    assert "min_confidence" not in model.pretrained_cfg  # type: ignore[operator]
    # temperature scaling changes the probabilities it was chosen on: the copy drops it
    scaled = tmp_path / "scaled"
    assert main(["calibrate", "--model", str(out), "--dataset", "cifar10-sample",
                 "--out", str(scaled)]) == 0  # fmt: skip
    assert "min_confidence (" in capsys.readouterr().err
    assert "task" not in json.loads((scaled / "config.json").read_text())


def test_min_confidence_is_for_one_class_an_image(tmp_path: Path) -> None:
    model = create_model("resnet20", num_classes=2)
    pre = {"input_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    with pytest.raises(ValueError, match="min_confidence is for models that pick one class"):
        save_model_dir(model, tmp_path / "a", arch="resnet20", classes=["a", "b"],
                       preprocessing=pre, multi_label=True, min_confidence=0.5)  # fmt: skip
    with pytest.raises(ValueError, match="a probability in"):
        save_model_dir(model, tmp_path / "b", arch="resnet20", classes=["a", "b"],
                       preprocessing=pre, min_confidence=1.0)  # fmt: skip
    assert not (tmp_path / "b").exists()  # refused before anything is written
    tagger = save_model_dir(model, tmp_path / "c", arch="resnet20", classes=["a", "b"],
                            preprocessing=pre, multi_label=True)  # fmt: skip
    with pytest.raises(ValueError, match="min_confidence is for models that pick one class"):
        predict(tagger, ASSETS, min_confidence=0.5)
    # a hand-edited config.json is checked by name
    meta = json.loads((tmp_path / "c" / "config.json").read_text())
    meta["task"] = {"multi_label": False, "min_confidence": 2}
    (tmp_path / "c" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="task.min_confidence must be a probability"):
        load_model(tmp_path / "c")


def test_an_onnx_export_gets_its_own_threshold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exported file (an int8 one, say) answers with its own probabilities: calibrate
    chooses its threshold on them and writes a copy of the file that carries it."""
    from resnetkit.export.metadata import read_metadata

    exported = tmp_path / "model.onnx"
    assert main(["export", "--model", "resnet20.cifar10", "--format", "onnx",
                 "--out", str(exported)]) == 0  # fmt: skip
    capsys.readouterr()
    out = tmp_path / "selective.onnx"
    argv = ["calibrate", "--model", str(exported), "--dataset", "cifar10-sample"]
    assert main([*argv, "--target-accuracy", "97", "--out", str(out), "--json"]) == 0
    cut = json.loads(capsys.readouterr().out)["min_confidence"]
    assert read_metadata(out)["min_confidence"] == cut
    assert read_metadata(out)["selective"]["target_accuracy"] == 97.0
    assert read_metadata(out)["classes"] == read_metadata(exported)["classes"]
    assert "min_confidence" not in read_metadata(exported)  # the source is left alone
    for pred in predict(out, ASSETS).predictions:
        assert pred["unsure"] == (pred["top_k"][0]["probability"] < cut)
    # a temperature has no place in an ONNX file; --out must be a new .onnx file
    assert main(argv) == 2
    assert "calibrate the model it was exported from" in capsys.readouterr().err
    for bad, said in ((out, "exists: give a new file"), (tmp_path / "folder", "NAME.onnx")):
        assert main([*argv, "--target-accuracy", "97", "--out", str(bad)]) == 2
        assert said in capsys.readouterr().err
    # a new folder on the way is made; a model directory is not named like a file
    deeper = tmp_path / "new" / "deeper" / "selective.onnx"
    assert main([*argv, "--target-accuracy", "97", "--out", str(deeper)]) == 0
    assert read_metadata(deeper)["min_confidence"] == cut
    own = ["calibrate", "--model", "resnet20.cifar10", "--dataset", "cifar10-sample"]
    assert main([*own, "--target-accuracy", "97", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "written as a model directory" in capsys.readouterr().err
