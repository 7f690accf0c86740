"""Export: BatchNorm folding parity, ONNX / TorchScript / ExportedProgram round trips checked in
their own runtimes, dynamic batch, the CLI, and a broken export that must be refused."""

from __future__ import annotations

import copy
import functools
import json
import zipfile
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch
from torch import Tensor, nn

from resnetkit.cli.main import main
from resnetkit.data.cifar import CIFAR_MEAN, CIFAR_STD
from resnetkit.export import (
    ExportVerificationError,
    export_model,
    fold_batchnorm,
    fold_conv_bn,
)
from resnetkit.export import exporter as exporter_module
from resnetkit.export.metadata import metadata_text, read_metadata
from resnetkit.models.model_dir import save_model_dir
from resnetkit.models.registry import create_model
from resnetkit.models.resnet import ResNet


def trained_like(name: str) -> ResNet:
    """A fresh copy of :func:`_trained_like` (built once per name: the deep nets take seconds)."""
    return copy.deepcopy(_trained_like(name))


pytestmark = pytest.mark.usefixtures("one_thread")


@functools.cache
def _trained_like(name: str) -> ResNet:
    """A random model whose BatchNorms look trained: random affine parameters and running
    statistics measured on data, so folding is far from the identity and activations stay O(1)."""
    model = create_model(name, num_classes=10)
    assert isinstance(model, ResNet)
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batch
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, *small_input(model), generator=g))
    return model.eval()


def small_input(model: ResNet) -> tuple[int, int]:
    """The smallest convenient input: 16x16 for CIFAR nets, 32x32 for ImageNet ones."""
    side = max(model.min_input_size, 16)
    return side, side


def count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.fixture(scope="module")
def resnet20() -> ResNet:
    torch.manual_seed(0)
    model = trained_like("resnet20")
    model.pretrained_cfg = {  # type: ignore[assignment]
        "mean": CIFAR_MEAN["cifar10"],
        "std": CIFAR_STD["cifar10"],
        "input_size": 32,
    }
    return model


# --- BatchNorm folding -------------------------------------------------------------------------

# (name, BatchNorm layers left after folding): only the BNs that precede a conv stay, i.e. the
# first BN of each of the 54 pre-activation blocks plus the final BN of PreAct-ResNet-110.
FOLD_CASES = [("resnet20", 0), ("resnet50", 0), ("preact_resnet110", 55), ("resnet50d", 0)]


@pytest.mark.parametrize(("name", "bn_left"), FOLD_CASES)
def test_fold_batchnorm_is_exact(name: str, bn_left: int) -> None:
    """In float64 the folded net equals the original to rounding: the algebra is right.

    (In float32 a 50-layer net differs from exact arithmetic by ~1e-4 even unfolded, so only
    the shallow or well-conditioned nets are compared at 1e-5 in float32, below.)
    """
    model = trained_like(name).double()
    before = copy.deepcopy(model.state_dict())
    folded = fold_batchnorm(model)
    x = torch.randn(2, 3, *small_input(model), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=0, atol=1e-9)
    assert count_bn(folded) == bn_left
    assert not folded.training
    # The original is left alone.
    assert count_bn(model) > bn_left
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet110"])
def test_fold_batchnorm_float32_parity(name: str) -> None:
    model = trained_like(name)
    folded = fold_batchnorm(model)
    x = torch.randn(2, 3, *small_input(model))
    with torch.no_grad():
        assert float((folded(x) - model(x)).abs().max()) <= 1e-5


def test_fold_resnet50d_avg_down_shortcut() -> None:
    """ResNet-D's shortcut is pool -> conv -> BN; its conv absorbs the BN."""
    folded = fold_batchnorm(trained_like("resnet50d"))
    downsample = folded.layer2[0].downsample  # type: ignore[union-attr, index]
    assert isinstance(downsample[0], nn.AvgPool2d)
    assert isinstance(downsample[1], nn.Conv2d) and downsample[1].bias is not None
    assert isinstance(downsample[2], nn.Identity)


def test_fold_refuses_batchnorm_without_running_stats() -> None:
    conv = nn.Conv2d(3, 4, 3, bias=False)
    with pytest.raises(ValueError, match="running statistics"):
        fold_conv_bn(conv, nn.BatchNorm2d(4, track_running_stats=False))


# --- export, verified in the target runtime ----------------------------------------------------


def onnx_input_dims(path: Path) -> list[int | str]:
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


