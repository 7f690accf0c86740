"""Fig. 7: which layers are measured, that the measure is the response's std, the CLI."""

import json
from pathlib import Path

import pytest
import torch

import resnetkit
from resnetkit.cli.main import main
from resnetkit.models.model_dir import save_model_dir
from resnetkit.reproduce.responses import layer_response_stds, response_layers
from tests.fakedata import CLASSES, write_fake_cifar10

pytestmark = pytest.mark.usefixtures("one_thread")
PRE = {"input_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_cifar10(tmp_path_factory.mktemp("cifar"), n_train=10, n_test=40)


def saved(name: str, folder: Path) -> Path:
    torch.manual_seed(0)
    model = resnetkit.create_model(name)
    return save_model_dir(model, folder, arch=name, classes=CLASSES, preprocessing=PRE)


@pytest.mark.parametrize(
    ("name", "count", "first", "last"),
    [
        ("resnet20", 19, "bn1", "layer3.2.bn2"),  # the stem and two per basic block
        ("plain56", 55, "bn1", "layer3.8.bn2"),
        ("resnet50", 16, "layer1.0.bn2", "layer4.2.bn2"),  # a bottleneck's one 3x3
    ],
)
def test_the_bn_after_each_3x3_conv_in_forward_order(
    name: str, count: int, first: str, last: str
) -> None:
    layers = response_layers(resnetkit.create_model(name))
    assert len(layers) == count and layers[0][0] == first and layers[-1][0] == last
    assert all(isinstance(bn, torch.nn.BatchNorm2d) for _, bn in layers)


def test_pre_activation_models_are_refused() -> None:
    with pytest.raises(ValueError, match="pre-activation"):
        response_layers(resnetkit.create_model("preact_resnet110"))


def test_the_measure_is_each_channels_std_averaged(cifar_dir: Path) -> None:
    torch.manual_seed(0)
    model = resnetkit.create_model("resnet20").eval()
    model.pretrained_cfg = {**PRE, "classes": CLASSES}  # type: ignore[assignment]
    before = layer_response_stds(model, cifar_dir)
    assert before["images"] == 40 and len(before["std"]) == 19
    assert 0 <= before["top1"] <= 100
    # In eval mode a BN is affine: scaling its gamma and beta scales its output and its std
    # (what comes after changes; the layer's own input does not).
    bn = dict(model.named_modules())["layer2.1.bn2"]
    with torch.no_grad():
        bn.weight.mul_(3.0)
        bn.bias.mul_(3.0)
    after = layer_response_stds(model, cifar_dir)
    k = after["layers"].index("layer2.1.bn2")
    assert after["std"][k] == pytest.approx(3.0 * before["std"][k], rel=1e-5)
    assert after["std"][:k] == pytest.approx(before["std"][:k], rel=1e-6)
    # A channel with gamma 0 responds with a constant: its std is 0.
    with torch.no_grad():
        bn.weight.zero_()
    assert layer_response_stds(model, cifar_dir)["std"][k] == pytest.approx(0.0, abs=1e-6)


def test_cli_measures_the_degradation_runs_and_draws_fig7(
    cifar_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    saved("plain20", runs / "plain20" / "model")
    saved("resnet20", runs / "resnet20" / "model")
    out = tmp_path / "fig7"
    argv = ["reproduce", "responses", "--data-dir", str(cifar_dir), "--from", str(runs)]
    assert main([*argv, "--models", "plain20,resnet20", "--out", str(out)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["models"]["plain20"]["layers"] == 19
    written = json.loads((out / "responses.json").read_text())
    assert set(written["models"]) == {"plain20", "resnet20"}
    assert written["models"]["resnet20"]["arch"] == "resnet20"
    assert (out / "responses.png").read_bytes()[:4] == b"\x89PNG"
    assert main([*argv, "--models", "resnet56", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "no trained resnet56 in" in err and "--from" in err


def test_cli_names_the_model_that_failed_and_runs_offline_on_the_sample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["reproduce", "responses", "--dataset", "cifar10-sample", "--out", str(tmp_path / "r")]
    missing = str(tmp_path / "nowhere" / "model")
    assert main([*argv, "--models", missing]) == 2
    assert f"the model directory {missing} does not exist" in capsys.readouterr().err
    preact = saved("preact_resnet110", tmp_path / "preact")
    assert main([*argv, "--models", f"resnet20.cifar10,{preact}"]) == 2
    err = capsys.readouterr().err
    assert f"{preact}: a pre-activation ResNet" in err
    # The bundled 500 real test images: no --data-dir needed.
    assert main([*argv, "--models", "resnet20.cifar10"]) == 0
    shown = json.loads(capsys.readouterr().out)["models"]["resnet20"]
    assert shown["layers"] == 19 and shown["top1"] > 80
