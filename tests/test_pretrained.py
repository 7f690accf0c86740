"""The model resnetkit trained itself and ships: resnet20.cifar10."""

import json
from pathlib import Path

import pytest
import torch

from resnetkit import create_model
from resnetkit.evaluate.evaluator import evaluate_model
from resnetkit.models import pretrained
from resnetkit.models.pretrained import get_pretrained, list_pretrained


def test_resnet20_cifar10_loads_offline_with_its_preprocessing() -> None:
    assert "resnet20.cifar10" in list_pretrained()
    model = create_model("resnet20.cifar10", pretrained=True).eval()
    cfg = model.pretrained_cfg
    assert cfg["classes"][:3] == ["airplane", "automobile", "bird"] and len(cfg["classes"]) == 10
    assert cfg["input_size"] == 32 and len(cfg["mean"]) == len(cfg["std"]) == 3
    assert cfg["metrics"]["test_top1"] > 90.0  # measured on the 10,000 CIFAR-10 test images
    weights = get_pretrained("resnet20.cifar10")
    assert 1.0e6 < weights.path.stat().st_size < 1.2e6


def test_shipped_model_classifies_real_bundled_photos() -> None:
    model = create_model("resnet20.cifar10", pretrained=True)
    result = evaluate_model(model, "cifar10-sample", ".", split="test")
    assert result["count"] == 500
    assert result["top1"] >= 85.0


def test_corrupt_packaged_weights_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    index = json.loads(
        Path(
            str(pretrained.resources.files("resnetkit.weights").joinpath("index.json"))
        ).read_text()
    )
    index["resnet20.cifar10"]["sha256"] = "0" * 64
    monkeypatch.setattr(pretrained, "_index", lambda: index)
    with pytest.raises(RuntimeError, match="corrupt"):
        create_model("resnet20.cifar10", pretrained=True)


def test_pretrained_without_tag_uses_the_default_and_unknown_tags_are_explained() -> None:
    a = create_model("resnet20", pretrained=True)
    b = create_model("resnet20.cifar10", pretrained=True)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    with pytest.raises(KeyError, match="resnet20.cifar10"):
        create_model("resnet56.cifar10", pretrained=True)


def test_packaging_refuses_a_run_that_is_not_the_zoo_model(tmp_path: Path) -> None:
    """A tag is rebuilt from the zoo's config: a run of a variant would ship weights that load
    into the zoo's network and compute something else."""
    import importlib.util

    from resnetkit.models.model_dir import save_model_dir

    spec = importlib.util.spec_from_file_location(
        "package_weights", Path(__file__).parents[1] / "tools" / "package_weights.py"
    )
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    index = (tool.WEIGHTS / "index.json").read_text()
    model = create_model("resnet20", unit="bn_after_add")
    prep = {"mean": [0.5] * 3, "std": [0.25] * 3, "input_size": 32}
    save_model_dir(
        model, tmp_path / "run" / "model", arch="resnet20", classes=[], preprocessing=prep
    )
    with pytest.raises(SystemExit, match=r"with \{'unit': 'bn_after_add'\}: a tag holds zoo"):
        tool.package(tmp_path / "run", "resnet20.cifar10_bn")
    # A per-pixel mean (the paper recipe) does not fit a tag's per-channel statistics.
    paper = {"mean": [0.5] * 3, "std": [0.25] * 3, "input_size": 32, "pixel_mean": [0.5] * 3072}
    save_model_dir(
        create_model("resnet20"),
        tmp_path / "p" / "model",
        arch="resnet20",
        classes=[],
        preprocessing=paper,
    )
    with pytest.raises(SystemExit, match="subtracts a per-pixel mean"):
        tool.package(tmp_path / "p", "resnet20.cifar10_paper")
    assert (tool.WEIGHTS / "index.json").read_text() == index  # nothing written