def ort_logits(path: Path, x: Tensor) -> Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def test_onnx_static_batch(resnet20: ResNet, tmp_path: Path) -> None:
    report = export_model(resnet20, "onnx", tmp_path / "m.onnx")
    assert report.path.is_file() and report.size_bytes == report.path.stat().st_size
    assert report.batch_sizes == (1,)
    assert report.opset == 18
    assert report.exporter.startswith("torch.onnx.export(dynamo=")
    assert report.folded_batchnorms == 19
    assert report.max_abs_diff_image <= 1e-4 and report.max_abs_diff_random <= 1e-4
    assert onnx_input_dims(report.path) == [1, 3, 32, 32]
    assert read_metadata(report.path) == {  # what a deployment needs beside the weights
        "classes": [],
        "mean": list(CIFAR_MEAN["cifar10"]),
        "std": list(CIFAR_STD["cifar10"]),
        "input_size": 32,
        "arch": "resnet20",
        "num_classes": 10,
    }


def test_onnx_dynamic_batch_runs_batch_1_and_3(resnet20: ResNet, tmp_path: Path) -> None:
    report = export_model(resnet20, "onnx", tmp_path / "m.onnx", dynamic_batch=True)
    assert report.batch_sizes == (1, 3)
    assert report.input_shape[0] == "batch"
    dims = onnx_input_dims(report.path)
    assert isinstance(dims[0], str) and dims[0] and dims[1:] == [3, 32, 32]
    for batch in (1, 3):  # independently of the exporter's own check
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            want = resnet20(x)
        got = ort_logits(report.path, x)
        assert got.shape == (batch, 10)
        assert float((got - want).abs().max()) <= 1e-4


def test_onnx_without_folding_keeps_batchnorm(resnet20: ResNet, tmp_path: Path) -> None:
    report = export_model(resnet20, "onnx", tmp_path / "m.onnx", fold_bn=False, opset=17)
    # (The TorchScript-based ONNX exporter folds eval-mode BNs by itself when it can.)
    assert report.folded_batchnorms == 0 and report.opset == 17
    assert onnx.load(str(report.path)).opset_import[0].version == 17
    assert report.max_abs_diff <= 1e-4


def test_torchscript_dynamic_batch(resnet20: ResNet, tmp_path: Path) -> None:
    report = export_model(resnet20, "torchscript", tmp_path / "m.ts", dynamic_batch=True)
    assert report.batch_sizes == (1, 3) and report.exporter == "torch.jit.trace"
    assert report.max_abs_diff <= 1e-4
    assert read_metadata(report.path)["std"] == list(CIFAR_STD["cifar10"])


