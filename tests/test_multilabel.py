"""Multi-label classification: label files with several classes an image, BCE training, mAP,
and prediction, evaluation, serving and export of the models."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from resnetkit.cli.main import main
from resnetkit.data.labels import read_label_file
from resnetkit.data.multilabel import (
    MultiLabelMeter,
    average_precision,
    label_sets,
    positive_weights,
    targets_for_model,
)
from resnetkit.data.transforms import MixCut
from resnetkit.evaluate.evaluator import evaluate_model
from resnetkit.models.loading import load_model
from resnetkit.models.model_dir import read_model_meta, save_model_dir
from resnetkit.models.registry import create_model
from resnetkit.predict import predict
from resnetkit.train.finetune import finetune
from resnetkit.train.recipe import load_recipe
from resnetkit.train.trainer import TrainSpec, train

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = {
    "epochs": 6,
    "batch_size": 16,
    "eval_every": 1,
    "num_threads": 1,
    "compile": False,
    "precision": "fp32",
    "lr": 0.05,
    "warmup_iters": 0,
    "ema_decay": 0,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 pictures: 'red' when the top half is red, 'blue' when the bottom half is blue (both,
    one or neither), as a label file with train/val/test rows."""
    root = tmp_path_factory.mktemp("tags")
    (root / "imgs").mkdir()
    rng = np.random.default_rng(0)
    rows = ["path,labels,split"]
    for i in range(96):
        red, blue = bool(rng.random() < 0.5), bool(rng.random() < 0.4)
        pixels = rng.normal(110, 25, (32, 32, 3))
        pixels[:16, :, 0] += 120 * red
        pixels[16:, :, 2] += 120 * blue
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            root / "imgs" / f"{i:03d}.png"
        )
        tags = "|".join(name for name, on in (("red", red), ("blue", blue)) if on)
        split = "train" if i < 64 else "val" if i < 80 else "test"
        rows.append(f"imgs/{i:03d}.png,{tags},{split}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("run") / "run"
    recipe = load_recipe("fast-cifar").override(RECIPE)
    return train(
        TrainSpec(
            model="resnet20", dataset="folder", data_dir=data, out=out, recipe=recipe,
            progress=False,
        )
    )  # fmt: skip


def _truth(data: Path, split: str) -> dict[str, set[str]]:
    with data.open() as handle:
        return {
            Path(row["path"]).name: set(filter(None, row["labels"].split("|")))
            for row in csv.DictReader(handle)
            if row["split"] == split
        }


# ----------------------------------------------------------------------------- label files
@pytest.mark.parametrize(
    ("cells", "classes", "keys"),
    [
        (["cat|dog", "dog", ""], ["cat", "dog"], ["cat|dog", "dog", ""]),
        (["haze primary", "primary", "clear  primary"], ["clear", "haze", "primary"],
         ["haze|primary", "primary", "clear|primary"]),  # Planet: spaces
        (["b; a", "a", "c"], ["a", "b", "c"], ["a|b", "a", "c"]),
        (['"10,2"', "2", "10"], ["2", "10"], ["2|10", "2", "10"]),  # numbers sorted as numbers
    ],
)  # fmt: skip
def test_multi_label_cells_become_label_sets(
    tmp_path: Path, cells: list[str], classes: list[str], keys: list[str]
) -> None:
    lines = ["image,tags", *(f"{i}.png,{cell}" for i, cell in enumerate(cells))]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match="not found"):
        table = read_label_file(tmp_path / "t.csv")
    assert table.multi_label
    assert [table.classes[label] for _, label in table.samples()] == keys
    names, targets = label_sets(table.classes)
    assert names == classes
    for key, row in zip(table.classes, targets.tolist(), strict=True):
        assert {names[i] for i, on in enumerate(row) if on} == set(filter(None, key.split("|")))


def test_label_file_header_and_pipes(tmp_path: Path) -> None:
    (tmp_path / "both.csv").write_text("path,label,labels\na.png,x,y\n")
    with pytest.raises(ValueError, match="both a label column .* and a multi-label one"):
        read_label_file(tmp_path / "both.csv")
    (tmp_path / "pipes.csv").write_text("path,label\na.png,cat|dog\nb.png,cat\n")
    with pytest.warns(UserWarning, match="name the column 'label' 'labels'"):
        table = read_label_file(tmp_path / "pipes.csv")
    assert not table.multi_label and table.classes == ("cat", "cat|dog")
    (tmp_path / "empty.csv").write_text("path,label\na.png,\n")  # single label: still refused
    with pytest.raises(ValueError, match="line 2: no label"):
        read_label_file(tmp_path / "empty.csv")


def test_targets_follow_the_model_classes() -> None:
    table = targets_for_model(["", "b", "a|b"], ["b", "c", "a"], "here")
    assert table.tolist() == [[0, 0, 0], [1, 0, 0], [1, 0, 1]]
    with pytest.raises(ValueError, match="here names d, which the model does not predict"):
        targets_for_model(["a|d"], ["a", "b"], "here")


