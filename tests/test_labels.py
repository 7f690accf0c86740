"""Label files: a CSV (or TSV) of images and classes in place of class folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnetkit.data.folder import folder_splits, scan_image_folder
from resnetkit.data.labels import read_label_file
from resnetkit.evaluate.evaluator import evaluate_model
from resnetkit.models.registry import create_model
from resnetkit.train.recipe import Recipe
from resnetkit.train.trainer import TrainSpec, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 pictures in one flat folder (no class folders): reddish 'apple', bluish 'sky'."""
    root = tmp_path_factory.mktemp("flat")
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir()
    for i in range(24):
        colour = (200, 40, 40) if i % 2 == 0 else (40, 60, 210)
        pixels = np.clip(rng.normal(colour, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "imgs" / f"{i:03d}.png")
    return root


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _splits_csv(root: Path) -> Path:
    split = {**dict.fromkeys(range(16), "train"), **dict.fromkeys(range(16, 20), "val")}
    rows = [
        f"imgs/{i:03d}.png,{'apple' if i % 2 == 0 else 'sky'},{split.get(i, 'test')}"
        for i in range(24)
    ]
    return _write(root / "labels.csv", ["path,label,split", *rows])


def test_read_label_file_columns_ids_and_class_order(images: Path, tmp_path: Path) -> None:
    # Kaggle style: an id without its suffix, numeric labels (sorted as numbers), a BOM
    lines = ["image_id,target", *(f"{i:03d},{[2, 10, 7][i % 3]}" for i in range(6))]
    csv_file = images / "imgs" / "ids.csv"
    csv_file.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    table = read_label_file(csv_file)
    assert table.classes == ("2", "7", "10") and not table.has_splits
    samples = table.samples()
    assert samples[0] == (images / "imgs" / "000.png", 0)
    assert [label for _, label in samples] == [0, 2, 1, 0, 2, 1]
    assert scan_image_folder(csv_file) == (samples, table.classes)
    tsv = _write(tmp_path / "l.tsv", ["file\tclass", f"{images}/imgs/001.png\tsky"])  # absolute
    assert read_label_file(tsv).samples() == [(images / "imgs" / "001.png", 0)]
    # Excel where the decimal mark is a comma writes ';'; a list from Windows writes '\'.
    semi = _write(images / "semi.csv", ["path;label", "imgs\\002.png;apple", "imgs/003;sky"])
    table = read_label_file(semi)
    assert table.samples() == [(images / "imgs" / "002.png", 0), (images / "imgs" / "003.png", 1)]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "is empty: it needs a header line"),
        (["path,colour", "a.png,red"], r"has no label column; name it one of label, class"),
        (["name_of_file,label", "a.png,x"], "has no image column"),
        (["path,label", "a.png,"], "line 2: no label; every row needs both"),
        (["path,label,split", "a.png,x,holdout"], "line 2: split 'holdout'; with a split col"),
        (["path,label,split", "a.png,x,"], "line 2: split ''; with a split column every row"),
        (["path,label"], "a header and no rows"),
        (["path,label,split", "a.png"], "line 2: 1 cells, the header has 3"),
        (["path,label", "a.png,x", "b.png,cat,dog"], "line 3: 3 cells, the header has 2"),
        (
            ["path,label", "a.png,cat", "b.png,dog", "./a.png,dog"],
            "line 4: ./a.png is listed at line 2 as 'cat' and here as 'dog'",
        ),
        (
            ["path,label,split", "a.png,x,train", "a.png,x,val"],
            "line 3: a.png is in split 'val' here and 'train' at line 2: an image in two",
        ),
    ],
)
def test_malformed_label_files_are_refused_by_line(
    tmp_path: Path, lines: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        read_label_file(_write(tmp_path / "labels.csv", lines))


def test_missing_images_are_warned_about_then_skipped_when_decoded(
    images: Path, tmp_path: Path
) -> None:
    csv_file = _write(tmp_path / "l.csv", ["path,label", f"{images}/imgs/000.png,a", "gone.png,b"])
    with pytest.warns(UserWarning, match="1 of 2 image\\(s\\) not found.*gone.png"):
        table = read_label_file(csv_file)
    assert table.classes == ("a", "b") and len(table.samples()) == 2


def test_a_repeated_row_is_used_once(images: Path, tmp_path: Path) -> None:
    rows = [f"{images}/imgs/000.png,a", f"{images}/imgs/001.png,b", f"{images}/imgs/000.png,a"]
    with pytest.warns(UserWarning, match=r"1 row\(s\) repeat an earlier one \(line 4 repeats"):
        table = read_label_file(_write(tmp_path / "l.csv", ["path,label", *rows]))
    assert len(table.samples()) == 2


def test_splits_of_a_label_file(images: Path) -> None:
    csv_file = _splits_csv(images)
    train, val, classes = folder_splits(csv_file, 0.1, 0)
    assert classes == ("apple", "sky") and (len(train), len(val)) == (16, 4)
    assert {p.name for p, _ in val} == {f"{i:03d}.png" for i in range(16, 20)}
    with pytest.raises(ValueError, match="has a split column.*keep the splits apart"):
        scan_image_folder(csv_file)  # all rows would put the test rows into training
    only_test = _write(images / "t.csv", ["path,label,split", "imgs/000.png,apple,test"])
    with pytest.raises(ValueError, match=r"no row has split train \(splits found: \['test'\]\)"):
        folder_splits(only_test)


def test_train_and_evaluate_from_a_label_file(images: Path, tmp_path: Path) -> None:
    csv_file = _splits_csv(images)
    recipe = Recipe(epochs=6, batch_size=8, lr=0.05, num_threads=1, checkpoint_every_s=1e9)
    spec = TrainSpec(
        model="resnet20", dataset="folder", data_dir=csv_file, out=tmp_path / "run",
        recipe=recipe, progress=False,
    )  # fmt: skip
    result = train(spec)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["train_images"] == 16 and run["eval_images"] == {"val": 4}
    assert result.metrics["val_top1"] == 100.0  # red against blue, 16 examples: learnt
    from resnetkit.models.loading import load_model

    model = load_model(result.model_dir)
    assert model.pretrained_cfg["classes"] == ["apple", "sky"]
    test = evaluate_model(model, "folder", csv_file, split="test")
    assert test["count"] == 4 and test["classes"] == ["apple", "sky"]
    valid = evaluate_model(model, "folder", csv_file, split="validation")  # a synonym of val
    assert valid["count"] == 4
    with pytest.raises(ValueError, match=r"no row has split 'holdout'; its splits are"):
        evaluate_model(model, "folder", csv_file, split="holdout")


def test_streamed_training_reads_a_label_file(images: Path, tmp_path: Path) -> None:
    from resnetkit.train.trainer import Trainer

    recipe = Recipe(epochs=1, batch_size=8, augment="imagenet", num_threads=1)
    spec = TrainSpec(
        model=create_model("resnet20", num_classes=2), dataset="folder",
        data_dir=_splits_csv(images), out=tmp_path / "s", recipe=recipe, progress=False,
        image_size=32,
    )  # fmt: skip
    trainer = Trainer(spec)
    assert trainer.data.streaming and trainer.data.eval_counts == {"val": 4}
    assert torch.equal(trainer.data.train_labels.bincount(), torch.tensor([8, 8]))


def test_finetune_cli_takes_a_label_file(images: Path, tmp_path: Path) -> None:
    from resnetkit.cli.main import main
    from resnetkit.models.model_dir import save_model_dir

    source = save_model_dir(
        create_model("resnet20", num_classes=3), tmp_path / "src", arch="resnet20",
        classes=["a", "b", "c"], preprocessing={"input_size": 32},
    )  # fmt: skip
    argv = ["finetune", "--model", str(source), "--data", str(_splits_csv(images))]
    argv += ["--out", str(tmp_path / "ft"), "--epochs", "1", "--batch-size", "8"]
    argv += ["--warmup-iters", "0", "--select-best", "false"]
    assert main([*argv, "--no-progress"]) == 0
    report = json.loads((tmp_path / "ft" / "report.json").read_text())
    assert set(report["per_class"]) == {"apple", "sky"}
