"""The learning-rate range test: its reading of a curve, its sweep, and that it leaves no trace."""

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from resnetkit.cli.main import main
from resnetkit.train.lr_finder import (
    LRSweep,
    centred_average,
    describe,
    find_lr,
    running_average,
)
from resnetkit.train.recipe import Recipe
from resnetkit.train.trainer import Trainer, TrainSpec
from tests.fakedata import write_fake_cifar10

RECIPE = Recipe(
    epochs=1,
    batch_size=25,
    lr=0.05,
    momentum=0.9,
    weight_decay=5e-4,
    schedule="cosine",
    warmup_iters=0,
    checkpoint_every_s=1e9,
    num_threads=1,
)


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_cifar10(tmp_path_factory.mktemp("cifar"))


def trainer(data: Path, out: Path, recipe: Recipe = RECIPE) -> Trainer:
    spec = TrainSpec(
        model="resnet20", dataset="cifar10", data_dir=data, out=out, recipe=recipe, progress=False
    )
    return Trainer(spec)


def test_running_average_is_bias_corrected() -> None:
    assert running_average([2.0] * 5) == pytest.approx([2.0] * 5)  # not pulled to 0 at first
    rising = running_average([1.0, 2.0, 3.0, 4.0])
    assert rising[0] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(rising, rising[1:], strict=False))
    assert rising[-1] < 4.0  # it lags


def test_the_centred_average_finds_a_noisy_minimum_where_it_is() -> None:
    lrs = np.logspace(-6, 1, 200).tolist()
    x = np.log10(lrs)
    noise = np.random.default_rng(0).normal(0, 0.08, len(x))
    # Flat, a long fall over three decades, the lowest loss at lr 0.1, then a blow-up.
    losses = 2.6 - 0.5 * np.clip((x + 4) / 3, 0, 1) + np.where(x > -1, (x + 1) ** 2, 0) + noise
    smoothed = centred_average(lrs, losses.tolist())
    assert 10**-1.25 < lrs[int(np.argmin(smoothed))] < 10**-0.75
    # The running average read the same way lags behind, to a larger lr.
    lagging = running_average(losses.tolist(), beta=0.98)
    assert lrs[int(np.argmin(lagging))] > 10**-0.75
    assert centred_average([1e-3, 1e-2], [1.0, 3.0], half_window=0.5) == [1.0, 3.0]
    with pytest.raises(ValueError, match="3 learning rates for 2 losses"):
        centred_average(lrs[:3], [1.0, 2.0])


def test_sweep_is_geometric_and_leaves_the_run_as_it_was(cifar_dir: Path, tmp_path: Path) -> None:
    t = trainer(cifar_dir, tmp_path / "run")
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    scheduler = t.scheduler
    # 12 steps: more than one epoch of 10. Up to 0.03: at 0.2-1.0 this tiny net's loss blows
    # up on some CPUs (an AMD EPYC) and not others, which is the next test's business.
    sweep = find_lr(t, start=1e-4, end=0.03, steps=12)
    assert sweep.stopped == "end" and len(sweep.lrs) == 12
    assert sweep.lrs[0] == pytest.approx(1e-4) and sweep.lrs[-1] == pytest.approx(0.03)
    ratios = np.diff(np.log(sweep.lrs))
    assert np.allclose(ratios, ratios[0])
    assert all(math.isfinite(v) for v in sweep.losses + sweep.smoothed)
    assert sweep.suggested in sweep.lrs and len(sweep.smoothed) == 12
    assert "lr sweep: 12 steps from 0.0001 to 0.03" in describe(sweep)
    # Everything restored: weights and BN statistics, optimizer, scheduler, position, lr.
    for key, value in t.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert t.scheduler is scheduler and not t.optimizer.state
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(RECIPE.lr)
    assert (t.step, t.epoch, t.batch_in_epoch) == (0, 0, 0)
    assert not (tmp_path / "run").exists()


def test_sweep_stops_when_the_loss_blows_up(cifar_dir: Path, tmp_path: Path) -> None:
    t = trainer(cifar_dir, tmp_path / "run", replace(RECIPE, weight_decay=0.0))
    sweep = find_lr(t, start=1e-3, end=1e8, steps=40)
    assert sweep.stopped in ("exploded", "diverged")
    assert len(sweep.lrs) < 40


def test_a_run_after_a_rehearsal_is_the_run_it_would_have_been(
    cifar_dir: Path, tmp_path: Path
) -> None:
    recipe = replace(RECIPE, max_iters=3, ema_decay=0.5)
    alone = trainer(cifar_dir, tmp_path / "alone", recipe)
    alone.run()
    rehearsed = trainer(cifar_dir, tmp_path / "rehearsed", recipe)
    rehearsed.plan(2)
    find_lr(rehearsed, steps=5)
    rehearsed.run()
    a, b = alone.model.state_dict(), rehearsed.model.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert alone.ema is not None and rehearsed.ema is not None
    for x, y in zip(
        alone.ema.state_dict().values(), rehearsed.ema.state_dict().values(), strict=True
    ):
        assert torch.equal(x, y)


