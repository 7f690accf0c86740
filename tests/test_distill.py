"""Knowledge distillation: the soft term by hand, the teacher's inputs and classes, and runs
that distil, resume and record their teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from resnetkit.cli.main import main
from resnetkit.data.fast import Normalization
from resnetkit.models.loading import load_model
from resnetkit.models.model_dir import save_model_dir
from resnetkit.models.registry import create_model
from resnetkit.train.distill import distillation_loss, load_teacher, weights_digest
from resnetkit.train.recipe import Recipe
from resnetkit.train.trainer import Trainer, TrainSpec, train
from tests.fakedata import CLASSES, write_fake_cifar10
from tests.nets import randomize

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = Recipe(
    epochs=2,
    batch_size=50,
    lr=0.05,
    schedule="cosine",
    checkpoint_every_s=1e9,
    num_threads=1,
    teacher="resnet20.cifar10",
)
STUDENT_NORM = Normalization((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_cifar10(tmp_path_factory.mktemp("cifar"))


def spec(data: Path, out: Path, recipe: Recipe = TINY, **kw: object) -> TrainSpec:
    return TrainSpec(
        model="resnet20", dataset="cifar10", data_dir=data, out=out, recipe=recipe,
        progress=False, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def teacher_dir(tmp_path: Path, classes: list[str], *, name: str = "teacher", **kw: object) -> Path:
    model = randomize(create_model("resnet20", num_classes=len(classes)))
    pre = {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2], "input_size": 32}
    return save_model_dir(
        model, tmp_path / name, arch="resnet20", classes=classes, preprocessing=pre, **kw
    )  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the loss
def test_the_soft_term_and_its_gradient_by_hand() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 5, generator=g, requires_grad=True)
    t = torch.randn(6, 5, generator=g) * 3
    temp = 4.0
    p_t, p_s = (t / temp).softmax(1), (s / temp).softmax(1)
    by_hand = (p_t * (p_t.log() - p_s.log())).sum(1).mean() * temp**2
    loss = distillation_loss(s, t, temp)
    torch.testing.assert_close(loss, by_hand)
    loss.backward()
    # Hinton et al., eq. 2: dC/dz_i = (q_i - p_i) / T per image, times the T^2 that keeps it
    # at the hard term's scale
    torch.testing.assert_close(s.grad, temp * (p_s - p_t).detach() / 6)
    assert float(distillation_loss(t, t, temp)) == pytest.approx(0.0, abs=1e-6)

    s.grad = None
    loss = distillation_loss(s, t, 2.0, multi_label=True)
    q_t, q_s = (t / 2).sigmoid(), (s / 2).sigmoid()
    kl = q_t * (q_t / q_s).log() + (1 - q_t) * ((1 - q_t) / (1 - q_s)).log()
    torch.testing.assert_close(loss, kl.mean() * 4)
    assert float(distillation_loss(t, t, 2.0, multi_label=True)) == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    torch.testing.assert_close(s.grad, 2 * (q_s - q_t).detach() / 30)


# ----------------------------------------------------------------------------- the teacher
def test_the_teacher_sees_its_own_normalisation_and_answers_in_the_students_order(
    tmp_path: Path,
) -> None:
    # resnet56.paper_cifar10 subtracts a per-pixel mean; the student normalises per channel
    teacher = load_teacher(
        "resnet56.paper_cifar10", classes=CLASSES, norm=STUDENT_NORM, input_size=32,
        in_chans=3, multi_label=False,
    )  # fmt: skip
    raw = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    model = load_model("resnet56.paper_cifar10")
    pixel_mean = torch.tensor(model.pretrained_cfg["pixel_mean"]).view(3, 32, 32)
    with torch.no_grad():
        expected = model(raw.float() / 255 - pixel_mean)
    torch.testing.assert_close(teacher.logits(STUDENT_NORM.apply(raw)), expected)
    assert teacher.order is None and not next(teacher.model.parameters()).requires_grad

    # the same classes in another order: columns follow the student's names
    mixed = [*CLASSES[5:], *CLASSES[:5]]
    folder = teacher_dir(tmp_path, mixed)
    teacher = load_teacher(
        str(folder), classes=CLASSES, norm=STUDENT_NORM, input_size=32, in_chans=3,
        multi_label=False,
    )  # fmt: skip
    own = load_model(folder)
    x = STUDENT_NORM.apply(raw)
    with torch.no_grad():
        theirs = own((x * torch.tensor(STUDENT_NORM.std).view(1, 3, 1, 1)
                      + torch.tensor(STUDENT_NORM.mean).view(1, 3, 1, 1) - 0.5) / 0.2)  # fmt: skip
    logits = teacher.logits(x)
    torch.testing.assert_close(logits[:, CLASSES.index("cat")], theirs[:, mixed.index("cat")])
    torch.testing.assert_close(logits[:, 0], theirs[:, 5])
    assert teacher.sha256 == weights_digest(own) and len(teacher.sha256) == 64


def test_a_teacher_that_does_not_fit_is_refused_clearly(tmp_path: Path) -> None:
    def load(name: str | Path, **kw: object) -> object:
        args: dict[str, object] = dict(
            classes=CLASSES, norm=STUDENT_NORM, input_size=32, in_chans=3, multi_label=False
        )
        return load_teacher(str(name), **{**args, **kw})  # type: ignore[arg-type]

    with pytest.raises(ValueError, match=r"does not know the data's classes cat.*knows kitten"):
        load(teacher_dir(tmp_path, [c if c != "cat" else "kitten" for c in CLASSES]))
    # a teacher that knows more answers among the student's classes: its softmax restricted
    eleven = load(teacher_dir(tmp_path, [*CLASSES[::-1], "yak"], name="eleven"))
    assert eleven.order.tolist() == [9 - i for i in range(10)]  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="scores each class on its own"):
        load(teacher_dir(tmp_path, CLASSES, name="tags", multi_label=True))
    with pytest.raises(ValueError, match="picks one class an image"):
        load("resnet20.cifar10", multi_label=True)
    with pytest.raises(ValueError, match="takes 3-channel images, the student 1-channel"):
        load("resnet20.cifar10", in_chans=1)
    with pytest.raises(ValueError, match=r"per-pixel mean image of 32x32 pixels.*trains at 64"):
        load("resnet56.paper_cifar10", input_size=64)
    with pytest.warns(UserWarning, match="trained on 32-pixel images and sees the student's 64"):
        load("resnet20.cifar10", input_size=64)
    ckpt = tmp_path / "weights.safetensors"
    ckpt.write_bytes(b"x")
    with pytest.raises(ValueError, match="checkpoint file.*resnetkit convert"):
        load(ckpt)
    with pytest.raises(FileNotFoundError, match="no such model directory"):
        load(tmp_path / "nowhere" / "model")
    with pytest.raises(FileNotFoundError, match="teacher teacherdir: no such model directory"):
        load("teacherdir")  # a relative folder that is not there: not a registry error
    # a head without names: taken in the data's order, said so; another count is refused
    pre = {"mean": [0.5] * 3, "std": [0.2] * 3, "input_size": 32}
    for heads in (10, 5):
        model = randomize(create_model("resnet20", num_classes=heads))
        save_model_dir(model, tmp_path / f"nameless{heads}", arch="resnet20", classes=[],
                       preprocessing=pre)  # fmt: skip
    with pytest.warns(UserWarning, match="does not name its classes"):
        load(tmp_path / "nameless10")
    with pytest.raises(ValueError, match="has 5 classes and no names for them; the data has 10"):
        load(tmp_path / "nameless5")
    features = create_model("resnet20", num_classes=0)
    save_model_dir(features, tmp_path / "features", arch="resnet20", classes=[], preprocessing=pre)
    backbone = create_model("resnet20", features_only=True)  # keeps num_classes, answers maps
    save_model_dir(backbone, tmp_path / "maps", arch="resnet20", classes=[], preprocessing=pre)
    for name in ("features", "maps"):
        with pytest.raises(ValueError, match="no classifier head"):
            load(tmp_path / name)


# ----------------------------------------------------------------------------- runs
def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model" / "model.safetensors"))


def test_alpha_zero_trains_exactly_the_run_without_a_teacher(
    cifar_dir: Path, tmp_path: Path
) -> None:
    train(spec(cifar_dir, tmp_path / "plain", TINY.override({"teacher": ""})))
    with pytest.warns(UserWarning, match="distill_alpha 0: the teacher resnet20.cifar10 runs"):
        train(spec(cifar_dir, tmp_path / "zero", TINY.override({"distill_alpha": 0.0})))
    with pytest.warns(UserWarning, match="distill_temperature 2.0 weigh a teacher's answers"):
        plan = Trainer(spec(cifar_dir, tmp_path / "x", TINY.override(
            {"teacher": "", "distill_temperature": 2.0}), writes=False)).plan(1)  # fmt: skip
    assert plan["total_iters"] == 10
    plain, zero = final_weights(tmp_path / "plain"), final_weights(tmp_path / "zero")
    assert all(torch.equal(plain[k], zero[k]) for k in plain)


def test_a_distilled_student_follows_its_teacher_resumes_exactly_and_records_it(
    cifar_dir: Path, tmp_path: Path
) -> None:
    recipe = TINY.override({"epochs": 4, "distill_alpha": 1.0, "checkpoint_every_iters": 3})
    labels_only = train(spec(cifar_dir, tmp_path / "labels", recipe.override({"teacher": ""})))

    class Crash(Exception):
        pass

    def crash(step: int) -> None:
        if step == 7:
            raise Crash

    with pytest.raises(Crash):
        train(spec(cifar_dir, tmp_path / "kd", recipe, on_step=crash))
    distilled = train(spec(cifar_dir, tmp_path / "kd", recipe, resume=True))
    train(spec(cifar_dir, tmp_path / "kd-whole", recipe))
    whole, resumed = final_weights(tmp_path / "kd-whole"), final_weights(tmp_path / "kd")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)

    # With alpha 1 the labels go unused: the student learns the teacher's answers, which on
    # these coloured-noise images are far from the labels.
    from resnetkit.data.cifar import load_cifar

    test = load_cifar(cifar_dir, "cifar10", "test")
    raw = torch.from_numpy(test.images).permute(0, 3, 1, 2)
    teacher = load_model("resnet20.cifar10")
    pre = teacher.pretrained_cfg
    with torch.no_grad():
        wanted = teacher(Normalization(tuple(pre["mean"]), tuple(pre["std"])).apply(raw)).argmax(1)

    def agreement(model_dir: Path) -> float:
        model = load_model(model_dir)
        p = model.pretrained_cfg
        with torch.no_grad():
            answers = model(Normalization(tuple(p["mean"]), tuple(p["std"])).apply(raw)).argmax(1)
        return float((answers == wanted).float().mean())

    assert agreement(distilled.model_dir) > agreement(labels_only.model_dir) + 0.3
    run = json.loads((tmp_path / "kd" / "model" / "config.json").read_text())
    sha = weights_digest(teacher)
    assert run["provenance"]["teacher"] == {"name": "resnet20.cifar10", "sha256": sha}
    card = (tmp_path / "kd" / "model" / "README.md").read_text()
    assert f"distilled from `resnet20.cifar10` (weights sha256 {sha[:12]}...; alpha 1.0" in card

    # another teacher is another run; so is none, and one for a run that had none
    with pytest.raises(ValueError, match=r"teacher with weights of SHA-256 \w{12}\.\.\., and the "
                       "teacher now holds others"):  # fmt: skip
        train(spec(cifar_dir, tmp_path / "kd", recipe.override(
            {"teacher": "resnet20.paper_cifar10"}), resume=True))  # fmt: skip
    with pytest.raises(ValueError, match="asked to go on without it"):
        train(spec(cifar_dir, tmp_path / "kd", recipe.override({"teacher": ""}), resume=True))
    with pytest.raises(ValueError, match="without a teacher, and the run is now asked to distil"):
        train(spec(cifar_dir, tmp_path / "labels", recipe, resume=True))


def test_a_teacher_directory_changed_under_a_run_is_refused(
    cifar_dir: Path, tmp_path: Path
) -> None:
    folder = teacher_dir(tmp_path, CLASSES)
    recipe = TINY.override({"teacher": str(folder), "checkpoint_every_iters": 2})

    def crash(step: int) -> None:
        if step == 3:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        train(spec(cifar_dir, tmp_path / "run", recipe, on_step=crash))
    # the same teacher moved elsewhere (or named from another folder) goes on
    moved = folder.rename(tmp_path / "moved")
    moved_recipe = recipe.override({"teacher": str(moved)})
    with pytest.raises(RuntimeError):
        train(spec(cifar_dir, tmp_path / "run", moved_recipe, on_step=crash, resume=True))
    moved.rename(folder)
    other = randomize(create_model("resnet20", num_classes=10), seed=1)
    pre = {"mean": [0.5] * 3, "std": [0.2] * 3, "input_size": 32}
    save_model_dir(other, folder, arch="resnet20", classes=CLASSES, preprocessing=pre, replace=True)
    with pytest.raises(ValueError, match="teacher now holds others.*another --out"):
        train(spec(cifar_dir, tmp_path / "run", recipe, resume=True))
    # a teacher inside the run's own folder would be overwritten by it
    inside = teacher_dir(tmp_path / "new", CLASSES, name="model")
    with pytest.raises(ValueError, match="inside the run's --out"):
        train(spec(cifar_dir, tmp_path / "new", recipe.override({"teacher": str(inside)})))


def test_a_multi_label_student_learns_from_a_multi_label_teacher(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    rng = np.random.default_rng(0)
    rows = ["path,labels,split"]
    for i in range(40):
        tags = "|".join(t for t in ("red", "blue") if rng.random() < 0.5)
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "imgs" / f"{i}.png")
        rows.append(f"imgs/{i}.png,{tags},{'train' if i < 32 else 'val'}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    # the teacher lists red first; the data's classes are sorted (blue, red)
    folder = teacher_dir(tmp_path, ["red", "blue"], multi_label=True)
    recipe = TINY.override({"teacher": str(folder), "batch_size": 16, "distill_alpha": 0.5})
    teacher = load_teacher(
        str(folder), classes=["blue", "red"], norm=STUDENT_NORM, input_size=32, in_chans=3,
        multi_label=True,
    )  # fmt: skip
    assert teacher.order is not None and teacher.order.tolist() == [1, 0]
    result = train(
        TrainSpec(model="resnet20", dataset="folder", data_dir=tmp_path / "labels.csv",
                  out=tmp_path / "run", recipe=recipe, progress=False)
    )  # fmt: skip
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in result.history)
    assert "val_map" in result.metrics


def test_the_command_line_distils(
    cifar_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--model", "resnet20", "--dataset", "cifar10", "--data-dir", str(cifar_dir)]
    argv += ["--epochs", "1", "--batch-size", "50", "--num-threads", "1", "--ema-decay", "0"]
    argv += ["--warmup-iters", "0"]
    argv += ["--teacher", "resnet56.paper_cifar10"]
    run = ["--out", str(tmp_path / "run"), "--distill-temperature", "2"]
    assert main([*argv, *run]) == 0
    err = capsys.readouterr().err
    assert "distilled from resnet56.paper_cifar10 (alpha 0.9, T 2)" in err, err
    assert main([*argv, "--out", str(tmp_path / "bad"), "--distill-alpha", "1.5"]) == 2
    assert "'distill_alpha' is 1.5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--teacher" in capsys.readouterr().out


def test_two_ddp_processes_distil_from_the_same_teacher(cifar_dir: Path, tmp_path: Path) -> None:
    import os
    import subprocess

    from tests.test_train import torchrun_train

    out = tmp_path / "ddp"
    options = ["--dataset", "cifar10", "--recipe", "fast-cifar", "--batch-size", "50"]
    options += ["--warmup-iters", "2", "--ema-decay", "0", "--teacher", "resnet20.cifar10"]
    cmd = torchrun_train(cifar_dir, out, 1, *options)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["world_size"] == 2 and rows[-1]["step"] == 5
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["provenance"]["teacher"]["name"] == "resnet20.cifar10"
    assert "distilled from resnet20.cifar10" in proc.stderr


def test_a_streamed_folder_run_distils_with_the_teacher_in_its_own_normalisation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    from PIL import Image

    from resnetkit.train.distill import Teacher

    rng = np.random.default_rng(0)
    for name in ("apple", "sky"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / name / f"{i}.png")
    folder = teacher_dir(tmp_path, ["sky", "apple"])  # mean 0.5, std 0.2, 32 pixels
    recipe = TINY.override(
        {"teacher": str(folder), "augment": "imagenet", "batch_size": 8, "epochs": 1}
    )
    seen: list[torch.Tensor] = []
    real = Teacher.logits

    def spy(self: Teacher, x: torch.Tensor) -> torch.Tensor:
        seen.append(x)
        return real(self, x)

    monkeypatch.setattr(Teacher, "logits", spy)
    run = TrainSpec(model="resnet20", dataset="folder", data_dir=tmp_path / "data",
                    out=tmp_path / "run", recipe=recipe, image_size=64, progress=False)  # fmt: skip
    with pytest.warns(UserWarning, match="trained on 32-pixel images and sees the student's 64"):
        t = Trainer(run)
    assert t.data.streaming and t.teacher is not None
    # streamed crops are normalised with ImageNet's statistics; the teacher wants 0.5 / 0.2
    x = torch.rand(2, 3, 64, 64)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (t.norm.mean, t.norm.std))
    with torch.no_grad():
        expected = load_model(folder)((x * std + mean - 0.5) / 0.2)[:, [1, 0]]  # sky first
    torch.testing.assert_close(real(t.teacher, x), expected, rtol=1e-4, atol=1e-4)
    t.run()
    assert seen and all(batch.shape[-1] == 64 for batch in seen)
