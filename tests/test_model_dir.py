"""Model directories: written atomically, with a model card beside the weights."""

from pathlib import Path

import resnetkit
from resnetkit.models.model_dir import save_model_dir

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