# ----------------------------------------------------------------------------- metrics
def test_average_precision_by_hand() -> None:
    # ranks: + - + - : precision at the hits 1/1 and 2/3 -> (1 + 2/3) / 2
    scores = torch.tensor([0.9, 0.8, 0.7, 0.1])
    hits = torch.tensor([True, False, True, False])
    assert average_precision(scores, hits) == pytest.approx((1 + 2 / 3) / 2)
    # a tie between a hit and a miss counts as one threshold: precision 1/2 there
    tie = average_precision(torch.tensor([0.5, 0.5, 0.1]), torch.tensor([True, False, False]))
    assert tie == pytest.approx(0.5)
    assert average_precision(scores, torch.zeros(4, dtype=torch.bool)) is None


def test_meter_summary_by_hand() -> None:
    meter = MultiLabelMeter(3, threshold=0.5)
    logit = torch.logit
    # probabilities: image 0 -> a, b; image 1 -> b; image 2 -> nothing
    probs = torch.tensor([[0.9, 0.6, 0.2], [0.3, 0.7, 0.1], [0.4, 0.2, 0.3]])
    targets = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    meter.update(logit(probs[:2]), targets[:2])
    meter.update(logit(probs[2:]), targets[2:])
    out = meter.summary(["a", "b", "c"])
    assert out["count"] == 3
    # a: predicted on 0 (right); missed on 2. b: right on 0, wrong on 1. c: never, no positive
    assert out["precision"] == {"a": 100.0, "b": 50.0, "c": None}
    assert out["recall"] == {"a": 50.0, "b": 100.0, "c": None}
    assert out["f1"]["a"] == pytest.approx(200 / 3) and out["f1"]["c"] is None
    assert out["micro_f1"] == pytest.approx(200 * 2 / (3 + 3))  # tp 2, predicted 3, true 3
    assert out["macro_f1"] == pytest.approx(200 / 3)  # a and b both 2/3
    assert out["exact"] == pytest.approx(100 / 3)  # only image 0
    assert out["ap"] == {"a": 100.0, "b": pytest.approx(100 * 0.5), "c": None}
    assert out["map"] == pytest.approx(75.0)
    bce = torch.nn.functional.binary_cross_entropy(probs, targets)
    assert out["loss"] == pytest.approx(float(bce), rel=1e-5)
    assert out["support"] == {"a": 2, "b": 1, "c": 0}


def test_positive_weights_and_mixed_targets() -> None:
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    assert positive_weights(targets).tolist() == [3.0, 3.0, 1.0]  # c: no negative
    mix = MixCut(1.0, 0.0, 3)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 8, 8)
    _, mixed = mix(x, torch.zeros(4, dtype=torch.long), g, targets)
    params = mix.sample(4, 8, 8, torch.Generator().manual_seed(0))
    assert params is not None
    expected = targets * params.lam + targets[params.perm] * (1 - params.lam)
    assert torch.allclose(mixed, expected)


# ----------------------------------------------------------------------------- training
def test_training_learns_the_tags_and_saves_a_multi_label_model(trained: Any) -> None:
    rows = trained.history
    assert "train_exact" in rows[0] and "train_top1" not in rows[0]
    assert {"val_map", "val_micro_f1", "val_exact", "best_val_map"} <= rows[-1].keys()
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    assert trained.metrics["val_map"] > 95.0
    assert trained.metrics["val_micro_f1"] > 80.0
    meta = read_model_meta(trained.model_dir)
    assert meta["classes"] == ["blue", "red"]
    assert meta["task"] == {"multi_label": True, "threshold": 0.5}
    final = json.loads((trained.out / "final_metrics.json").read_text())
    assert set(final["ap"]["val"]) == {"blue", "red"} and "confusion" not in final
    assert "Multi-label" in (trained.model_dir / "README.md").read_text()
    assert "| val mAP on 16 images (%) |" in (trained.model_dir / "README.md").read_text()