@pytest.mark.parametrize("fmt, name", [("torchscript", "m.ts"), ("exported-program", "m.pt2")])
def test_the_archive_is_named_after_the_file(
    resnet20: ResNet, tmp_path: Path, fmt: exporter_module.Format, name: str
) -> None:
    """The file was written as m.unverified.ts and renamed: its members were m.unverified/..."""
    report = export_model(resnet20, fmt, tmp_path / name)
    with zipfile.ZipFile(report.path) as archive:
        tops = {member.split("/")[0] for member in archive.namelist()}
    assert tops == {"m"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # the hidden folder is gone


def test_exported_program_dynamic_batch(resnet20: ResNet, tmp_path: Path) -> None:
    report = export_model(resnet20, "exported-program", tmp_path / "m.pt2", dynamic_batch=True)
    assert report.batch_sizes == (1, 3) and report.exporter == "torch.export.export"
    assert report.max_abs_diff <= 1e-4
    assert read_metadata(report.path)["input_size"] == 32
    loaded = torch.export.load(str(report.path)).module()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert float((loaded(x) - resnet20(x)).abs().max()) <= 1e-4


def test_export_checks_arguments(resnet20: ResNet, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown export format"):
        export_model(resnet20, "caffe2", tmp_path / "m")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ONNX only"):
        export_model(resnet20, "torchscript", tmp_path / "m.ts", opset=17)
    with pytest.raises(ValueError, match=r"opset 99 cannot be written here: choose 11 to 23"):
        export_model(resnet20, "onnx", tmp_path / "m.onnx", opset=99)
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(
        ValueError,
        match=r"m.ts: the name says torchscript, the format is onnx: "
        r"name it m.onnx, or pass --format torchscript",
    ):
        export_model(resnet20, "onnx", tmp_path / "m.ts")
    with pytest.raises(ValueError, match="is not an ONNX, TorchScript or ExportedProgram file"):
        read_metadata(Path(__file__))
    # Found out before the export runs (a folder failed only at the final rename, leaving
    # the unverified file behind; a NaN tolerance read as a failed verification).
    (tmp_path / "exp").mkdir()
    with pytest.raises(IsADirectoryError, match="exp is a folder: give a file name"):
        export_model(resnet20, "torchscript", tmp_path / "exp")
    for tolerance in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="tolerance must be a positive number"):
            export_model(resnet20, "torchscript", tmp_path / "m.pt", tolerance=tolerance)
    with pytest.raises(ValueError, match="input_size must be at least 1 pixel, got 0"):
        export_model(resnet20, "torchscript", tmp_path / "m.pt", input_size=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


def _corrupt_runtime(monkeypatch: pytest.MonkeyPatch, offset: float) -> None:
    """Make the loaded runtime return slightly wrong logits, as a bad exporter would."""
    real = exporter_module.load_exported

    def broken(path: Path, fmt: exporter_module.Format) -> exporter_module.Runner:
        run = real(path, fmt)
        return lambda x: [out + offset for out in run(x)]

    monkeypatch.setattr(exporter_module, "load_exported", broken)


def test_broken_export_is_refused(
    resnet20: ResNet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _corrupt_runtime(monkeypatch, 1e-3)
    # 1e-3 plus ONNX Runtime's own rounding (1.001e-03 seen)
    with pytest.raises(ExportVerificationError, match=r"1\.00\de-03 on the real image") as err:
        export_model(resnet20, "onnx", tmp_path / "m.onnx")
    assert not err.value.report.passed
    assert err.value.report.max_abs_diff == pytest.approx(1e-3, abs=1e-5)
    assert "try another format or opset" in str(err.value)
    # Within a few times float32's own rounding of these outputs (a model with huge logits):
    # the message says how to accept it instead of sending the user to other formats.
    monkeypatch.setattr(exporter_module, "_float32_noise", lambda *_: 5e-4)
    with pytest.raises(ExportVerificationError, match=r"accept it with --tolerance 1\.0e-03"):
        export_model(resnet20, "onnx", tmp_path / "m2.onnx")


def test_a_failed_export_never_replaces_a_verified_file(
    resnet20: ResNet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "m.onnx"
    assert export_model(resnet20, "onnx", target).passed
    verified = target.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # moved onto the target
    _corrupt_runtime(monkeypatch, 1e-3)
    kept = tmp_path / ".m.onnx.unverified" / "m.onnx"
    with pytest.raises(ExportVerificationError, match="m.onnx was left as it was") as err:
        export_model(resnet20, "onnx", target)
    assert target.read_bytes() == verified
    assert err.value.report.path == kept
    assert kept.is_file() and f"kept for inspection at {kept}" in str(err.value)


# --- CLI ---------------------------------------------------------------------------------------


@pytest.fixture()
def model_dir(resnet20: ResNet, tmp_path: Path) -> Path:
    return save_model_dir(
        resnet20,
        tmp_path / "model",
        arch="resnet20",
        classes=[f"class{i}" for i in range(10)],
        preprocessing=dict(resnet20.pretrained_cfg),  # type: ignore[arg-type]
    )


def test_cli_export(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.onnx"
    args = ["--model", str(model_dir), "--out", str(out), "--dynamic-batch"]
    code = main(["export", "--format", "onnx", *args])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert out.is_file()
    assert str(out) in printed and "MB" in printed
    assert "batch sizes 1, 3" in printed
    assert "real image" in printed and "random input" in printed


def test_cli_export_fails_with_status_2(
    model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _corrupt_runtime(monkeypatch, 1.0)
    args = ["--model", str(model_dir), "--out", str(tmp_path / "m.ts")]
    code = main(["export", "--format", "torchscript", *args])
    captured = capsys.readouterr()
    assert code == 2
    assert "FAILED" in captured.out
    assert "does not reproduce the eager model" in captured.err


def test_export_refuses_a_name_without_suffix(
    resnet20: ResNet, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out m wrote a file named m; refused before anything is loaded, as quantize refuses
    a name without .onnx, with the format's usual suffix (Core ML's folder included)."""
    for fmt, fixed in (("onnx", "m.onnx"), ("torchscript", "m.ts"), ("coreml", "m.mlpackage")):
        code = main(["export", "--format", fmt, "--model", str(model_dir), "--out", "m"])
        assert code == 2
        err = capsys.readouterr().err
        assert f"m: export writes {exporter_module.FORMAT_NOUNS[fmt]}" in err
        assert f"needs a suffix (usually {fixed[1:]}): name it {fixed}" in err
    with pytest.raises(ValueError, match=r"name it .*m\.pt2"):
        export_model(resnet20, "exported-program", tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_the_file_says_the_size_it_was_exported_at_and_whether_it_classifies(
    resnet20: ResNet, tmp_path: Path
) -> None:
    """--input-size 64 wrote input_size 32 (the file then failed on every image), and a
    backbone's features were served as 64 classes."""
    from resnetkit.export.runtime import OrtClassifier
    from resnetkit.models.loading import load_classifier
    from resnetkit.predict import class_names

    big = export_model(resnet20, "onnx", tmp_path / "big.onnx", input_size=64, dynamic_batch=True)
    model = load_classifier(big.path)
    assert model.pretrained_cfg["input_size"] == 64
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    headless = trained_like("resnet20")
    headless.reset_classifier(0)
    headless.pretrained_cfg = resnet20.pretrained_cfg  # type: ignore[assignment]
    path = export_model(headless, "onnx", tmp_path / "features.onnx").path
    features = OrtClassifier(path)
    assert features.num_classes == 0
    with pytest.raises(ValueError, match="no classifier head"):
        class_names(features)
    backbone = create_model("resnet20", features_only=True)  # keeps num_classes=10, no head
    assert json.loads(metadata_text(backbone, {}, 32))["num_classes"] == 0
    # at another size the original's resize and crop share go: predict and evaluate then
    # both use the one default (resize 256, crop 224), as they would disagree otherwise
    cfg = {"input_size": 32, "resize": 32, "crop": 32, "crop_pct": 1.0, "interpolation": "bilinear"}
    at_224 = json.loads(metadata_text(backbone, cfg, 224))
    assert at_224["input_size"] == 224 and not {"resize", "crop", "crop_pct"} & set(at_224)
    with pytest.raises(FileNotFoundError, match="no such ONNX file"):
        load_classifier(tmp_path / "missing.onnx")
    pixel_mean = trained_like("resnet20")
    pixel_mean.pretrained_cfg = {**resnet20.pretrained_cfg, "pixel_mean": [0.5] * 3072}
    with pytest.raises(ValueError, match="per-pixel mean of 32x32 images: export it at that"):
        export_model(pixel_mean, "onnx", tmp_path / "pm.onnx", input_size=64)


def test_an_exported_file_is_not_taken_for_a_bare_checkpoint(tmp_path: Path) -> None:
    from resnetkit.models.loading import load_model

    for name in ("m.ts", "m.pt2"):
        (tmp_path / name).write_bytes(b"exported")
        for arch in (None, "resnet20"):  # --arch would only lead to "unknown format"
            with pytest.raises(ValueError, match=r"is an exported model, which runs outside"):
                load_model(tmp_path / name, arch=arch)


def test_evaluate_names_the_size_an_onnx_file_takes(
    resnet20: ResNet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = export_model(resnet20, "onnx", tmp_path / "r.onnx").path
    argv = ["evaluate", "--model", str(path), "--dataset", "cifar10-sample", "--image-size", "64"]
    assert main(argv) == 2
    assert "takes 32x32 inputs; drop --image-size" in capsys.readouterr().err


def test_half_onnx_is_float16_inside_float32_outside(
    resnet20: ResNet, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full = export_model(resnet20, "onnx", tmp_path / "f32.onnx", dynamic_batch=True)
    half = export_model(resnet20, "onnx", tmp_path / "f16.onnx", dynamic_batch=True, half=True)
    assert half.tolerance == 0.1 and half.passed and "float16 weights" in " ".join(half.notes)
    assert half.size_bytes < 0.6 * full.size_bytes
    graph = onnx.load(str(half.path)).graph
    weights = {init.data_type for init in graph.initializer if len(init.dims) == 4}
    assert weights == {onnx.TensorProto.FLOAT16}  # every conv kernel stored in half
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        want = resnet20(x)
    got = ort_logits(half.path, x)  # a float32 batch in, float32 logits out
    assert got.dtype == torch.float32
    assert 1e-5 < float((got - want).abs().max()) < 0.1  # rounded, not broken
    assert torch.equal(got.argmax(1), want.argmax(1))
    with pytest.raises(ValueError, match="--half applies to ONNX only"):
        export_model(resnet20, "torchscript", tmp_path / "m.ts", half=True)
    args = ["--model", str(model_dir), "--format", "onnx", "--half"]
    assert main(["export", *args, "--out", str(tmp_path / "cli.onnx")]) == 0
    assert "float16 weights and activations" in capsys.readouterr().out