def test_find_lr_refuses_what_it_cannot_sweep(cifar_dir: Path, tmp_path: Path) -> None:
    t = trainer(cifar_dir, tmp_path / "run")
    with pytest.raises(ValueError, match="0 < start < end"):
        find_lr(t, start=1.0, end=0.1)
    with pytest.raises(ValueError, match="at least 5 steps"):
        find_lr(t, steps=2)
    frozen = trainer(cifar_dir, tmp_path / "frozen", replace(RECIPE, lr=0.0))
    with pytest.raises(ValueError, match="lr is 0"):
        find_lr(frozen)


def test_each_loss_is_paired_with_the_lr_that_produced_it(cifar_dir: Path, tmp_path: Path) -> None:
    """A step's loss is measured before its update, so it shows the previous step's lr."""
    t = trainer(cifar_dir, tmp_path / "run", replace(RECIPE, mixup_alpha=0.2))
    calls: list[tuple[float, float, int]] = []  # (lr of the step, its loss, the step count)
    step = t._train_step

    def logged(group: list) -> tuple[float, int, int]:  # type: ignore[type-arg]
        lr, counted = t.optimizer.param_groups[0]["lr"], t.step
        loss, correct, seen = step(group)
        calls.append((lr, loss / seen, counted))
        return loss, correct, seen

    t._train_step = logged  # type: ignore[method-assign]
    sweep = find_lr(t, start=1e-4, end=1.0, steps=6)
    assert len(calls) == 7 and len(sweep.lrs) == 6  # one step more, to see the last lr
    for i, (lr, loss) in enumerate(zip(sweep.lrs, sweep.losses, strict=True)):
        assert lr == calls[i][0] and loss == calls[i + 1][1]
    # Steps are counted as in training (mixup draws each step's mix from the count), then
    # the count is put back.
    assert [c[2] for c in calls] == list(range(7)) and t.step == 0


def test_what_a_sweep_says_fits_how_it_ended() -> None:
    blown = LRSweep([1e-6], [2.0], [2.0], 1e-6, "diverged")
    assert "no limit found" not in describe(blown) and "NaN or infinite" in describe(blown)
    lrs = [1e-4, 1e-3, 1e-2]
    exploded = LRSweep(lrs, [2.0, 1.5, 1.0], [2.0, 1.5, 1.0], 1e-2, "exploded")
    assert "suggested --lr 0.01" in describe(exploded)
    falling = LRSweep(lrs, [2.0, 1.5, 1.0], [2.0, 1.5, 1.0], 1e-2, "end")
    assert "no limit found" in describe(falling)
    rising = LRSweep(lrs, [1.0, 1.5, 2.0], [1.0, 1.5, 2.0], 1e-4, "end")
    assert "never fell" in describe(rising)


def test_frozen_batchnorm_stays_frozen_after_a_rehearsal(cifar_dir: Path, tmp_path: Path) -> None:
    t = trainer(cifar_dir, tmp_path / "run", replace(RECIPE, freeze_bn=True))
    t._set_train_mode()
    modes = [m.training for m in t.model.modules()]
    assert not all(modes)  # the BNs are in eval mode
    t.plan(1)
    find_lr(t, steps=5)
    assert [m.training for m in t.model.modules()] == modes


def test_cli_find_lr_prints_a_suggestion_and_draws_it(
    cifar_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, plot = tmp_path / "run", tmp_path / "lr-curve"  # no suffix: written under that name
    argv = ["train", "--model", "resnet20", "--dataset", "cifar10", "--data-dir", str(cifar_dir)]
    # The default recipe's 1950-step warm-up and EMA are longer than this 10-step run: a run
    # would be refused, a sweep (its own schedule, the raw weights' loss) is not.
    argv += ["--out", str(out), "--batch-size", "25", "--num-threads", "1", "--epochs", "1"]
    assert main([*argv, "--find-lr", "8", "--lr-plot", str(plot)]) == 0
    text = capsys.readouterr().out
    assert "lr sweep: 8 steps from 1e-06 to 10" in text
    assert "lowest loss" in text and "(averaged) at lr" in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not out.exists()  # no run was written
    assert main([*argv, "--lr-plot", str(plot)]) == 2
    assert "--lr-plot draws the lr sweep: add --find-lr" in capsys.readouterr().err
    assert main([*argv, "--find-lr", "--resume"]) == 2
    assert "drop --resume" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # refused while parsing, before any data is read
        main([*argv, "--find-lr", "3"])
    assert "at least 5 steps, got 3" in capsys.readouterr().err
