"""`resnetkit demo`, the README's first command: every part runs (training faked, it is tested
elsewhere), and stopping it says that nothing is kept."""

import signal
from pathlib import Path

import pytest

from resnetkit.cli.main import main
from resnetkit.train import trainer
from resnetkit.train.errors import TrainingInterrupted

pytestmark = pytest.mark.usefixtures("one_thread")


def test_demo_tours_the_zoo_the_shipped_model_and_training(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fake_train(spec: trainer.TrainSpec) -> trainer.TrainResult:
        assert spec.dataset == "cifar10-sample" and spec.model == "resnet20"
        rows = [
            {"epoch": 1, "train_loss": 2.1, "train_top1": 20.0, "images_per_second": 90.0},
            {"epoch": 2, "train_loss": 1.9, "train_top1": 30.0, "test_top1": 28.0,
             "images_per_second": 91.0},
        ]  # fmt: skip
        return trainer.TrainResult(spec.out, True, spec.out / "model", {"test_top1": 28.0}, rows)

    from resnetkit.cli import demo

    monkeypatch.setattr(trainer, "train", fake_train)
    # The zoo's table (tests/test_cli_zoo.py) costs half a minute without its cache.
    monkeypatch.setattr(demo.zoo, "models", lambda: print("the zoo's table"))
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    for section in ("1. The model zoo", "2. One model in detail", "3. The shipped ResNet-20"):
        assert section in out
    assert "the zoo's table" in out and "layer4" in out  # resnet50's stages
    assert "cat.png" in out and "-> cat" in out
    assert "epoch  2: train loss 1.900, train top-1 30.0%, test top-1 28.0%" in out
    assert "epoch  1:" not in out  # only the epochs with a test are shown
    assert "to 28.0% on 500 unseen photos" in out


def test_stopping_the_demo_says_nothing_is_kept(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def stopped(spec: trainer.TrainSpec) -> trainer.TrainResult:
        assert Path(spec.out).parent.exists()
        raise TrainingInterrupted(f"checkpoint in {spec.out}", signal.SIGINT)

    monkeypatch.setattr(trainer, "train", stopped)
    from resnetkit.cli import demo

    monkeypatch.setattr(demo.zoo, "models", lambda: None)
    monkeypatch.setattr(demo.zoo, "info", lambda name: None)
    monkeypatch.setattr(demo, "_classify_bundled_images", lambda: None)
    assert main(["demo"]) == 128 + signal.SIGINT
    err = capsys.readouterr().err
    assert "demo's training was stopped; it keeps nothing" in err and "checkpoint in" not in err
