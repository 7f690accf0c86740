"""Few-shot transfer experiment on the bundled real CIFAR-10 images."""

import json
from pathlib import Path

import numpy as np
import pytest

from resnetkit.cli.main import main
from resnetkit.data.datasets import load_sample
from resnetkit.reproduce.transfer import few_shot_folder, run_transfer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_few_shot_folder_draws_shots_per_class_and_holds_out_test_images(tmp_path: Path) -> None:
    train, test = load_sample("train"), load_sample("test")
    counts = few_shot_folder(tmp_path / "a", train, test, ["cat", "ship"], 7, seed=3)
    assert counts == {"train": 14, "val": 100}  # the sample has 50 test images per class
    cats = sorted(p.name for p in (tmp_path / "a" / "train" / "cat").iterdir())
    assert len(cats) == 7
    again = few_shot_folder(tmp_path / "b", train, test, ["cat", "ship"], 7, seed=3)
    assert again == counts
    assert cats == sorted(p.name for p in (tmp_path / "b" / "train" / "cat").iterdir())
    other = few_shot_folder(tmp_path / "c", train, test, ["cat", "ship"], 7, seed=4)
    assert other == counts
    assert cats != sorted(p.name for p in (tmp_path / "c" / "train" / "cat").iterdir())
    # The held-out images are the test split's, pixel for pixel.
    first = sorted((tmp_path / "a" / "val" / "ship").iterdir())[0]
    from PIL import Image

    index = int(first.stem)
    assert test.labels[index] == test.classes.index("ship")
    assert np.array_equal(np.asarray(Image.open(first)), test.images[index])
    # Drawn again into the same folder: only the new draw is there.
    few_shot_folder(tmp_path / "a", train, test, ["cat", "dog"], 3, seed=3, eval_per_class=5)
    assert sorted(p.name for p in (tmp_path / "a" / "train").iterdir()) == ["cat", "dog"]
    assert len(list((tmp_path / "a" / "train" / "cat").iterdir())) == 3


def test_bad_requests_are_refused(tmp_path: Path) -> None:
    train, test = load_sample("train"), load_sample("test")
    with pytest.raises(ValueError, match="unknown class.*kangaroo"):
        few_shot_folder(tmp_path, train, test, ["cat", "kangaroo"], 5, seed=0)
    with pytest.raises(ValueError, match="only 100 images"):
        few_shot_folder(tmp_path, train, test, ["cat", "dog"], 101, seed=0)
    with pytest.raises(ValueError, match="at least 2"):
        few_shot_folder(tmp_path, train, test, ["cat", "cat"], 5, seed=0)


def test_finetuned_resnet20_beats_scratch_on_few_real_shots(tmp_path: Path) -> None:
    summary = run_transfer(
        tmp_path,
        dataset="cifar10-sample",
        classes=("cat", "ship", "frog"),
        shots=10,
        seeds=(0,),
        epochs=6,
        eval_per_class=30,
        batch_size=10,
    )
    run = summary["runs"][0]
    assert run["train_images"] == 30 and run["val_images"] == 90
    # The pretrained features separate these classes at once; random weights after six
    # short epochs on 30 images are near chance (33%).
    assert run["finetuned"] >= 80 and run["scratch"] <= 65
    assert summary["finetune_wins_every_seed"] is True
    assert summary["gain_points"] == pytest.approx(run["finetuned"] - run["scratch"])
    assert json.loads((tmp_path / "transfer.json").read_text()) == summary
    assert (tmp_path / "seed0" / "finetuned" / "model" / "config.json").exists()
    # Other settings in the same folder would resume these runs on other data: refused.
    with pytest.raises(ValueError, match=r"other settings \(shots: 10 -> 5\)"):
        run_transfer(tmp_path, dataset="cifar10-sample", classes=("cat", "ship", "frog"),
                     shots=5, seeds=(0,), epochs=6, eval_per_class=30, batch_size=10)  # fmt: skip


def test_cli_transfer_checks_its_request_before_claiming_the_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo must not record settings in --out (the folder would then refuse the fix)."""
    out = tmp_path / "tr"
    argv = ["reproduce", "transfer", "--out", str(out), "--dataset", "cifar10-sample"]
    argv += ["--shots", "2", "--epochs", "1", "--no-progress", "--batch-size", "8"]
    bad = {
        ("--classes", "cat,dgo", "--seeds", "0"): "unknown class(es) dgo",
        ("--source", "resnet2O.cifar10", "--seeds", "0"): "resnet2O",
        ("--seeds", "0,0"): "each seed once",
        ("--seeds", "0", "--eval-per-class", "-45"): "--eval-per-class must be >= 0",
        ("--seeds", ","): "--seeds must be integers",
        ("--seeds", "0", "--batch-size", "32"): "are 10 training images, which must hold",
    }
    for extra, message in bad.items():
        assert main([*argv, *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra
        assert not (out / "transfer-settings.json").exists(), extra


def test_cli_transfer_needs_data_for_full_cifar(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "transfer", "--seeds", "0", "--no-progress"]) == 2
    assert "--data-dir is needed" in capsys.readouterr().err
    assert main(["reproduce", "degradation"]) == 2
    assert "needs --data-dir" in capsys.readouterr().err