def test_evaluate_predict_and_plot_a_multi_label_model(
    trained: Any, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = load_model(trained.model_dir)
    result = evaluate_model(model, "folder", data, split="test")
    assert result["multi_label"] and result["count"] == 16
    assert result["map"] > 95.0
    truth = _truth(data, "test")
    assert result["support"] == {c: sum(c in t for t in truth.values()) for c in ("blue", "red")}
    with pytest.raises(ValueError, match="10-crop and multi-scale"):
        evaluate_model(model, "folder", data, split="test", ten_crop=True)

    images = sorted(data.parent.glob("imgs/08*.png")) + sorted(data.parent.glob("imgs/09*.png"))
    report = predict(model, images, top_k=1)
    got = {Path(p["path"]).name: {t["class"] for t in p["labels"]} for p in report.predictions}
    right = sum(got[name] == truth[name] for name in truth)
    assert right >= 14  # of 16
    for pred in report.predictions:  # top_k ranks at least the labels
        assert {t["class"] for t in pred["labels"]} <= {t["class"] for t in pred["top_k"]}
        assert all(t["probability"] >= 0.5 for t in pred["labels"])
    strict = predict(model, images, threshold=0.999)
    assert sum(len(p["labels"]) for p in strict.predictions) < sum(
        len(p["labels"]) for p in report.predictions
    )
    single = create_model("resnet20")
    with pytest.raises(ValueError, match="threshold is for multi-label models"):
        predict(single, images[:1], threshold=0.5)

    assert main(["predict", "--model", str(trained.model_dir), str(images[0]), "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "path,rank,class,probability,predicted"
    assert {line.split(",")[2] for line in lines[1:] if line.endswith(",1")} == truth[
        images[0].name
    ]
    code = main(["evaluate", "--model", str(trained.model_dir), "--dataset", "folder",
                 "--data-dir", str(data), "--split", "test"])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0 and "multi-label" in text and "mAP" in text
    assert main(["plot", str(trained.out), "--out", str(trained.out / "p.png"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)["runs"]
    assert "best_val_map" in next(iter(summary.values()))


def test_single_and_multi_label_data_and_models_do_not_mix(trained: Any, data: Path) -> None:
    single = data.parent / "single.csv"
    single.write_text("path,label\nimgs/000.png,red\nimgs/001.png,blue\n")
    with pytest.raises(ValueError, match="one class an image: evaluate it on a label file"):
        evaluate_model(load_model(trained.model_dir), "folder", single)
    model = create_model("resnet20", num_classes=2)
    with pytest.raises(ValueError, match="lists several classes an image"):
        evaluate_model(model, "folder", data)
    recipe = load_recipe("fast-cifar").override({**RECIPE, "class_balance": "sampler"})
    with pytest.raises(ValueError, match="class_balance 'sampler'"):
        train(TrainSpec(model="resnet20", dataset="folder", data_dir=data,
                        out=data.parent / "x", recipe=recipe, progress=False))  # fmt: skip


def test_mixup_class_balance_and_streaming_train(data: Path, tmp_path: Path) -> None:
    recipe = load_recipe("fast-cifar").override(
        {**RECIPE, "epochs": 2, "mixup_alpha": 0.4, "class_balance": "loss",
         "label_smoothing": 0.1}
    )  # fmt: skip
    result = train(
        TrainSpec(model="resnet20", dataset="folder", data_dir=data, out=tmp_path / "a",
                  recipe=recipe, progress=False)
    )  # fmt: skip
    assert np.isfinite(result.history[-1]["train_loss"]) and "val_map" in result.metrics
    streamed = load_recipe("fast-cifar").override({**RECIPE, "epochs": 1, "augment": "imagenet"})
    result = train(
        TrainSpec(model="resnet20", dataset="folder", data_dir=data, out=tmp_path / "b",
                  recipe=streamed, progress=False, image_size=32)
    )  # fmt: skip
    run = json.loads((tmp_path / "b" / "run.json").read_text())
    assert run["streaming"] and read_model_meta(result.model_dir)["task"]["multi_label"]


def test_finetune_a_single_label_model_into_a_multi_label_one(data: Path, tmp_path: Path) -> None:
    source = save_model_dir(
        create_model("resnet20"), tmp_path / "src", arch="resnet20",
        classes=[str(i) for i in range(10)],
        preprocessing={"input_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3},
    )  # fmt: skip
    recipe = load_recipe("finetune").override({**RECIPE, "epochs": 2, "augment": "crop_flip"})
    result = finetune(source, data, tmp_path / "ft", recipe=recipe, progress=False)
    assert result.report["multi_label"] and result.report["map"] is not None
    assert set(result.report["per_class_ap"]) == {"blue", "red"}
    assert Path(result.report["pr_curves_png"]).read_bytes().startswith(b"\x89PNG")
    assert read_model_meta(result.train.model_dir)["classes"] == ["blue", "red"]


# ----------------------------------------------------------------------------- model dirs
def test_model_dir_task_is_checked(trained: Any, tmp_path: Path) -> None:
    meta = read_model_meta(trained.model_dir)
    for task, message in (
        ({"multi_label": "yes"}, "true/false multi_label"),
        ({"multi_label": True, "threshold": 1.5}, "task.threshold must be a probability"),
    ):
        broken = tmp_path / f"m{len(message)}"
        broken.mkdir()
        (broken / "model.safetensors").write_bytes(
            (trained.model_dir / "model.safetensors").read_bytes()
        )
        (broken / "config.json").write_text(json.dumps({**meta, "task": task}))
        with pytest.raises(ValueError, match=message):
            load_model(broken)


def test_serve_and_onnx_export_keep_the_threshold(trained: Any, data: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from resnetkit.export.exporter import export_model
    from resnetkit.serve import create_app

    model = load_model(trained.model_dir)
    image = data.parent / "imgs" / "090.png"
    expected = predict(model, [image], top_k=2).predictions[0]
    export_model(model, "onnx", tmp_path / "m.onnx")
    from_onnx = predict(tmp_path / "m.onnx", [image], top_k=2).predictions[0]
    assert [t["class"] for t in from_onnx["labels"]] == [t["class"] for t in expected["labels"]]

    app = create_app(trained.model_dir)

    async def scenario() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                body = image.read_bytes()
                png = {"content-type": "image/png"}
                return [
                    await c.get("/metadata"),
                    await c.post("/predict?top_k=2", content=body, headers=png),
                    await c.post("/predict?threshold=0.9999", content=body, headers=png),
                ]

    meta, answer, strict = asyncio.run(scenario())
    assert meta.json()["multi_label"] is True and meta.json()["threshold"] == 0.5
    pred = answer.json()["predictions"][0]
    assert [t["class"] for t in pred["labels"]] == [t["class"] for t in expected["labels"]]
    assert pred["labels"][0]["probability"] == pytest.approx(
        expected["labels"][0]["probability"], abs=1e-5
    )
    assert len(strict.json()["predictions"][0]["labels"]) <= len(pred["labels"])

    single = create_app(save_model_dir(
        create_model("resnet20", num_classes=2), tmp_path / "one", arch="resnet20",
        classes=["a", "b"], preprocessing={"input_size": 32},
    ))  # fmt: skip

    async def refused() -> httpx.Response:
        async with single.router.lifespan_context(single):
            transport = httpx.ASGITransport(app=single)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                png = {"content-type": "image/png"}
                buffer = io.BytesIO()
                Image.new("RGB", (32, 32)).save(buffer, format="PNG")
                return await c.post("/predict?threshold=0.5", content=buffer.getvalue(),
                                    headers=png)  # fmt: skip

    answer = asyncio.run(refused())
    assert answer.status_code == 400 and answer.json()["error"] == "not_multi_label"


# ----------------------------------------------------------------------------- review fixes
def test_f1_counts_false_positives_of_a_class_without_positives() -> None:
    meter = MultiLabelMeter(2)
    # a: right on both images; b: no positive, predicted on image 0 (a false positive)
    meter.update(torch.tensor([[5.0, 5.0], [5.0, -5.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    out = meter.summary(["a", "b"])
    # as scikit-learn's f1_score: 2TP / (2TP + FP + FN) = 0 for b, in the macro mean
    assert out["f1"] == {"a": 100.0, "b": 0.0} and out["precision"]["b"] == 0.0
    assert out["macro_f1"] == pytest.approx(50.0)
    assert out["recall"]["b"] is None and out["ap"]["b"] is None


def test_tied_probabilities_rank_every_label_once() -> None:
    from resnetkit.predict import rank_classes

    probs = torch.tensor([[0.6, 0.6, 0.6, 0.1]])
    (ranking,) = rank_classes(probs, ["a", "b", "c", "d"], 2, 0.5)
    ranked = [t["index"] for t in ranking["top_k"]]
    assert sorted(ranked) == [0, 1, 2]  # each label once, whichever order topk picks for ties
    assert {t["index"] for t in ranking["labels"]} == {0, 1, 2}


def test_a_split_without_positives_is_logged_and_counts_as_zero(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tags = ["red", "blue", "red|blue", ""] * 4
    rows = ["path,labels,split", *(f"imgs/{i:03d}.png,{t},train" for i, t in enumerate(tags))]
    rows += [f"imgs/{i:03d}.png,,val" for i in range(64, 68)]  # no val image has a class
    (data.parent / "noval.csv").write_text("\n".join(rows) + "\n")
    recipe = load_recipe("fast-cifar").override({**RECIPE, "epochs": 1})
    result = train(
        TrainSpec(model="resnet20", dataset="folder", data_dir=data.parent / "noval.csv",
                  out=data.parent / "noval", recipe=recipe, progress=False, log_epochs=True)
    )  # fmt: skip
    row = result.history[-1]
    assert row["val_map"] is None and row["best_val_map"] == 0.0
    assert "val_map -," in capsys.readouterr().err


def test_multi_label_files_hold_out_a_tenth_of_the_images(tmp_path: Path) -> None:
    from resnetkit.data.folder import folder_splits

    rng = np.random.default_rng(0)
    rows = ["path,labels"]
    for i in range(200):  # 8 classes: ~100 label sets, most of one or two images
        rows.append(f"{i}.png," + "|".join(f"c{j}" for j in range(8) if rng.random() < 0.3))
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    with pytest.warns(UserWarning, match="not found"):
        train_rows, val_rows, classes = folder_splits(tmp_path / "t.csv", 0.1, 0)
    assert 19 <= len(val_rows) <= 21 and len(train_rows) + len(val_rows) == 200
    assert {p for p, _ in train_rows}.isdisjoint(p for p, _ in val_rows)
    names, table = label_sets(classes)
    held = table[[label for _, label in val_rows]].sum(0)
    every = table[[label for _, label in train_rows + val_rows]].sum(0)
    # a tenth of each class (a random tenth: about 2.3 images off, one standard deviation)
    assert ((held - every / 10).abs() <= 1.5).all(), (held, every)
    with pytest.warns(UserWarning, match="not found"):
        again = folder_splits(tmp_path / "t.csv", 0.1, 0)
    assert again[1] == val_rows


def test_a_rare_class_is_held_out_in_proportion() -> None:
    from resnetkit.data.multilabel import stratified_hold_out

    # 100 images; "rare" on 10 of them (ids 0, 10, ...), "common" on every other one
    sets = [([0] if i % 10 == 0 else []) + ([1] if i % 2 else []) for i in range(100)]
    for seed in range(5):
        held = stratified_hold_out(sets, 0.1, seed)
        assert len(held) == 10
        assert sum(0 in sets[i] for i in held) == 1  # a random tenth misses it a third of the time
        assert sum(1 in sets[i] for i in held) == 5
    assert stratified_hold_out(sets, 0.1, 0) == stratified_hold_out(sets, 0.1, 0)
    assert stratified_hold_out([[0], [0]], 0.1, 0) != set()  # one of two
    assert len(stratified_hold_out([[0], [1]], 0.9, 0)) == 1  # never all
    assert stratified_hold_out([[0]], 0.5, 0) == set()


def test_calibrate_quantize_explain_and_evaluate_figures_of_a_multi_label_model(
    trained: Any, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from resnetkit.evaluate.calibration import calibrate
    from resnetkit.explain import grad_cam

    model = load_model(trained.model_dir)
    with pytest.raises(ValueError, match="multi-label .* use calibrate_thresholds"):
        calibrate(model, "folder", data, split="val")

    image = data.parent / "imgs" / "090.png"
    expected = predict(model, [image], top_k=2).predictions[0]["top_k"][0]
    from resnetkit.predict import Preprocessing, image_batches

    (_, x), *_ = image_batches([image], Preprocessing.of(model), 1, [])
    _, cls, prob = grad_cam(model, x)
    assert cls == expected["index"]
    assert prob == pytest.approx(expected["probability"], abs=1e-5)  # sigmoid, not softmax

    import resnetkit.evaluate.evaluator as evaluator

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("evaluated before refusing --confusion")

    monkeypatch.setattr(evaluator, "evaluate_model", never)
    code = main(["evaluate", "--model", str(trained.model_dir), "--dataset", "folder",
                 "--data-dir", str(data), "--split", "test",
                 "--confusion", str(tmp_path / "c.png")])  # fmt: skip
    assert code == 2 and "no confusion matrix" in capsys.readouterr().err
    monkeypatch.undo()

    pytest.importorskip("onnxruntime")
    from resnetkit.export.metadata import read_metadata
    from resnetkit.export.quantize import quantize_model

    report = quantize_model(
        model, tmp_path / "m.int8.onnx", calibration_dataset="folder", method="dynamic",
        eval_dataset="folder", eval_dir=data, eval_split="test",
    )  # fmt: skip
    acc = report.accuracy
    assert {"map", "micro_f1", "exact", "count"} <= acc["int8"].keys() and "map_drop" in acc
    assert acc["int8"]["count"] == 16 and abs(acc["map_drop"]) <= 5.0
    meta = read_metadata(tmp_path / "m.int8.onnx")
    assert set(meta["metrics"]) == {"test_map", "test_micro_f1"} and meta["multi_label"]


def test_convert_keeps_the_task_of_a_multi_label_model(
    trained: Any, data: Path, tmp_path: Path
) -> None:
    from resnetkit.interop.convert import convert_checkpoint

    _, out = convert_checkpoint(trained.model_dir, "resnet20", tmp_path / "copy")
    assert read_model_meta(out)["task"] == {"multi_label": True, "threshold": 0.5}
    image = data.parent / "imgs" / "090.png"  # the same labels from the copy
    same = [predict(m, [image]).predictions[0]["labels"] for m in (trained.model_dir, out)]
    assert same[0] == same[1] and same[0]
    tagger = save_model_dir(
        create_model("resnet18", num_classes=2), tmp_path / "r18", arch="resnet18",
        classes=["a", "b"], preprocessing={"input_size": 64}, multi_label=True, threshold=0.3,
    )  # fmt: skip
    report, _ = convert_checkpoint(tagger, "resnet18", tmp_path / "w.safetensors",
                                   target="torchvision")  # fmt: skip
    assert any("multi-label" in note and "from 0.3" in note for note in report.notes)


def test_a_labels_column_with_one_class_an_image_is_pointed_out(tmp_path: Path) -> None:
    (tmp_path / "one.csv").write_text("path,labels\na.png,cat\nb.png,dog\n")
    with pytest.warns(UserWarning, match="every image exactly one class.* rename it 'label'"):
        assert read_label_file(tmp_path / "one.csv").multi_label
    # one class on every image: no negatives to learn from (and 'label' would not train either)
    (tmp_path / "all.csv").write_text("path,labels\na.png,cat\nb.png,cat\n")
    with pytest.warns(UserWarning, match="every image has the one class 'cat'.*empty cell") as seen:
        read_label_file(tmp_path / "all.csv")
    assert not any("rename" in str(w.message) for w in seen)
    (tmp_path / "neg.csv").write_text("path,label\na.png,--5\nb.png,1\nc.png,-2\n")
    with pytest.warns(UserWarning, match="not found"):  # "--5" is a name, not a number
        assert read_label_file(tmp_path / "neg.csv").classes == ("--5", "-2", "1")


def test_hugging_face_problem_type_both_ways(tmp_path: Path) -> None:
    from resnetkit.interop.convert import convert_checkpoint

    tagger = save_model_dir(
        create_model("resnet18", num_classes=2), tmp_path / "r18", arch="resnet18",
        classes=["a", "b"], preprocessing={"input_size": 64}, multi_label=True,
    )  # fmt: skip
    _, hf = convert_checkpoint(tagger, "resnet18", tmp_path / "hf", target="huggingface")
    config = json.loads((hf / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    _, back = convert_checkpoint(hf, "resnet18", tmp_path / "back")
    assert read_model_meta(back)["task"] == {"multi_label": True, "threshold": 0.5}
    assert load_model(hf).pretrained_cfg["multi_label"] is True  # the Hub folder, read as is
    plain = save_model_dir(
        create_model("resnet18", num_classes=2), tmp_path / "p18", arch="resnet18",
        classes=["a", "b"], preprocessing={"input_size": 64},
    )  # fmt: skip
    _, hf_plain = convert_checkpoint(plain, "resnet18", tmp_path / "hfp", target="huggingface")
    assert "problem_type" not in json.loads((hf_plain / "config.json").read_text())


def test_evaluate_at_another_threshold(trained: Any, data: Path) -> None:
    model = load_model(trained.model_dir)
    own = evaluate_model(model, "folder", data, split="test")
    strict = evaluate_model(model, "folder", data, split="test", threshold=0.999)
    assert strict["threshold"] == 0.999 and own["threshold"] == 0.5
    assert strict["map"] == pytest.approx(own["map"])  # AP does not depend on it
    predicted = sum(v is not None for v in strict["precision"].values())
    assert strict["micro_f1"] < own["micro_f1"] or predicted < 2
    with pytest.raises(ValueError, match="threshold is for multi-label models"):
        evaluate_model(create_model("resnet20"), "cifar10-sample", "", threshold=0.5)


def test_fit_thresholds_by_hand() -> None:
    from resnetkit.data.multilabel import fit_thresholds

    # class 0: positives at 0.9 and 0.4, negatives at 0.6 and 0.1 -> best F1 (0.8) predicting
    # the top three (0.9, 0.6, 0.4): threshold between 0.4 and 0.1, i.e. 0.25.
    # class 1: no positive -> the default. class 2: every image positive -> predict them all
    # (half the lowest probability); midpoints above 0.95 (between 0.999 and 0.998...) unused
    probs = torch.tensor(
        [[0.9, 0.2, 0.999], [0.6, 0.3, 0.998], [0.4, 0.1, 0.997], [0.1, 0.2, 0.996]]
    )
    targets = torch.tensor([[1.0, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]])
    cuts = fit_thresholds(probs, targets, 0.5)
    assert cuts[0] == pytest.approx(0.25) and cuts[1] == 0.5
    assert cuts[2] == pytest.approx(0.498)
    low = fit_thresholds(torch.tensor([[0.02], [0.01]]), torch.tensor([[1.0], [0.0]]), 0.4)
    assert low == [0.4]  # every midpoint below 0.05: the default
    assert fit_thresholds(probs, targets, [0.3, 0.7, 0.6])[1] == 0.7


def test_per_class_thresholds_from_calibrate(
    trained: Any, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from resnetkit.predict import rank_classes

    out = tmp_path / "cal"
    code = main(["calibrate", "--model", str(trained.model_dir), "--dataset", "folder",
                 "--data-dir", str(data), "--split", "val", "--out", str(out),
                 "--json"])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fit_images"] == 8 and report["check_images"] == 8
    assert report["after"]["map"] == pytest.approx(report["before"]["map"])
    meta = read_model_meta(out)
    assert meta["task"]["threshold"] == report["thresholds"] and len(report["thresholds"]) == 2
    assert meta["provenance"]["calibrated_from"] == str(trained.model_dir)
    model = load_model(out)
    result = evaluate_model(model, "folder", data, split="test")
    assert result["threshold"] == report["thresholds"]
    assert main(["evaluate", "--model", str(out), "--dataset", "folder", "--data-dir",
                 str(data), "--split", "test"]) == 0  # fmt: skip
    assert "at threshold per class" in capsys.readouterr().out
    # a per-class threshold decides each class on its own
    ranked = rank_classes(torch.tensor([[0.3, 0.6]]), ["a", "b"], 1, [0.2, 0.7])
    assert [t["class"] for t in ranked[0]["labels"]] == ["a"]
    broken = json.loads((out / "config.json").read_text())
    broken["task"]["threshold"] = [0.5]
    (out / "config.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="or one for each of the 2 classes"):
        load_model(out)


def test_precision_recall_curves(
    trained: Any, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from resnetkit.data.multilabel import precision_recall

    curve = precision_recall(torch.tensor([0.9, 0.8, 0.8, 0.1]), torch.tensor([1, 0, 1, 0]) > 0)
    assert curve is not None
    precision, recall = curve  # thresholds 0.9, 0.8 (a tie: both count), 0.1
    assert precision.tolist() == pytest.approx([1.0, 2 / 3, 0.5])
    assert recall.tolist() == [0.5, 1.0, 1.0]
    png = tmp_path / "figs" / "pr.png"
    code = main(["evaluate", "--model", str(trained.model_dir), "--dataset", "folder",
                 "--data-dir", str(data), "--split", "test", "--pr-curves", str(png),
                 "--json"])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["pr_curves_png"] == str(png) and "pr_curves" not in result
    assert png.read_bytes().startswith(b"\x89PNG")
    final = json.loads((trained.out / "final_metrics.json").read_text())
    val = final["pr_curves"]["val"]
    assert set(val["classes"]) == {"blue", "red"} and val["micro"]["recall"][-1] == 1.0
    single = save_model_dir(
        create_model("resnet20", num_classes=2), tmp_path / "one", arch="resnet20",
        classes=["a", "b"], preprocessing={"input_size": 32},
    )  # fmt: skip
    code = main(["evaluate", "--model", str(single), "--dataset", "folder", "--data-dir",
                 str(data), "--pr-curves", str(tmp_path / "x.png")])  # fmt: skip
    assert code == 2 and "--pr-curves is for multi-label models" in capsys.readouterr().err


def test_fitted_thresholds_predict_the_images_they_scored() -> None:
    from resnetkit.data.multilabel import fit_thresholds, threshold_tensor
    from resnetkit.predict import rank_classes

    # Two neighbouring float32 probabilities, a positive just above a negative: their midpoint
    # rounds (to even) onto the negative's probability in float32, where the meter, predict
    # and serve compare; the threshold must still leave the negative out.
    for low in (0.25, 0.3):
        below = torch.tensor(low, dtype=torch.float32)
        above = torch.nextafter(below, torch.tensor(1.0))
        probs = torch.stack([above, below]).view(2, 1)
        (cut,) = fit_thresholds(probs, torch.tensor([[1.0], [0.0]]), 0.5)
        assert below.item() < cut <= above.item()
        assert (probs >= threshold_tensor([cut], 1)).view(-1).tolist() == [True, False]
        ranked = rank_classes(probs.view(2, 1), ["a"], 1, [cut])  # as predict and serve do
        assert [len(r["labels"]) for r in ranked] == [1, 0]


def test_calibrate_thresholds_needs_a_multi_label_label_file() -> None:
    from resnetkit.evaluate.calibration import calibrate_thresholds

    model = create_model("resnet20", num_classes=10)
    model.pretrained_cfg = {"multi_label": True}
    with pytest.raises(ValueError, match="cifar10-sample has one class an image"):
        calibrate_thresholds(model, "cifar10-sample", ".")


def test_a_list_threshold_follows_the_head_not_the_class_names(tmp_path: Path) -> None:
    from resnetkit.data.multilabel import model_threshold
    from resnetkit.interop.convert import convert_checkpoint
    from resnetkit.predict import rank_classes

    def tagger(out: Path, threshold: Any, classes: list[str]) -> Path:
        return save_model_dir(
            create_model("resnet18", num_classes=2), out, arch="resnet18", classes=classes,
            preprocessing={"input_size": 64}, multi_label=True, threshold=threshold,
        )  # fmt: skip

    unnamed = tagger(tmp_path / "unnamed", [0.3, 0.7], [])  # classes unnamed: still 2 outputs
    assert model_threshold(load_model(unnamed)) == [0.3, 0.7]
    with pytest.raises(ValueError, match="threshold: 1 per-class thresholds for a 2-class"):
        tagger(tmp_path / "short", [0.3], ["a", "b"])
    assert not (tmp_path / "short").exists()
    source = tagger(tmp_path / "r18", [0.3, 0.7], ["a", "b"])
    # a new head (another class count) does not keep the old head's thresholds
    report, out = convert_checkpoint(
        source, "resnet18", tmp_path / "three", num_classes=3, adapt_head=True
    )
    assert read_model_meta(out)["task"] == {"multi_label": True, "threshold": 0.5}
    assert any("per-class thresholds" in note for note in report.notes)
    report, _ = convert_checkpoint(source, "resnet18", tmp_path / "hf", target="huggingface")
    assert any("no place for the threshold (per class" in note for note in report.notes)
    model = load_model(source)
    model.reset_classifier(3)
    assert model_threshold(model) == 0.5
    with pytest.raises(ValueError, match="2 per-class thresholds for 3 classes"):
        rank_classes(torch.rand(1, 3), ["a", "b", "c"], 1, [0.3, 0.7])


def test_pr_figure_steps_enclose_the_average_precision() -> None:
    from resnetkit.data.multilabel import _curve_points, precision_recall
    from resnetkit.evaluate.plots import pr_steps

    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    positives = torch.tensor([0, 0, 1, 0, 1, 1]) > 0  # the top two are negatives
    curve = precision_recall(scores, positives)
    assert curve is not None
    recall, precision = pr_steps(_curve_points(curve))
    area = sum((recall[i] - recall[i - 1]) * precision[i] for i in range(1, len(recall)))
    assert area == pytest.approx(average_precision(scores, positives))
    assert recall[0] == 0.0 and pr_steps({"recall": [], "precision": []}) == ([], [])


def test_pr_curves_of_a_split_without_positives(
    trained: Any, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = sorted((data.parent / "imgs").glob("*.png"))
    rows = ["path,labels,split", f"{images[0]},red|blue,train"]
    rows += [f"{image},,test" for image in images[1:5]]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    png = tmp_path / "pr.png"
    code = main(["evaluate", "--model", str(trained.model_dir), "--dataset", "folder",
                 "--data-dir", str(tmp_path / "labels.csv"), "--split", "test",
                 "--pr-curves", str(png), "--json"])  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["map"] is None and "pr_curves_png" not in result and not png.exists()
    assert "no precision-recall curve to draw" in captured.err


def test_a_label_file_without_splits_is_used_whole_and_said_so(trained: Any, data: Path) -> None:
    rows = data.read_text().splitlines()
    flat = data.parent / "flat.csv"  # the same rows, without the split column
    flat.write_text("\n".join(",".join(line.split(",")[:2]) for line in rows) + "\n")
    with pytest.warns(UserWarning, match="has no split column, so split 'val' does not apply"):
        code = main(["calibrate", "--model", str(trained.model_dir), "--dataset", "folder",
                     "--data-dir", str(flat), "--split", "val", "--json"])  # fmt: skip
    assert code == 0


def test_two_process_ddp_multi_label(data: Path, tmp_path: Path) -> None:
    """torchrun with 2 CPU processes: each process makes the same label-set table, the epoch
    sums (exact matches) are the two halves' and the weights stay in sync."""
    import os
    import subprocess

    from tests.test_train import torchrun_train

    out = tmp_path / "ddp"
    options = ["--dataset", "folder", "--recipe", "fast-cifar", "--batch-size", "16",
               "--warmup-iters", "0", "--ema-decay", "0", "--eval-every", "1"]  # fmt: skip
    cmd = torchrun_train(data, out, 2, *options)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["world_size"] for r in rows] == [2, 2]  # the ranks' weights agreed each epoch
    assert rows[-1]["step"] == 8  # 64 training images, 8 per process per step
    assert "train_exact" in rows[-1] and rows[-1]["val_map"] is not None
    assert read_model_meta(out / "model")["task"]["multi_label"]


def test_a_one_class_tagger(data: Path, tmp_path: Path) -> None:
    """A labels column with one class, present on some images and absent on the others: a
    yes/no tagger (one sigmoid), scored by that class's AP."""
    rows = [line.split(",") for line in data.read_text().splitlines()]
    only_red = [rows[0]] + [[p, "red" if "red" in tags else "", s] for p, tags, s in rows[1:]]
    tagger = data.parent / "red.csv"
    tagger.write_text("\n".join(",".join(r) for r in only_red) + "\n")
    recipe = load_recipe("fast-cifar").override({**RECIPE, "epochs": 3})
    result = train(TrainSpec(model="resnet20", dataset="folder", data_dir=tagger,
                             out=tmp_path / "red", recipe=recipe, progress=False))  # fmt: skip
    assert read_model_meta(result.model_dir)["classes"] == ["red"]
    assert result.metrics["val_map"] > 90.0
    reds = predict(result.model_dir, [data.parent / "imgs" / "090.png"]).predictions[0]
    assert len(reds["top_k"]) == 1 and reds["top_k"][0]["class"] == "red"
    nothing = data.parent / "none.csv"
    nothing.write_text("path,labels\nimgs/000.png,\nimgs/001.png,\n")
    with pytest.raises(ValueError, match="names no class in its labels column"):
        train(TrainSpec(model="resnet20", dataset="folder", data_dir=nothing,
                        out=tmp_path / "none", recipe=recipe, progress=False))  # fmt: skip


@pytest.mark.parametrize("column", ["label", "labels"])
def test_classes_that_differ_only_in_case_are_pointed_out(tmp_path: Path, column: str) -> None:
    (tmp_path / "c.csv").write_text(f"path,{column}\na.png,Cat\nb.png,cat\nc.png,dog\n")
    with pytest.warns(UserWarning, match="the classes 'Cat' and 'cat' differ only in case"):
        table = read_label_file(tmp_path / "c.csv")
    assert len(table.classes) == 3


def test_info_of_a_model_directory(trained: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(trained.model_dir)]) == 0
    text = capsys.readouterr().out
    assert "resnet20: 20 layers" in text and "logits   [1, 2]" in text
    assert "classes         blue, red" in text
    assert "task            multi-label: a sigmoid per class, threshold 0.5" in text
    assert "train_seconds" not in text and "val_map" in text
    assert main(["info", str(trained.model_dir), "--json", "--input-size", "64"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["input_size"] == 64 and card["params"] == sum(
        p.numel() for p in load_model(trained.model_dir).parameters()
    )
    assert card["weights"]["task"] == {"multi_label": True, "threshold": 0.5}
    assert main(["info", str(trained.model_dir), "--model-option", "shortcut=B"]) == 2
    assert "architecture is fixed by its config.json" in capsys.readouterr().err


def test_info_of_backbone_grayscale_and_bare_model_directories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backbone = save_model_dir(
        create_model("resnet20", features_only=True), tmp_path / "backbone", arch="resnet20",
        classes=[], preprocessing={"input_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3},
    )  # fmt: skip
    assert main(["info", str(backbone)]) == 0  # forward gives feature maps, not logits
    text = capsys.readouterr().out
    assert "layer3   [1, 64, 8, 8]" in text and "logits" not in text
    gray = save_model_dir(
        create_model("resnet20", in_chans=1), tmp_path / "gray", arch="resnet20", classes=[],
        preprocessing={"input_size": 32, "pixel_mean": [0.5] * 32 * 32},
    )  # fmt: skip
    assert main(["info", str(gray)]) == 0
    assert "per-pixel mean (1x32x32) subtracted" in capsys.readouterr().out
    bare = save_model_dir(
        create_model("resnet20"), tmp_path / "bare", arch="resnet20", classes=[], preprocessing={}
    )
    assert main(["info", str(bare), "--json"]) == 0  # what loading fills in: ImageNet's
    prep = json.loads(capsys.readouterr().out)["weights"]["preprocessing"]
    assert prep["input_size"] == 32 and prep["mean"] == [0.485, 0.456, 0.406]


def test_quantize_calibration_on_a_label_file_without_splits_does_not_warn(
    data: Path, tmp_path: Path
) -> None:
    import warnings

    from resnetkit.export.quantize import calibration_batches

    rows = data.read_text().splitlines()
    flat = data.parent / "calibration.csv"  # training images are what calibration wants
    flat.write_text("\n".join(",".join(line.split(",")[:2]) for line in rows) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = calibration_batches(create_model("resnet20", num_classes=2), "folder", flat,
                                      count=8)  # fmt: skip
    assert sum(len(b) for b in batches) == 8
    assert not [w for w in caught if "no split column" in str(w.message)]
