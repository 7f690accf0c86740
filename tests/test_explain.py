"""Grad-CAM and embeddings."""

import json
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import resnetkit
from resnetkit.cli.main import main
from resnetkit.explain import embed, explain_image, grad_cam, nearest
from resnetkit.models.model_dir import load_model_dir, save_model_dir
from resnetkit.models.registry import create_model

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def asset(name: str) -> Path:
    return Path(str(resources.files("resnetkit.assets").joinpath(name)))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = create_model("resnet20")
    pre = {"input_size": 32, "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}
    out = tmp_path_factory.mktemp("m") / "model"
    return save_model_dir(model, out, arch="resnet20", classes=CLASSES, preprocessing=pre)


def by_hand(path: Path) -> torch.Tensor:
    x = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float()
    mean = torch.tensor([0.49, 0.48, 0.45]).view(3, 1, 1)
    std = torch.tensor([0.25, 0.24, 0.26]).view(3, 1, 1)
    return ((x / 255 - mean) / std)[None]


def test_grad_cam_matches_an_independent_computation(model_dir: Path) -> None:
    model = load_model_dir(model_dir).eval()
    x = by_hand(asset("cat.png"))
    model.fc.weight.grad = torch.ones_like(model.fc.weight)  # a caller's accumulated gradient
    cam, cls, prob = grad_cam(model, x, target=3)
    assert torch.equal(model.fc.weight.grad, torch.ones_like(model.fc.weight))  # left as it was
    model.fc.weight.grad = None
    assert cls == 3 and 0 < prob < 1 and cam.shape == (32, 32)
    assert float(cam.min()) == 0.0 and float(cam.max()) == pytest.approx(1.0)
    # Reference: the gradient of the class score with respect to the last feature map.
    features = model.forward_features(x)
    score = model.forward_head(features)[0, 3]
    (grad,) = torch.autograd.grad(score, features)
    ref = F.relu((grad.mean((2, 3), keepdim=True) * features).sum(1, keepdim=True)).detach()
    ref = F.interpolate(ref, size=(32, 32), mode="bilinear", align_corners=False)[0, 0]
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    torch.testing.assert_close(cam, ref)
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="out of range"):
        grad_cam(model, x, target=10)


def test_explain_writes_an_overlay_png(model_dir: Path, tmp_path: Path) -> None:
    model = load_model_dir(model_dir)
    result = explain_image(model, asset("ship.png"), tmp_path / "cam.png")
    assert result["class"] in CLASSES
    overlay = Image.open(tmp_path / "cam.png")
    assert overlay.size == (256, 256) and overlay.mode == "RGB"


