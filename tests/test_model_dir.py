"""Model directories: written atomically, with a model card beside the weights."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import resnetkit
from resnetkit.models.model_dir import save_model_dir

PREP = {"input_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}

RECIPE = {
    "name": "paper-cifar",
    "batch_size": 128,
    "lr": 0.1,
    "schedule": "multistep",
    "weight_decay": 0.0001,
}


def test_model_card_says_what_the_model_is_and_how_to_use_it(tmp_path: Path) -> None:
    model = resnetkit.create_model("plain20", num_classes=3)
    out = save_model_dir(
        model,
        tmp_path / "model",
        arch="plain20",
        classes=["cat", "dog", "eel"],
        preprocessing={"input_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3},
        metrics={"test_top1": 87.25, "test_top5": 100.0, "test_loss": 0.4, "steps": 10},
        provenance={
            "recipe": RECIPE,
            "dataset": "folder",
            "train_images": 1200,
            "eval_images": {"test": 300},
            "resnetkit": "0.1.0",
            "git_commit": "abc123",
            "torch": "2.14.1",
            "command": "resnetkit train --model plain20",
        },
    )
    card = (out / "README.md").read_text()
    params = sum(p.numel() for p in model.parameters())
    assert card.startswith("# plain20\n")
    assert f"a 20-layer plain network (no shortcuts), basic blocks, cifar stem; {params:,}" in card
    assert "cat, dog, eel" in card and "32x32 pixels" in card and "mean [0.5, 0.5, 0.5]" in card
    assert "| test top-1 on 300 images (%) | 87.25 |" in card and "test loss" not in card
    assert "- trained on folder (1,200 training images)" in card
    assert "git commit abc123" in card and "recipe `paper-cifar`: SGD, batch 128, lr 0.1" in card
    assert "`resnetkit train --model plain20`" in card
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    loaded = resnetkit.load_model(out)  # the card's Python example
    assert loaded.pretrained_cfg["classes"] == ["cat", "dog", "eel"]  # type: ignore[index]


def test_pixel_mean_models_say_so(tmp_path: Path) -> None:
    model = resnetkit.create_model("resnet20")
    prep = {"input_size": 32, "mean": [0.0] * 3, "std": [1.0] * 3, "pixel_mean": [0.0] * 3072}
    out = save_model_dir(model, tmp_path, arch="resnet20", classes=[], preprocessing=prep)
    card = (out / "README.md").read_text()
    assert "ResNet, shortcut option A" in card and "per-pixel mean image" in card
    assert "(not named: outputs are indices)" in card and "## Measured" not in card


def test_a_backbone_comes_back_as_a_backbone(tmp_path: Path) -> None:
    import torch

    backbone = resnetkit.create_model("resnet20", features_only=True, out_indices=(0, 2)).eval()
    prep = {"input_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    save_model_dir(backbone, tmp_path / "m", arch="resnet20", classes=[], preprocessing=prep)
    loaded = resnetkit.load_model(tmp_path / "m")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        maps, again = backbone(x), loaded(x)
    assert loaded.out_indices == (0, 2) and [m.shape for m in again] == [m.shape for m in maps]
    for a, b in zip(maps, again, strict=True):
        torch.testing.assert_close(a, b)


def test_an_older_directory_with_a_flag_that_did_nothing_still_loads(tmp_path: Path) -> None:
    import json
    import warnings

    from resnetkit.models.model_dir import load_model_dir, save_model_dir

    pre = {"input_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    out = save_model_dir(
        resnetkit.create_model("resnet20"), tmp_path / "m", arch="resnet20", classes=[],
        preprocessing=pre,
    )  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    config["config"]["avg_down"] = True  # built (and ignored) by versions before the check
    (out / "config.json").write_text(json.dumps(config))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model_dir(out)
    assert not model.config.avg_down
    assert any("avg_down has no effect with shortcut 'A'" in str(w.message) for w in caught)


def test_a_loaded_models_settings_never_override_the_arguments(tmp_path: Path) -> None:
    """Passing a loaded model's pretrained_cfg as preprocessing (the natural call) carried
    its classes and min_confidence along, and they won over the classes given."""
    first = save_model_dir(
        resnetkit.create_model("resnet20", num_classes=4),
        tmp_path / "first",
        arch="resnet20",
        classes=["a", "b", "c", "d"],
        preprocessing=dict(PREP),
        min_confidence=0.9,
    )
    tuned = resnetkit.load_model(first)
    assert tuned.pretrained_cfg["min_confidence"] == 0.9
    second = save_model_dir(
        tuned,
        tmp_path / "second",
        arch="resnet20",
        classes=["ant", "bee", "cow", "dog"],
        preprocessing=tuned.pretrained_cfg,
        metrics={"top1": np.float32(91.5), "per_class": torch.tensor([1.0, 2.0])},
    )
    meta = json.loads((second / "config.json").read_text())
    assert set(meta["preprocessing"]) == set(PREP) and "task" not in meta
    assert meta["metrics"] == {"top1": 91.5, "per_class": [1.0, 2.0]}  # plain JSON numbers
    again = resnetkit.load_model(second)
    assert again.pretrained_cfg["classes"] == ["ant", "bee", "cow", "dog"]
    assert "min_confidence" not in again.pretrained_cfg


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": ["a", "b"]}, "classes: 2 names for a model with 10 outputs"),
        ({"classes": "a,b"}, "classes must be a list of names, got 'a,b'"),
        ({"preprocessing": {**PREP, "std": [0, 0, 0]}}, "preprocessing.std must be positive"),
        ({"preprocessing": {**PREP, "input_size": "32"}}, "input_size must be a positive"),
        ({"metrics": {"top1": object()}}, "object .* cannot be written to config.json"),
    ],
)
def test_nothing_is_written_before_everything_is_checked(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    """A bad argument used to fail after the weights were written (or, with replace=True,
    after a good directory's weights were overwritten under its old config.json)."""
    model = resnetkit.create_model("resnet20")
    good = save_model_dir(model, tmp_path / "m", arch="resnet20", classes=[], preprocessing=PREP)
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    other = resnetkit.create_model("resnet20")
    args: dict[str, Any] = {"arch": "resnet20", "classes": [], "preprocessing": PREP, **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        save_model_dir(other, good, replace=True, **args)
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    with pytest.raises((ValueError, TypeError), match=message):
        save_model_dir(other, tmp_path / "new", **args)
    assert not (tmp_path / "new").exists()
