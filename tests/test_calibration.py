"""Temperature scaling: fitted on some held-out images, checked on the others, folded into fc."""

import json
from pathlib import Path

import pytest
import torch

from resnetkit.cli.main import main
from resnetkit.evaluate.calibration import apply_temperature, calibrate, fit_temperature
from resnetkit.models.loading import load_model


def test_fit_recovers_the_temperature_the_labels_were_drawn_with() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(20_000, 10, generator=generator)
    # Labels drawn from softmax(logits / 2): the likelihood is highest at T = 2.
    labels = torch.multinomial((logits / 2.0).softmax(1), 1, generator=generator).squeeze(1)
    assert fit_temperature(logits, labels) == pytest.approx(2.0, rel=0.05)
    labels = torch.multinomial((logits / 0.5).softmax(1), 1, generator=generator).squeeze(1)
    assert fit_temperature(logits, labels) == pytest.approx(0.5, rel=0.05)


def test_logits_that_say_nothing_are_refused() -> None:
    # Always sure of the wrong class: the best "temperature" is infinite (uniform output).
    labels = torch.arange(200) % 4
    logits = 10.0 * torch.nn.functional.one_hot((labels + 1) % 4, 4).double()
    with pytest.raises(ValueError, match=r"above 20.0: .*\(wrong preprocessing"):
        fit_temperature(logits, labels)
    # Right on every image: the sharper the better, without bound. Not the model's fault.
    right = 5.0 * torch.nn.functional.one_hot(labels, 4).double()
    with pytest.raises(ValueError, match=r"classifies all 200 fitting images correctly"):
        fit_temperature(right, labels)
    with pytest.raises(ValueError, match="no images"):
        fit_temperature(logits[:0], labels[:0])


def test_folded_temperature_divides_the_logits_and_keeps_the_original() -> None:
    model = load_model("resnet20.cifar10")
    x = torch.randn(4, 3, 32, 32)
    before = model(x)
    scaled = apply_temperature(model, 0.8)
    torch.testing.assert_close(scaled(x), before / 0.8, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(x), before)  # the original is untouched
    with pytest.raises(ValueError, match="positive"):
        apply_temperature(model, 0.0)


def test_calibrate_improves_the_held_out_likelihood_and_keeps_accuracy() -> None:
    torch.set_num_threads(1)
    model = load_model("resnet20.cifar10")  # trained with label smoothing: underconfident
    report = calibrate(model, "cifar10-sample", ".", fit_fraction=0.5)
    assert (report.fit_images, report.check_images) == (250, 250)
    assert report.temperature < 1.0
    assert report.after["nll"] < report.before["nll"]
    assert report.after["ece"] < report.before["ece"]
    assert report.after["top1"] == report.before["top1"]
    with pytest.raises(ValueError, match="fit_fraction must be between 0 and 1"):
        calibrate(model, "cifar10-sample", ".", fit_fraction=1.0)


def test_cli_writes_a_calibrated_model_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "calibrated"
    argv = ["calibrate", "--model", "resnet20.cifar10", "--dataset", "cifar10-sample"]
    assert main([*argv, "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    temperature = result["temperature"]
    calibrated, original = load_model(out), load_model("resnet20.cifar10")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(calibrated(x), original(x) / temperature, rtol=1e-4, atol=1e-4)
    assert calibrated.pretrained_cfg["classes"] == original.pretrained_cfg["classes"]  # type: ignore[index]
    meta = json.loads((out / "config.json").read_text())
    assert meta["provenance"]["calibration"]["temperature"] == temperature
    assert meta["metrics"] == {"test_top1": 91.53, "test_top5": 99.72}  # no stale loss
    assert "temperature-scaled by `resnetkit calibrate`" in (out / "README.md").read_text()
    # Never over another model; a table without --json.
    assert main([*argv, "--out", str(out)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "temperature 0." in table and "ECE (%)" in table and "underconfident" in table
    # The training split, a data folder left out, a device that is not here: refused.
    assert main([*argv, "--split", "train"]) == 2
    assert "--split train: a temperature fitted on the images" in capsys.readouterr().err
    assert main(["calibrate", "--model", "resnet20.cifar10", "--dataset", "folder"]) == 2
    assert "--data-dir is needed for --dataset folder" in capsys.readouterr().err
    assert main([*argv, "--device", "gpu0"]) == 2
    assert "--device 'gpu0' is not a device: use cpu, cuda" in capsys.readouterr().err