def test_overlay_shows_the_part_the_model_saw(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wide picture is centre-cropped for the model; the heatmap lies over that crop, not
    stretched over the whole picture. Columns 0-47 of 128 are black, the rest white; the
    model sees columns 32-95, so a quarter of the overlay is dark, not three eighths."""
    import resnetkit.explain as explain

    pixels = np.zeros((64, 128, 3), dtype=np.uint8)
    pixels[:, 48:] = 255
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    monkeypatch.setattr(explain, "grad_cam", lambda m, x, t: (torch.ones(32, 32), 0, 0.5))
    explain_image(load_model_dir(model_dir), tmp_path / "wide.png", tmp_path / "cam.png", alpha=0)
    shown = np.asarray(Image.open(tmp_path / "cam.png").convert("L"), dtype=float)
    assert shown.shape == (256, 256)
    assert shown[:, :56].mean() < 10 and shown[:, 72:].mean() > 245


def test_grad_cam_works_on_a_frozen_model(model_dir: Path) -> None:
    model = load_model_dir(model_dir).requires_grad_(False)
    cam, cls, _ = grad_cam(model, by_hand(asset("cat.png")))
    assert cam.shape == (32, 32) and float(cam.max()) == pytest.approx(1.0)


def test_embed_gives_pooled_features_and_finds_neighbours(model_dir: Path, tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()
    for name in ("cat.png", "ship.png", "automobile.png"):
        shutil.copy(asset(name), pool / name)
    (pool / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    model = load_model_dir(model_dir)
    found = embed(model, [pool], batch_size=2)
    assert [Path(p).name for p in found.paths] == ["automobile.png", "cat.png", "ship.png"]
    assert found.vectors.shape == (3, 64)
    assert [Path(f["path"]).name for f in found.failures] == ["broken.png"]
    with torch.no_grad():
        expected = model.eval().forward_head(
            model.forward_features(by_hand(asset("cat.png"))), pre_logits=True
        )
    np.testing.assert_allclose(found.vectors[1], expected[0].numpy(), rtol=1e-4, atol=1e-5)
    in_double = embed(model.double(), [pool], batch_size=2)  # batches take the model's dtype
    assert in_double.vectors.dtype == np.float32
    np.testing.assert_allclose(in_double.vectors, found.vectors, rtol=1e-4, atol=1e-5)
    model.float()
    scores, order = nearest(found.vectors[[2]], found.vectors, k=2)
    assert order[0, 0] == 2 and scores[0, 0] == pytest.approx(1.0)


def test_cli_explain_and_embed(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "explain",
                "--model",
                str(model_dir),
                str(asset("cat.png")),
                "--out",
                str(tmp_path / "cam.png"),
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["heatmap"].endswith("cam.png")
    assert (
        main(
            [
                "embed",
                "--model",
                str(model_dir),
                str(asset("cat.png")),
                str(asset("ship.png")),
                "--out",
                str(tmp_path / "v.npy"),
                "--search",
                str(asset("cat.png").parent),
                "--k",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert np.load(tmp_path / "v.npy").shape == (2, 64)
    assert "cat.png: " in out and "cat.png (1.000)" in out


def test_cli_explain_takes_a_class_name(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["explain", "--model", str(model_dir), str(asset("cat.png"))]
    assert main([*argv, "--out", str(tmp_path / "cam.jpg"), "--target", "ship"]) == 0
    assert json.loads(capsys.readouterr().out)["class"] == "ship"
    assert Image.open(tmp_path / "cam.jpg").format == "JPEG"  # the format its name says
    assert main([*argv, "--out", str(tmp_path / "x.png"), "--target", "kangaroo"]) == 2
    assert "neither a class index nor one of" in capsys.readouterr().err
    (tmp_path / "notes.png").write_text("not a picture")  # never replaced by the heatmap
    with pytest.raises(SystemExit):
        main([*argv, "--out", str(tmp_path / "notes.png")])
    assert "notes.png exists and is not a picture" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "cam.jpg")]) == 0  # a previous result: redone


def test_a_class_named_by_a_number_is_its_name_first() -> None:
    """Folders named 1, 2, 3: --target 1 is the class "1" (index 0), not index 1."""
    from resnetkit.cli.explain import _target

    model = create_model("resnet20", num_classes=3)
    model.pretrained_cfg = {"classes": ["1", "2", "3"], "mean": [0.5] * 3, "std": [0.25] * 3}
    assert [_target(t, model) for t in ("1", "3", "0")] == [0, 2, 0]  # "0": no such name
    assert _target(None, model) is None


def test_library_calls_with_one_path_or_a_wrong_target(model_dir: Path, tmp_path: Path) -> None:
    """embed took a lone folder name letter by letter (0 vectors, a failure per letter), and
    explain_image wrote its heatmap over the photo it explained, or PNG bytes into a .txt."""
    model = load_model_dir(model_dir)
    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(asset("cat.png"), folder / "cat.png")
    one = embed(model, str(folder))
    assert one.paths == [str(folder / "cat.png")] and not one.failures
    np.testing.assert_allclose(one.vectors, embed(model, [folder]).vectors, atol=1e-6)
    for bad, error in (([], ValueError), (Image.open(folder / "cat.png"), TypeError)):
        with pytest.raises(error, match="no images given|image file or folder paths"):
            embed(model, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        embed(model, folder, batch_size=0)
    photo = folder / "cat.png"
    before = photo.read_bytes()
    with pytest.raises(ValueError, match="is the image being explained"):
        explain_image(model, photo, folder / "." / "cat.png")
    with pytest.raises(ValueError, match=r"heat.txt: not an image file name"):
        explain_image(model, photo, tmp_path / "heat.txt")
    assert photo.read_bytes() == before and not (tmp_path / "heat.txt").exists()
    explain_image(model, photo, tmp_path / "heat.jpg")
    assert Image.open(tmp_path / "heat.jpg").format == "JPEG"


def test_a_target_that_is_not_a_class_index_is_refused(model_dir: Path) -> None:
    """target=2.7 explained class 2 without a word; "cat" failed in int()."""
    model = load_model_dir(model_dir)
    x = torch.zeros(1, 3, 32, 32)
    for target in (2.7, "cat", True):
        with pytest.raises(TypeError, match="target must be a class index"):
            grad_cam(model, x, target)  # type: ignore[arg-type]
    assert grad_cam(model, x, np.int64(2))[1] == 2
    with pytest.raises(ValueError, match="arch is for a model given by its file"):
        resnetkit.predict(model, [asset("cat.png")], arch="resnet56")


def test_a_backbone_has_nothing_to_explain() -> None:
    """A features_only model was explained through the head it does not use."""
    backbone = create_model("resnet20", features_only=True)
    with pytest.raises(ValueError, match="features_only backbone: it has no class scores"):
        grad_cam(backbone, torch.zeros(1, 3, 32, 32))
