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


def _edited(tmp_path: Path, edit: Any, num_classes: int = 10) -> Path:
    """A model directory whose config.json ``edit(meta)`` changed (as a person edits it)."""
    out = save_model_dir(
        resnetkit.create_model("resnet20", num_classes=num_classes),
        tmp_path / "m",
        arch="resnet20",
        classes=[],
        preprocessing=dict(PREP),
    )
    meta = json.loads((out / "config.json").read_text())
    edit(meta)
    (out / "config.json").write_text(json.dumps(meta))  # NaN and Infinity as JSON writes them
    return out


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda m: m["preprocessing"].update(mean=[0.5, float("nan"), 0.5]),
            r"preprocessing\.mean must be finite numbers, got \[0\.5, nan, 0\.5\]",
        ),
        (
            lambda m: m["preprocessing"].update(std=[float("inf")] * 3),
            r"preprocessing\.std must be finite numbers",
        ),
        (
            lambda m: m["preprocessing"].update(std=[0.2, -0.1, 0.2]),
            r"preprocessing\.std must be positive",
        ),
        (
            lambda m: m["preprocessing"].update(interpolation="cubicc"),
            r"preprocessing\.interpolation 'cubicc' .* one of nearest, nearest-exact, bilinear, "
            "bicubic",
        ),
        (
            lambda m: m.update(classes=["cat", "dog", "eel"]),
            r"classes: 3 names for a model with 10 outputs \(config\.num_classes\)",
        ),
    ],
    ids=["nan-mean", "inf-std", "negative-std", "interpolation", "class-count"],
)
def test_a_config_json_resnetkit_cannot_use_is_refused_by_field(
    tmp_path: Path, edit: Any, message: str
) -> None:
    """NaN/inf mean or std (every input NaN), a misspelt interpolation (torchvision's bare
    enum error at the first picture) and class names for another number of outputs (the
    names shifted against the outputs) loaded."""
    out = _edited(tmp_path, edit)
    with pytest.raises(ValueError, match=f"{out / 'config.json'}: {message}"):
        resnetkit.load_model(out)


@pytest.mark.parametrize("bad", [float("nan"), float("-inf"), True], ids=["nan", "inf", "bool"])
def test_config_json_and_hub_configs_share_one_finite_number_check(
    tmp_path: Path, bad: Any
) -> None:
    """config.json's mean/std and a Hub config's (hf_hub._stats) are checked by one helper,
    each with its own message as before."""
    from resnetkit.models.hf_hub import _stats
    from resnetkit.models.model_dir import finite_numbers

    assert finite_numbers([0.5, 1]) and finite_numbers(())
    assert not finite_numbers([0.5, bad, 0.5])
    with pytest.raises(ValueError, match=r"repo: mean must be finite numbers \(0-1 scale"):
        _stats("repo", "mean", [0.5, bad, 0.5], std=False)
    out = _edited(tmp_path, lambda m: m["preprocessing"].update(mean=[0.5, bad, 0.5]))
    with pytest.raises(ValueError, match=r"preprocessing\.mean must be .*numbers"):
        resnetkit.load_model(out)


def test_nan_preprocessing_is_not_written_or_taken(tmp_path: Path) -> None:
    model = resnetkit.create_model("resnet20")
    bad = {**PREP, "mean": [float("nan")] * 3}
    with pytest.raises(ValueError, match=r"preprocessing\.mean must be finite numbers"):
        save_model_dir(model, tmp_path / "m", arch="resnet20", classes=[], preprocessing=bad)
    assert not (tmp_path / "m").exists()
    from resnetkit.models.model_dir import check_preprocessing

    with pytest.raises(ValueError, match=r"preprocessing\.std must be finite numbers"):
        check_preprocessing(model, {"std": [float("inf")]}, [])


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (
            lambda m: m["preprocessing"].update(mean=[123.7, 116.3, 103.5]),
            r"preprocessing\.mean \[123\.7, 116\.3, 103\.5\] looks like the 0-255 scale; .* "
            r"give 0-1 values \(divide by 255\)",
        ),
        (
            lambda m: m.update(clases=["a"] * 10),
            r"unknown key 'clases' \(did you mean 'classes'\?\) is ignored",
        ),
        (
            lambda m: m["config"].update(strid_in_1x1=True),
            r"unknown key 'config\.strid_in_1x1' \(did you mean 'stride_in_1x1'\?\) is ignored",
        ),
    ],
    ids=["0-255-mean", "top-level-typo", "config-typo"],
)
def test_a_probable_mistake_in_config_json_is_warned_about(
    tmp_path: Path, edit: Any, said: str
) -> None:
    """A typo in a key was ignored without a word (the model loaded as if it were not
    there), and a mean on the 0-255 scale made every input a large negative number."""
    out = _edited(tmp_path, edit)
    with pytest.warns(UserWarning, match=said):
        resnetkit.load_model(out)


def test_a_one_class_softmax_head_is_warned_about(tmp_path: Path) -> None:
    """One output under a softmax scores 100% whatever the image; one under a sigmoid
    (multi-label, a yes/no model) is what was meant."""
    import warnings

    model = resnetkit.create_model("resnet20", num_classes=1)
    args: dict[str, Any] = {"arch": "resnet20", "classes": ["cat"], "preprocessing": PREP}
    said = r"num_classes is 1 with a softmax head, which scores its one class 100%"
    with pytest.warns(UserWarning, match=said):
        softmax = save_model_dir(model, tmp_path / "softmax", **args)
    with pytest.warns(UserWarning, match=said):
        resnetkit.load_model(softmax)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sigmoid = save_model_dir(model, tmp_path / "sigmoid", multi_label=True, **args)
        assert resnetkit.load_model(sigmoid).pretrained_cfg["multi_label"] is True
