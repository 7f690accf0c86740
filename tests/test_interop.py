"""Interop: parity with torchvision, timm and Hugging Face models built with random weights (both
directions), Keras name mapping, training-script checkpoints, and mismatches explained."""

from __future__ import annotations

import copy
import functools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
import torchvision
import transformers
from torch import Tensor, nn

import resnetkit
from resnetkit.cli.main import main
from resnetkit.interop import (
    CheckpointMismatchError,
    convert_checkpoint,
    detect_format,
    load_checkpoint,
    read_checkpoint,
    to_huggingface,
    to_keras_dict,
    to_timm,
    to_torchvision,
)
from resnetkit.models.hf_hub import TIMM_ARCHS
from resnetkit.models.loading import load_model
from resnetkit.models.registry import create_model
from resnetkit.models.resnet import ResNet
from tests.nets import randomize

TOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")


def ours(name: str, **changes: Any) -> ResNet:
    model = create_model(name, **changes)
    assert isinstance(model, ResNet)
    return model.eval()


def images(size: int = 64, chans: int = 3, batch: int = 2) -> Tensor:
    return torch.randn(batch, chans, size, size, generator=torch.Generator().manual_seed(1))


def assert_same(a: Tensor, b: Tensor) -> None:
    assert a.shape == b.shape
    diff = (a - b).abs().max().item()
    assert diff <= TOL, f"max abs diff {diff}"


@torch.no_grad()
def out(model: nn.Module, x: Tensor) -> Tensor:
    y = model.eval()(x)
    return y.logits if hasattr(y, "logits") else y


# --- parity with reference implementations ------------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_round_trip(name: str) -> None:
    reference = randomize(getattr(torchvision.models, name)(num_classes=10))
    model = ours(name, num_classes=10)
    report = load_checkpoint(model, reference.state_dict())
    assert report.loaded and report.source_format == "torchvision" and not report.diagnosis
    x = images()
    assert_same(out(model, x), out(reference, x))

    back = getattr(torchvision.models, name)(num_classes=10)
    back.load_state_dict(to_torchvision(model), strict=True)
    # Told it is Keras, torchvision's names would pass through and load as BGR weights with
    # caffe preprocessing: refused instead.
    with pytest.raises(ValueError, match="look like torchvision .*leave out --from keras"):
        load_checkpoint(ours(name, num_classes=10), reference.state_dict(), source_format="keras")
    assert_same(out(back, x), out(reference, x))


def test_load_checkpoint_names_a_model_that_is_not_a_resnet(tmp_path: Path) -> None:
    """Another network, or the arguments swapped, failed on a missing 'name' attribute or
    inside pathlib."""
    state = create_model("resnet20").state_dict()
    with pytest.raises(TypeError, match="into a resnetkit ResNet, got Linear as model"):
        load_checkpoint(torch.nn.Linear(2, 2), state)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got str as model: the arguments look swapped"):
        load_checkpoint("w.pt", create_model("resnet20"))  # type: ignore[arg-type]


def test_torchvision_weights_into_a_v1_model_load_with_a_note() -> None:
    """torchvision's and timm's ResNets are all v1.5, which shapes cannot show: loading their
    names into a v1 model says so (a note: a bare state dict with these names may be v1)."""
    reference = randomize(torchvision.models.resnet50(num_classes=10))
    v1 = ours("resnet50", num_classes=10, stride_in_1x1=True)
    report = load_checkpoint(v1, reference.state_dict())
    assert report.loaded and report.source_format == "torchvision"
    assert any("torchvision's and timm's ResNets are all v1.5" in n for n in report.notes)
    x = images()
    assert (out(v1, x) - out(reference, x)).abs().max() > 1e-3  # why the note matters
    v15 = load_checkpoint(ours("resnet50", num_classes=10), reference.state_dict())
    assert not any("v1.5" in n for n in v15.notes)


@pytest.mark.parametrize("name", TIMM_ARCHS)
def test_timm_round_trip(name: str) -> None:
    """Every architecture hf-hub loads timm weights into is timm's, key for key."""
    reference = randomize(timm.create_model(name, pretrained=False, num_classes=10))
    state = reference.state_dict()
    model = ours(name, num_classes=10)
    # timm's names are ours, key for key (deep stem and avg-pool shortcut included).
    assert list(state) == list(model.state_dict())
    report = load_checkpoint(model, state)
    deep_stem = "conv1.0.weight" in state  # a deep stem: names only timm has
    assert report.source_format == ("timm" if deep_stem else "torchvision")
    params = sum(p.numel() for p in model.parameters())
    assert params == sum(p.numel() for p in reference.parameters())
    x = images()
    assert_same(out(model, x), out(reference, x))

    back = timm.create_model(name, pretrained=False, num_classes=10)
    back.load_state_dict(to_timm(model), strict=True)
    assert_same(out(back, x), out(reference, x))


HF_LAYOUTS = {
    # name: (our arch, our changes, transformers ResNetConfig fields)
    "resnet18": ("resnet18", {}, {"layer_type": "basic", "hidden_sizes": [64, 128, 256, 512]}),
    "resnet50": ("resnet50", {}, {"layer_type": "bottleneck"}),
    "resnet50-v1": (  # a slim v1 bottleneck net: HF's downsample_in_bottleneck is our v1
        "resnet50",
        {"layers": (1, 1, 2, 1), "widths": (16, 32, 64, 128), "stride_in_1x1": True},
        {
            "layer_type": "bottleneck",
            "depths": [1, 1, 2, 1],
            "hidden_sizes": [64, 128, 256, 512],
            "downsample_in_bottleneck": True,
        },
    ),
}


def hf_reference(layout: str) -> tuple[nn.Module, ResNet]:
    arch, changes, fields = HF_LAYOUTS[layout]
    fields = {"embedding_size": 64, "depths": [3, 4, 6, 3], "num_labels": 10, **fields}
    if layout == "resnet18":
        fields["depths"] = [2, 2, 2, 2]
    config = transformers.ResNetConfig(**fields)
    reference = randomize(transformers.ResNetForImageClassification(config))
    return reference, ours(arch, num_classes=10, **changes)


@pytest.mark.parametrize("layout", list(HF_LAYOUTS))
def test_huggingface_into_ours(layout: str, tmp_path: Path) -> None:
    reference, model = hf_reference(layout)
    arch, changes, _ = HF_LAYOUTS[layout]
    report = load_checkpoint(model, reference.state_dict())
    assert report.source_format == "huggingface"
    if model.config.block == "bottleneck":
        # A bare state dict cannot say v1 or v1.5, and the report says so.
        assert any("cannot be told from the weights' shapes" in n for n in report.notes)
    x = images()
    assert_same(out(model, x), out(reference, x))

    if layout == "resnet18":  # a headless ResNetModel's names lack the "resnet." prefix
        backbone = {
            k.removeprefix("resnet."): v
            for k, v in reference.state_dict().items()
            if k.startswith("resnet.")
        }
        headless = ours(arch, num_classes=0)
        load_checkpoint(headless, backbone)
        with torch.no_grad():
            features = reference.resnet(x).pooler_output.flatten(1)
        assert_same(out(headless, x), features)

    reference.save_pretrained(tmp_path)  # config.json + model.safetensors
    again = ours(arch, num_classes=10, **changes)
    assert load_checkpoint(again, tmp_path).loaded
    assert_same(out(again, x), out(reference, x))


@pytest.mark.parametrize("layout", list(HF_LAYOUTS))
def test_ours_to_huggingface_from_pretrained(layout: str, tmp_path: Path) -> None:
    _, model = hf_reference(layout)
    randomize(model, seed=3)
    classes = [f"class{i}" for i in range(10)]
    to_huggingface(model, tmp_path, classes=classes)
    loaded, info = transformers.ResNetForImageClassification.from_pretrained(
        tmp_path, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    assert loaded.config.id2label[3] == "class3"
    assert loaded.config.downsample_in_bottleneck == model.config.stride_in_1x1
    x = images()
    assert_same(out(loaded, x), out(model, x))


def test_huggingface_pipeline_runs_the_exported_model_as_resnetkit_does(tmp_path: Path) -> None:
    """preprocessor_config.json carries the model's preprocessing (here resize 128, bicubic,
    crop 96): transformers' image-classification pipeline then scores an image file as
    resnetkit.predict does."""
    from importlib import resources

    import resnetkit

    torch.manual_seed(0)
    model = ours("resnet18", num_classes=3)
    model.pretrained_cfg = {  # type: ignore[assignment]
        "input_size": 96,
        "resize": 128,
        "interpolation": "bicubic",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "classes": ["a", "b", "c"],
    }
    to_huggingface(model, tmp_path / "hf", classes=["a", "b", "c"])
    pipe = transformers.pipeline("image-classification", model=str(tmp_path / "hf"), device="cpu")
    image = str(resources.files("resnetkit.assets").joinpath("cat.png"))
    theirs = {r["label"]: r["score"] for r in pipe(image, top_k=3)}
    mine = {r["class"]: r["probability"] for r in resnetkit.predict(model, [image], top_k=3)
            .predictions[0]["top_k"]}  # fmt: skip
    assert theirs.keys() == mine.keys()
    for label, score in mine.items():
        assert theirs[label] == pytest.approx(score, abs=2e-3)
    # a large, non-square photo at 448 (resize 512): transformers' processor reads it as
    # resnetkit does (its ConvNeXt processor would stretch it uncropped at 384 and more)
    from PIL import Image

    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": 448, "resize": 512}
    to_huggingface(model, tmp_path / "big", classes=["a", "b", "c"])
    processor = transformers.AutoImageProcessor.from_pretrained(str(tmp_path / "big"))
    noise = np.random.default_rng(0).integers(0, 256, (60, 100, 3), dtype=np.uint8)
    photo = Image.fromarray(noise).resize((1000, 600), Image.BILINEAR)
    theirs_x = processor(photo, return_tensors="pt")["pixel_values"][0]
    mine_x = resnetkit.Preprocessing.of(model).transform()(photo)
    assert theirs_x.shape == mine_x.shape == (3, 448, 448)
    assert float((theirs_x - mine_x).abs().mean()) < 1e-3
    # a per-pixel mean (the paper's CIFAR recipe) has no processor to say it: none written
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": 32, "resize": 32,
                            "pixel_mean": [0.5] * 3 * 32 * 32}  # fmt: skip
    to_huggingface(model, tmp_path / "pm", classes=["a", "b", "c"])
    assert not (tmp_path / "pm" / "preprocessor_config.json").exists()


def test_a_model_directory_converted_to_huggingface_keeps_its_preprocessing(
    tmp_path: Path,
) -> None:
    """convert wrote ImageNet's mean/std and 224 crop into preprocessor_config.json, whatever
    the model directory said (only timm's folder got the model's own)."""
    from resnetkit.interop.convert import convert_checkpoint
    from resnetkit.models.model_dir import save_model_dir

    prep = {"input_size": 160, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    model = ours("resnet18", num_classes=2)
    save_model_dir(model, tmp_path / "m", arch="resnet18", classes=["a", "b"], preprocessing=prep)
    convert_checkpoint(tmp_path / "m", "resnet18", tmp_path / "hf", target="huggingface")
    processor = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == prep["mean"] and processor["image_std"] == prep["std"]
    assert processor["crop_size"] == {"height": 160, "width": 160}
    given = {"mean": [0.4, 0.4, 0.4], "input_size": 128}  # replaces what the source says
    convert_checkpoint(tmp_path / "m", "resnet18", tmp_path / "hf2", target="huggingface",
                       preprocessing=given)  # fmt: skip
    processor = json.loads((tmp_path / "hf2" / "preprocessor_config.json").read_text())
    assert (processor["image_mean"], processor["image_std"]) == (given["mean"], prep["std"])
    assert processor["crop_size"] == {"height": 128, "width": 128}


def test_huggingface_config_stride_mismatch_refused(tmp_path: Path) -> None:
    reference, _ = hf_reference("resnet50-v1")
    reference.save_pretrained(tmp_path)
    v15 = ours("resnet50", num_classes=10, layers=(1, 1, 2, 1), widths=(16, 32, 64, 128))
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(v15, tmp_path)
    assert "downsample_in_bottleneck=true" in str(err.value)
    assert "stride_in_1x1=True" in str(err.value)


# --- Keras ---------------------------------------------------------------------------------


def test_keras_names_and_shapes_match_keras_resnet50() -> None:
    weights = to_keras_dict(ours("resnet50", stride_in_1x1=True))
    # keras.applications.resnet.ResNet50 has 320 weights: 53 convs (kernel + bias), 53 BNs
    # (gamma, beta, moving mean and variance) and the dense layer.
    assert len(weights) == 320
    expected = {  # from keras/src/applications/resnet.py: ResNet, residual_block_v1
        "conv1_conv/kernel:0": (7, 7, 3, 64),
        "conv1_conv/bias:0": (64,),
        "conv1_bn/gamma:0": (64,),
        "conv1_bn/moving_variance:0": (64,),
        "conv2_block1_0_conv/kernel:0": (1, 1, 64, 256),
        "conv2_block1_1_conv/kernel:0": (1, 1, 64, 64),
        "conv2_block1_2_conv/kernel:0": (3, 3, 64, 64),
        "conv2_block1_3_conv/kernel:0": (1, 1, 64, 256),
        "conv2_block1_3_bn/moving_mean:0": (256,),
        "conv3_block1_0_conv/kernel:0": (1, 1, 256, 512),
        "conv3_block1_1_conv/kernel:0": (1, 1, 256, 128),
        "conv3_block4_2_conv/kernel:0": (3, 3, 128, 128),
        "conv4_block6_3_conv/kernel:0": (1, 1, 256, 1024),
        "conv5_block3_3_bn/beta:0": (2048,),
        "predictions/kernel:0": (2048, 1000),
        "predictions/bias:0": (1000,),
    }
    for key, shape in expected.items():
        assert weights[key].shape == shape, key
    assert "conv2_block2_0_conv/kernel:0" not in weights  # identity shortcuts have no layer


@functools.cache
def _keras_source() -> tuple[ResNet, dict[str, np.ndarray]]:
    model = randomize(ours("resnet50", num_classes=10, stride_in_1x1=True), seed=5)
    assert isinstance(model, ResNet)
    return model, to_keras_dict(model)


def test_keras_round_trip_npz(tmp_path: Path) -> None:
    source, weights = _keras_source()
    path = tmp_path / "weights.npz"
    np.savez(path, **weights)  # type: ignore[arg-type]
    model = ours("resnet50", num_classes=10, stride_in_1x1=True)
    report = load_checkpoint(model, path)
    assert report.source_format == "keras" and any("BGR" in n for n in report.notes)
    x = images()
    assert_same(out(model, x), out(source, x))
    assert_same(out(load_model(path, arch="resnet50"), x), out(source, x))  # load_model too


def test_npz_of_objects_is_refused_by_name(tmp_path: Path) -> None:
    """An object array would need unpickling: refused, and the error names the file (numpy's
    own message did not)."""
    path = tmp_path / "objects.npz"
    np.savez(path, w=np.array([{"a": 1}], dtype=object))
    advice = r"np\.savez\(path, \*\*\{name: .* for name, w in weights\.items\(\)\}\)"
    with pytest.raises(ValueError, match=rf"objects\.npz: .*pickle=False; .*{advice}"):
        load_checkpoint(ours("resnet20"), path)
    # Not an .npz at all: numpy said the file holds pickled data and to load it unsafely (a
    # Git LFS pointer, a lone .npy), or raised a TypeError (the .npy).
    np.save(tmp_path / "lone.npy", np.zeros(3, dtype=np.float32))
    (tmp_path / "lone.npy").rename(tmp_path / "lone.npz")
    (tmp_path / "lfs.npz").write_text("version https://git-lfs.github.com/spec/v1\noid x\n")
    for name, hint in (("lone", ""), ("lfs", "; it is a Git LFS pointer: run `git lfs pull`")):
        with pytest.raises(ValueError) as err:
            load_checkpoint(ours("resnet20"), tmp_path / f"{name}.npz")
        assert f"{name}.npz: not an .npz archive (numpy's zip of named arrays){hint}" in str(
            err.value
        )
        assert "unsafe" not in str(err.value) and "allow_pickle" not in str(err.value)


def test_keras_weights_are_laid_out_as_keras_reads_them() -> None:
    """Checked element by element against Keras' own conventions, not against our reader
    (which undoes whatever the writer does): kernels (kh, kw, in, out), the stem's input
    channels in BGR order, Dense kernels (in, out), and BN variances for Keras' epsilon."""
    source, weights = _keras_source()
    conv = source.conv1.weight.detach()  # (out, in RGB, kh, kw)
    kernel = torch.from_numpy(weights["conv1_conv/kernel:0"])
    assert kernel.shape == (7, 7, 3, 64)
    for o, c, i, j in [(0, 0, 0, 1), (5, 2, 3, 6), (63, 1, 6, 0)]:
        assert kernel[i, j, 2 - c, o] == conv[o, c, i, j]  # channel c of RGB is 2 - c of BGR
    block = torch.from_numpy(weights["conv2_block1_2_conv/kernel:0"])
    w = source.layer1[0].conv2.weight.detach()
    assert block[0, 2, 5, 7] == w[7, 5, 0, 2] and block[2, 0, 5, 7] == w[7, 5, 2, 0]
    dense = torch.from_numpy(weights["predictions/kernel:0"])
    assert dense.shape == (2048, 10) and dense[100, 3] == source.fc.weight[3, 100]
    bn = source.bn1
    keras_var = torch.from_numpy(weights["conv1_bn/moving_variance:0"]).double()
    # Keras divides by sqrt(var + 1.001e-5), torch by sqrt(var + 1e-5): the same number
    torch.testing.assert_close(keras_var + 1.001e-5, bn.running_var.double() + 1e-5)
    assert np.array_equal(weights["conv1_bn/moving_mean:0"], bn.running_mean.numpy())


def test_a_keras_named_weights_file_loads_as_keras_v1(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from resnetkit.interop.formats import KERAS_MEAN

    source, weights = _keras_source()
    path = tmp_path / "keras.safetensors"
    save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}, path)
    model = load_model(path, arch="resnet50")  # the names say Keras: v1, caffe-style inputs
    assert model.config.stride_in_1x1
    assert model.pretrained_cfg["mean"] == list(KERAS_MEAN)
    x = images()
    assert_same(out(model.eval(), x), out(source, x))


def test_keras_conv_biases_fold_into_batchnorm() -> None:
    """A Keras conv bias b before a BN is the same function as b = 0 with moving_mean - b."""
    source, weights = _keras_source()
    shifted = dict(weights)
    g = np.random.default_rng(0)
    for key in [k for k in weights if k.endswith("_conv/bias:0")]:
        # Small, so that rounding in mean + b - b stays far below the tolerance; a wrong sign
        # or a bias left out still moves the logits by orders of magnitude more.
        bias = 0.01 * g.standard_normal(weights[key].shape).astype(np.float32)
        shifted[key] = bias
        bn = key.replace("_conv/bias:0", "_bn/moving_mean:0")
        shifted[bn] = weights[bn] + bias
    model = ours("resnet50", num_classes=10, stride_in_1x1=True)
    load_checkpoint(model, shifted)
    x = images()
    assert_same(out(model, x), out(source, x))


def test_keras_weights_refused_by_v15_model() -> None:
    _, weights = _keras_source()
    with pytest.raises(CheckpointMismatchError, match="stride_in_1x1=True"):
        load_checkpoint(ours("resnet50", num_classes=10), weights)
    with pytest.raises(ValueError, match="Keras ResNets are v1"):
        to_keras_dict(ours("resnet50"))


def test_keras_h5_needs_h5py(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "weights.h5"
    path.write_bytes(b"not really")
    monkeypatch.setitem(sys.modules, "h5py", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"needs h5py: pip install 'resnetkit\[keras\]'.*savez"):
        read_checkpoint(path)


@pytest.mark.parametrize("whole_model", [False, True])
def test_keras_h5_weights_load(tmp_path: Path, whole_model: bool) -> None:
    """Keras 2's .h5 layout: LAYER/LAYER/NAME:0 datasets; a whole-model file keeps them under
    model_weights/, beside optimizer_weights/ whose Adam slots carry the same layer names."""
    h5py = pytest.importorskip("h5py")
    source, weights = _keras_source()
    path = tmp_path / "resnet50.h5"
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if whole_model else f
        for key, value in weights.items():
            layer = key.split("/")[0]
            root[f"{layer}/{key}"] = value
        if whole_model:  # slots of the same shapes, not weights: must be left alone
            for key, value in weights.items():
                f[f"optimizer_weights/Adam/{key}"] = np.zeros_like(value)
    model = ours("resnet50", num_classes=10, stride_in_1x1=True)
    report = load_checkpoint(model, path)
    assert report.source_format == "keras" and not (report.unexpected or report.missing)
    x = images()
    assert_same(out(model, x), out(source, x))
    loaded = load_model(path, arch="resnet50")  # the same file as a model: Keras is v1
    assert loaded.config.stride_in_1x1 and loaded.num_classes == 10
    assert_same(out(loaded, x), out(source, x))


def test_keras_3_weights_files_are_told_how_to_save_by_name(tmp_path: Path) -> None:
    """Keras 3 names a .weights.h5's arrays by layer class and position
    (layers/conv2d_5/vars/0), and a .keras archive holds such a file: refused as 'two arrays
    for Keras layer vars ... save the model's weights alone (model.save_weights)', which is
    what was done. They say how to save the weights by name instead."""
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "model.weights.h5"
    with h5py.File(path, "w") as f:
        f["layers/conv2d/vars/0"] = np.zeros((7, 7, 3, 64), np.float32)
        f["layers/conv2d/vars/1"] = np.zeros(64, np.float32)
        f["layers/batch_normalization/vars/0"] = np.ones(64, np.float32)
    advice = r"model\.save\('model\.keras'\).*np\.savez\('weights\.npz', \*\*\{w\.path: "
    with pytest.raises(ValueError, match=rf"weights\.h5: a Keras 3 .*class and position.*{advice}"):
        read_checkpoint(path)
    import zipfile

    archive = tmp_path / "model.keras"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(path, "model.weights.h5")
        z.writestr("config.json", "{}")
    with pytest.raises(ValueError, match=rf"model\.keras: its config.json names none .*{advice}"):
        load_model(archive, arch="resnet50")


def test_a_keras_3_model_archive_loads_by_its_configs_layer_order(tmp_path: Path) -> None:
    """model.save('x.keras'): model.weights.h5 names arrays layers/conv2d_5/vars/0, in the
    order of config.json's layers (snake_case class name, then _1, _2...); a ResNet base
    nested under a new head sits under layers/functional/layers/. Refused before; checked by
    hand against Keras 3.15 (flat and nested: logits to 5e-5)."""
    import zipfile

    h5py = pytest.importorskip("h5py")
    source, weights = _keras_source()
    order = ["conv1_conv", "conv1_bn"] + sorted(
        {k.split("/")[0] for k in weights} - {"conv1_conv", "conv1_bn", "predictions"}
    )
    kinds = {  # class, Keras' file name for it, its variables in order
        "conv": ("Conv2D", "conv2d", ["kernel", "bias"]),
        "bn": ("BatchNormalization", "batch_normalization",
               ["gamma", "beta", "moving_mean", "moving_variance"]),
        "predictions": ("Dense", "dense", ["kernel", "bias"]),
    }  # fmt: skip
    base = [{"class_name": "InputLayer", "config": {"name": "input_layer"}}]
    counts: dict[str, int] = {}
    placed = [("layers/functional/layers/", n) for n in order] + [("layers/", "predictions")]
    with h5py.File(tmp_path / "model.weights.h5", "w") as f:
        for at, layer in placed:
            kind, snake, variables = kinds[layer.rsplit("_", 1)[-1]]
            n = counts[at + snake] = counts.get(at + snake, -1) + 1
            key = f"{at}{snake}" + (f"_{n}" if n else "")
            for i, var in enumerate(variables):
                f[f"{key}/vars/{i}"] = weights[f"{layer}/{var}:0"]
            if at != "layers/":
                base.append({"class_name": kind, "config": {"name": layer}})
                base.append({"class_name": "Activation", "config": {"name": f"{layer}_relu"}})
    config = {
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "layers": [
                {"class_name": "Functional", "config": {"name": "resnet50", "layers": base}},
                {"class_name": "GlobalAveragePooling2D", "config": {"name": "avg_pool"}},
                {"class_name": "Dense", "config": {"name": "predictions", "use_bias": True}},
            ],
        },
    }
    archive = tmp_path / "fine-tuned.keras"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(tmp_path / "model.weights.h5", "model.weights.h5")
        z.writestr("config.json", json.dumps(config))
    model = load_model(archive, arch="resnet50")
    assert model.config.stride_in_1x1  # Keras: v1
    x = images()
    assert_same(out(model, x), out(source, x))


# --- training-script checkpoints -----------------------------------------------------------


def _script_checkpoint(state: dict[str, Tensor], variant: str) -> dict[str, Any]:
    options = dict(word.partition("=")[::2] for word in variant.split())
    if options.get("head"):
        head = options["head"]
        state = {
            k.replace("fc.", f"{head}.", 1) if k.startswith("fc.") else k: v
            for k, v in state.items()
        }
    if "no-counters" in variant:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    if variant.startswith("ddp"):
        return {"epoch": 7, "model_state_dict": {f"module.{k}": v for k, v in state.items()}}
    if variant.startswith("compiled"):
        return {"state_dict": {f"module._orig_mod.{k}": v for k, v in state.items()}}
    if variant.startswith("lightning-compiled"):  # a Lightning module around a compiled net
        return {"state_dict": {f"model._orig_mod.{k}": v for k, v in state.items()}}
    if variant.startswith("lightning"):
        return {"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 1}
    if variant.startswith("kuangliu"):  # pytorch-cifar's main.py, beside its accuracy
        return {"net": {f"module.{k}": v for k, v in state.items()}, "acc": 95.1, "epoch": 199}
    return {"model": state, "optimizer": {"lr": 0.1}}


@pytest.mark.parametrize(
    "variant",
    [
        "ddp",
        "compiled head=linear",
        "lightning head=classifier",
        "lightning-compiled head=linear",
        "plain head=head no-counters",
        "ddp head=linear no-counters",
        "kuangliu head=linear",
    ],
)
@pytest.mark.parametrize("legacy", [False, True])
def test_training_script_checkpoints(variant: str, legacy: bool, tmp_path: Path) -> None:
    source = randomize(ours("resnet20"), seed=2)
    path = tmp_path / "checkpoint.pth"
    checkpoint = _script_checkpoint(source.state_dict(), variant)
    torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
    model = ours("resnet20")
    report = load_checkpoint(model, path)
    assert report.loaded and report.source_format == "script"
    assert report.notes  # says what was unwrapped / stripped / renamed
    if "compiled" in variant:
        assert "stripped the '_orig_mod.' prefix (torch.compile)" in report.notes
    x = images(32)
    assert_same(out(model, x), out(source, x))


@pytest.mark.parametrize("name", ["model_best.pth.tar", "resnet20-12fca82f.th"])
def test_training_scripts_suffixes_are_read(name: str, tmp_path: Path) -> None:
    """pytorch/examples' ImageNet script and timm's train.py save checkpoint.pth.tar and
    model_best.pth.tar, akamaster's CIFAR ResNets resnet20-12fca82f.th: torch.save files all."""
    source = randomize(ours("resnet20"), seed=2)
    path = tmp_path / name
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save({"epoch": 200, "state_dict": state, "best_prec1": 91.73}, path)
    x = images(32)
    assert_same(out(load_model(path, arch="resnet20"), x), out(source, x))
    model = ours("resnet20")
    assert load_checkpoint(model, path).loaded
    assert_same(out(model, x), out(source, x))


def test_timm_training_checkpoints_load_beside_their_args(tmp_path: Path) -> None:
    """timm's train.py keeps its argparse.Namespace under 'args': plain attributes, which
    timm's own loader allows with weights_only=True. It was refused as needing unsafe
    unpickling; a class that could run code still is."""
    import argparse

    source = randomize(ours("resnet20"), seed=2)
    path = tmp_path / "last.pth.tar"
    checkpoint = {
        "epoch": 3,
        "arch": "resnet20",
        "state_dict": source.state_dict(),
        "version": 2,
        "args": argparse.Namespace(model="resnet20", lr=0.1, sched="cosine"),
        "metric": 91.7,
    }
    torch.save(checkpoint, path)
    x = images(32)
    assert_same(out(load_model(path, arch="resnet20"), x), out(source, x))
    checkpoint["args"] = copy.copy  # a global that is no plain data: still refused
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match=r"references copy\.copy.*refuses it for safety"):
        load_model(path, arch="resnet20")


def test_a_file_without_weights_is_named_with_what_it_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An optimizer-only checkpoint: convert's error named neither the file nor that an
    optimizer's state holds no weights."""
    path = tmp_path / "optimizer.pth"
    torch.save({"epoch": 3, "optimizer": {"state": {}, "param_groups": []}}, path)
    args = ["convert", str(path), "--arch", "resnet20", "--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{path}: expected a state dict" in err and "['epoch', 'optimizer']" in err
    assert "an optimizer's state holds no model weights" in err
    with pytest.raises(ValueError, match=r"optimizer\.pth: .*holds no model weights"):
        load_model(path, arch="resnet20")


def test_an_npz_of_pytorch_names_converts_as_load_model_reads_it(tmp_path: Path) -> None:
    """np.savez of a PyTorch state dict: load_model read it, convert said to leave out a
    --from keras that nobody gave."""
    source = randomize(ours("resnet20"), seed=2)
    path = tmp_path / "weights.npz"
    np.savez(path, **{k: v.numpy() for k, v in source.state_dict().items()})  # type: ignore[arg-type]
    report, written = convert_checkpoint(path, "resnet20", tmp_path / "out")
    assert report.loaded and report.source_format == "torchvision"
    x = images(32)
    assert_same(out(load_model(written), x), out(source, x))
    assert_same(out(load_model(path, arch="resnet20"), x), out(source, x))


def _ema_checkpoint(weights: ResNet, ema: ResNet, layout: str) -> dict[str, Any]:
    from torch.optim.swa_utils import AveragedModel

    plain, averaged = weights.state_dict(), ema.state_dict()
    if layout == "timm":  # timm's train.py
        return {"epoch": 3, "state_dict": plain, "state_dict_ema": averaged}
    if layout == "torchvision":  # torchvision's references: an AveragedModel, module. inside
        return {"model": plain, "model_ema": AveragedModel(ema).state_dict()}
    # a Lightning module: the net, an AveragedModel of it and a weighted loss's buffer
    return {
        "state_dict": {
            **{f"model.{k}": v for k, v in plain.items()},
            **{f"ema_model.{k}": v for k, v in AveragedModel(ema).state_dict().items()},
            "criterion.weight": torch.ones(10),
        }
    }


@pytest.mark.parametrize("layout", ["timm", "torchvision", "lightning"])
def test_training_checkpoints_with_an_ema_copy(
    layout: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The weights load by default (as timm's validate.py and torchvision's references read
    them), the EMA copy is said and read with use_ema. The Lightning module was refused ('no
    classifier: a backbone'), its keys not sharing one prefix."""
    weights, ema = randomize(ours("resnet20"), seed=2), randomize(ours("resnet20"), seed=3)
    path = tmp_path / "last.ckpt"
    torch.save(_ema_checkpoint(weights, ema, layout), path)
    x = images(32)
    model = ours("resnet20")
    report = load_checkpoint(model, path)
    assert_same(out(model, x), out(weights, x))
    assert any("also holds EMA weights" in note and "--use-ema" in note for note in report.notes)
    report = load_checkpoint(model, path, use_ema=True)
    assert_same(out(model, x), out(ema, x))
    assert not any("also holds EMA" in note for note in report.notes)
    assert_same(out(load_model(path, arch="resnet20"), x), out(weights, x))
    args = ["convert", str(path), "--arch", "resnet20", "--use-ema"]
    assert main([*args, "--out", str(tmp_path / "ema")]) == 0
    assert_same(out(load_model(tmp_path / "ema"), x), out(ema, x))


@pytest.mark.parametrize("head", ["head", "fc", "classifier.1"])
def test_a_backbone_and_a_head_of_ones_own_load(head: str) -> None:
    """A module of one's own around a ResNet: self.backbone (its fc an nn.Identity) and a
    head beside it. The keys shared no prefix, so nothing was stripped and nothing fit."""
    source = randomize(ours("resnet20"), seed=2)
    state = {
        (f"{head}.{k[3:]}" if k.startswith("fc.") else f"backbone.{k}"): v
        for k, v in source.state_dict().items()
    }
    model = ours("resnet20")
    report = load_checkpoint(model, state)
    assert any(f"took {head.split('.')[0]!r}" in note for note in report.notes), report.notes
    x = images(32)
    assert_same(out(model, x), out(source, x))


def test_an_averaged_model_saved_alone_loads(tmp_path: Path) -> None:
    """torch.optim.swa_utils.AveragedModel(model).state_dict(): its n_averaged counter was an
    unexpected key, 'the names do not match: check --arch, --from'."""
    from torch.optim.swa_utils import AveragedModel

    ema = randomize(ours("resnet20"), seed=3)
    path = tmp_path / "ema.pth"
    torch.save(AveragedModel(ema).state_dict(), path)
    x = images(32)
    assert_same(out(load_model(path, arch="resnet20"), x), out(ema, x))


def test_use_ema_without_an_ema_copy_and_two_networks_are_refused(tmp_path: Path) -> None:
    state = ours("resnet20").state_dict()
    path = tmp_path / "plain.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ValueError, match=r"plain\.pth: use_ema .*holds no EMA weights"):
        load_checkpoint(ours("resnet20"), path, use_ema=True)
    both = {f"{who}.{k}": v for who in ("student", "teacher") for k, v in state.items()}
    with pytest.raises(ValueError, match=r"several networks: 'student\.' .*'teacher\.'"):
        load_checkpoint(ours("resnet20"), both)


def test_a_tar_archive_is_told_to_be_unpacked(tmp_path: Path) -> None:
    """A tarball (of a model folder, say) is no torch.save file: torch's own message advised
    weights_only=False, which cannot help and would be unsafe."""
    import tarfile

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    with tarfile.open(tmp_path / "model.tar", "w") as tar:
        tar.add(tmp_path / "model", arcname="model")
    with pytest.raises(ValueError, match=r"model\.tar: .*a tar archive.*tar -xf") as err:
        load_model(tmp_path / "model.tar", arch="resnet20")
    assert "weights_only set to False" not in str(err.value)


# --- mismatches explained ------------------------------------------------------------------


def test_other_depth_is_diagnosed() -> None:
    state = ours("resnet18", num_classes=10).state_dict()
    model = ours("resnet34", num_classes=10)
    before = model.conv1_weight().clone()
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(model, state)
    report = err.value.report
    assert "layer1.2.conv1.weight" in report.missing
    assert any(d.startswith("other depth") and "resnet18" in d for d in report.diagnosis)
    assert not any("shortcut" in d for d in report.diagnosis)
    assert torch.equal(model.conv1_weight(), before)  # nothing loaded on failure


def test_other_number_of_classes_and_adapt_head() -> None:
    source = ours("resnet18", num_classes=10)
    model = ours("resnet18")
    with pytest.raises(CheckpointMismatchError, match="adapt_head=True") as err:
        load_checkpoint(model, source.state_dict())
    report = err.value.report
    assert [str(s) for s in report.shape_mismatches][0].startswith(
        "fc.weight: checkpoint (10, 512)"
    )
    assert report.diagnosis[0].startswith("other number of classes")

    report = resnetkit.load_checkpoint(model, source.state_dict(), adapt_head=True)
    assert report.loaded and report.adapted[0].startswith("head:")
    assert model.fc.weight.shape == (1000, 512)
    assert torch.equal(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)


class _AkamasterBlock(nn.Module):
    """akamaster/pytorch_resnet_cifar10's BasicBlock, option A: x[:, :, ::2, ::2] zero-padded
    by planes // 4 channels on each side."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes // 4 if stride != 1 or in_planes != planes else 0

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x
        if self.pad:
            shortcut = nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return torch.relu(out + shortcut)


class _AkamasterResNet20(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, planes = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = [_AkamasterBlock(planes, width, stride)]
            blocks += [_AkamasterBlock(width, width, 1) for _ in range(2)]
            stages.append(nn.Sequential(*blocks))
            planes = width
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(nn.functional.avg_pool2d(out, out.shape[3]).flatten(1))


def test_akamaster_cifar_resnet20_weights_load_with_the_same_outputs(tmp_path: Path) -> None:
    """Its pretrained resnet20-12fca82f.th: {'state_dict': DataParallel's module.* keys,
    'best_prec1'}, a 'linear' head, option-A shortcuts that hold no weights."""
    source = randomize(_AkamasterResNet20(), seed=4)
    path = tmp_path / "resnet20-12fca82f.th"
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save({"state_dict": state, "best_prec1": 91.73}, path)
    x = images(32)
    assert_same(out(load_model(path, arch="resnet20"), x), out(source, x))


def test_a_bare_checkpoint_for_another_architecture_says_which(tmp_path: Path) -> None:
    """--model FILE --arch ARCH (load_model) with the wrong ARCH listed keys only ('missing
    keys [...] Check --arch'); convert's diagnosis names the depth and the architectures that
    have it."""
    path = tmp_path / "r20.pth"
    torch.save(ours("resnet20").state_dict(), path)
    with pytest.raises(ValueError, match=r"other depth: .*\(like resnet20\)"):
        load_model(path, arch="resnet56")
    with pytest.raises(ValueError, match=r"other stem: the checkpoint's conv1 is 3x3"):
        load_model(path, arch="resnet18")


def test_a_cifar_resnet18_converts_with_the_cifar_stem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """kuangliu's pytorch-cifar ResNet-18: torchvision's with a 3x3 stride-1 stem and no
    max-pool. The diagnosis said 'check --arch', no --arch has it, and convert had no way to
    build resnet18 with stem='cifar'."""
    source = randomize(ours("resnet18", stem="cifar", num_classes=10), seed=2)
    path = tmp_path / "ckpt.pth"
    torch.save({"net": source.state_dict(), "acc": 95.1, "epoch": 199}, path)
    args = ["convert", str(path), "--arch", "resnet18", "--input-size", "32"]
    assert main([*args, "--out", str(tmp_path / "no")]) == 2
    assert "--model-option stem=cifar" in capsys.readouterr().err
    assert main([*args, "--model-option", "stem=cifar", "--out", str(tmp_path / "r18")]) == 0
    x = images(32)
    assert_same(out(load_model(tmp_path / "r18"), x), out(source, x))


def test_shortcut_option_a_into_b_is_diagnosed() -> None:
    state = ours("resnet20").state_dict()
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(ours("resnet20", shortcut="B"), state)
    (diagnosis,) = err.value.report.diagnosis
    assert "option A" in diagnosis and "shortcut='A'" in diagnosis


@pytest.mark.parametrize("in_chans", [1, 6])
def test_in_chans_adapted_as_timm(in_chans: int) -> None:
    source = randomize(ours("resnet20"), seed=4)
    model = ours("resnet20", in_chans=in_chans)
    with pytest.raises(CheckpointMismatchError, match="adapt_in_chans=True"):
        load_checkpoint(model, source.state_dict())
    report = load_checkpoint(model, source.state_dict(), adapt_in_chans=True)
    assert report.adapted and report.adapted[0].startswith("conv1")
    x = images(32)
    if in_chans == 1:  # the summed filters see a grey image as the RGB filters see it in colour
        gray = x[:, :1]
        assert_same(out(model, gray), out(source, gray.repeat(1, 3, 1, 1)))
    else:  # repeated filters scaled by 3/N respond to repeated RGB as the original does
        assert_same(out(model, x.repeat(1, 2, 1, 1)), out(source, x))


def test_detect_format() -> None:
    assert detect_format(["conv1.weight", "fc.weight"]) == "torchvision"
    assert detect_format(["conv1.0.weight", "conv1.1.weight"]) == "timm"
    assert detect_format(["resnet.embedder.embedder.convolution.weight"]) == "huggingface"
    assert detect_format(["embedder.embedder.convolution.weight"]) == "huggingface"
    assert detect_format(["conv1_conv/kernel:0"]) == "keras"


def test_export_refuses_layouts_the_target_lacks() -> None:
    with pytest.raises(ValueError, match="cifar stem"):
        to_torchvision(ours("resnet20"))
    with pytest.raises(ValueError, match="v1.5"):
        to_timm(ours("resnet50", stride_in_1x1=True))


# --- the command and load_model --------------------------------------------------------------


def test_convert_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = randomize(ours("resnet20"), seed=6)
    src = tmp_path / "script.pt"
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}}, src)

    code = main(["convert", str(src), "--arch", "resnet20", "--out", str(tmp_path / "model")])
    assert code == 0, capsys.readouterr().err
    said = capsys.readouterr().out  # what was assumed for a bare checkpoint is said
    assert "names no input normalization: the model directory assumes ImageNet" in said
    assert "names no classes: predictions will be class indices" in said
    loaded = load_model(tmp_path / "model")
    assert loaded.pretrained_cfg["mean"] == [0.485, 0.456, 0.406]  # type: ignore[index]
    x = images(32)
    assert_same(out(loaded, x), out(source, x))
    meta = json.loads((tmp_path / "model" / "config.json").read_text())
    assert meta["provenance"]["source_format"] == "script"
    card = (tmp_path / "model" / "README.md").read_text()
    assert f"converted by `resnetkit convert` from {src} (script layout)" in card

    args = ["convert", str(src), "--arch", "resnet20", "--num-classes", "5"]
    assert main([*args, "--out", str(tmp_path / "five")]) == 2
    assert "other number of classes" in capsys.readouterr().err
    assert main([*args, "--adapt-head", "--out", str(tmp_path / "five")]) == 0
    assert load_model(tmp_path / "five").num_classes == 5


def test_what_a_bare_checkpoint_cannot_say_is_given_on_converting_or_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CIFAR state dict got ImageNet's mean/std and no class names, with no way to say
    otherwise but editing config.json."""
    from safetensors.torch import save_file

    source = randomize(ours("resnet20", num_classes=3), seed=5)
    src = tmp_path / "w.safetensors"
    save_file(source.state_dict(), str(src))
    names = tmp_path / "names.txt"
    names.write_text("cat\nsea lion, grey\ndog\n")  # a name with a comma
    argv = ["convert", str(src), "--arch", "resnet20", "--mean", "0.5,0.4,0.3"]
    argv += ["--std", "0.2", "--input-size", "40", "--classes", str(names)]
    assert main([*argv, "--out", str(tmp_path / "m")]) == 0, capsys.readouterr().err
    assert "names no input normalization" not in capsys.readouterr().out
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["classes"] == ["cat", "sea lion, grey", "dog"]
    assert meta["preprocessing"] == {"input_size": 40, "mean": [0.5, 0.4, 0.3], "std": [0.2]}
    assert main([*argv, "--to", "torchvision", "--out", str(tmp_path / "tv.pt")]) == 2
    assert "no place for preprocessing" in capsys.readouterr().err
    assert main([*argv[:4], "--classes", "a,b", "--out", str(tmp_path / "two")]) == 2
    assert "2 names for a model with 3 outputs" in capsys.readouterr().err
    for given, said in (("a,b,a", "--classes names a twice"), (" , ", "--classes names nothing")):
        with pytest.raises(SystemExit):
            main([*argv[:4], "--classes", given, "--out", str(tmp_path / "bad")])
        assert said in capsys.readouterr().err
    assert not (tmp_path / "tv.pt").exists() and not (tmp_path / "two").exists()

    prep = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2], "input_size": 40}
    loaded = load_model(src, arch="resnet20", preprocessing=prep, classes=["a", "b", "c"])
    cfg = loaded.pretrained_cfg
    assert (cfg["mean"], cfg["input_size"], cfg["classes"]) == (
        [0.5, 0.4, 0.3],
        40,
        ["a", "b", "c"],
    )
    assert resnetkit.Preprocessing.of(loaded).std == (0.2, 0.2, 0.2)
    for bad, message in (
        ({"preprocessing": {"men": [0.5]}}, r"unknown key\(s\) \['men'\]"),
        ({"preprocessing": {"mean": [0.5, 0.5]}}, "mean must be a list of 1 or 3 numbers"),
        ({"classes": "abc"}, "classes must be a list of names"),
        ({"classes": ["a"]}, "1 names for a model with 3 outputs"),
    ):
        with pytest.raises(ValueError, match=message):
            load_model(src, arch="resnet20", **bad)
    with pytest.raises(ValueError, match="apply to bare checkpoint files"):
        load_model(tmp_path / "m", classes=["a", "b", "c"])
    with pytest.raises(TypeError, match="'shortcutt'.*Did you mean 'shortcut'"):
        load_model(src, arch="resnet20", shortcutt="A")  # dataclasses' error named no fix


def test_load_model_reads_huggingface_names(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from resnetkit.interop.formats import ours_to_huggingface

    source = randomize(ours("resnet18", num_classes=10), seed=7)
    hf_state = ours_to_huggingface(copy.deepcopy(source.state_dict()))
    save_file(hf_state, str(tmp_path / "hf.safetensors"))
    loaded = load_model(tmp_path / "hf.safetensors", arch="resnet18")
    x = images()
    assert_same(out(loaded, x), out(source, x))


def test_a_bare_checkpoint_tells_its_classes_and_input_channels(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    for arch in ("resnet20", "resnet50d"):  # a 3x3 conv stem, and a deep stem (conv1.0)
        source = randomize(ours(arch, num_classes=3, in_chans=1), seed=3)
        save_file(source.state_dict(), str(tmp_path / f"{arch}.safetensors"))
        loaded = load_model(tmp_path / f"{arch}.safetensors", arch=arch)
        assert (loaded.config.in_chans, loaded.num_classes) == (1, 3)
        x = torch.randn(2, 1, 64, 64)
        assert_same(out(loaded, x), out(source, x))


def test_unreadable_checkpoints_are_named_not_called_unsafe(tmp_path: Path) -> None:
    """An HTML error page, a Git LFS pointer or random bytes saved as .pt are not a security
    matter: each gets 'not a readable PyTorch checkpoint', with a hint where one is known."""
    files = {
        "page.pt": (b"<!DOCTYPE html><html><body>404</body></html>", "an HTML page"),
        "lfs.pt": (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\n", "git lfs pull"),
        "junk.pt": (b"hello world, not a checkpoint", ""),
        "noise.pt": (bytes(range(256)) * 4, ""),
    }
    for name, (data, hint) in files.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match="not a readable PyTorch checkpoint") as err:
            load_model(tmp_path / name, arch="resnet20")
        assert hint in str(err.value) and "for safety" not in str(err.value)
        assert "neither a torch.save archive nor a weights pickle" in str(err.value)
        assert "weights_only set to False" not in str(err.value)  # torch's unsafe advice
    (tmp_path / "cat.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # given where the model goes
    with pytest.raises(ValueError, match="cat.png is a picture, not a model"):
        load_model(tmp_path / "cat.png")


def test_a_program_saved_as_pt_is_told_apart_from_weights(tmp_path: Path) -> None:
    """A TorchScript archive or an ExportedProgram under .pt: 'not a readable PyTorch
    checkpoint (RuntimeError: Cannot use weights_only=True with TorchScript archives)' or
    '(failed locating file data.pkl)', without a word of what to do."""
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = images(32, batch=1)
    torch.jit.save(torch.jit.trace(model, x), tmp_path / "scripted.pt")
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "exported.pt")
    for name, what in (("scripted", "TorchScript"), ("exported", "ExportedProgram")):
        with pytest.raises(ValueError) as err:
            load_model(tmp_path / f"{name}.pt", arch="resnet18")
        message = str(err.value)
        assert message.startswith(f"{tmp_path / name}.pt: a {what} program")
        assert "state_dict()" in message and "weights_only" not in message


def test_a_file_cut_short_is_said_to_be(tmp_path: Path) -> None:
    """An interrupted download or copy: torch's message was cut mid-sentence ('... there is a
    high likelihood that your checkpoint file is') and safetensors' said 'incomplete
    metadata'; neither said what to do."""
    from safetensors.torch import save_file

    state = ours("resnet20").state_dict()
    torch.save(state, tmp_path / "whole.pth")
    save_file(state, tmp_path / "whole.safetensors")
    for name in ("whole.pth", "whole.safetensors"):
        data = (tmp_path / name).read_bytes()
        cut = tmp_path / name.replace("whole", "cut")
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(ValueError) as err:
            load_model(cut, arch="resnet20")
        assert str(err.value).startswith(str(cut))
        assert "cut short (an interrupted download or copy?): fetch or copy it again" in str(
            err.value
        )
        assert not str(err.value).endswith("file is)")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pth: .*; it is empty \(0 bytes"):
        load_model(tmp_path / "empty.pth", arch="resnet20")


@pytest.mark.parametrize(
    ("saved", "built"),
    [("resnet20", "plain20"), ("resnet20 unit=bn_after_add", "resnet20")],
)
def test_load_checkpoint_refuses_a_model_directory_into_another_function(
    saved: str, built: str, tmp_path: Path
) -> None:
    """A ResNet-20's directory into a plain-20 (no shortcuts), or a Fig. 4b unit's into the
    original unit: the same names and shapes, so load_checkpoint loaded them without a word,
    and the model computed something else (convert refused them already)."""
    from resnetkit.models.model_dir import save_model_dir

    arch, *options = saved.split()
    source = ours(arch, **dict(o.split("=") for o in options))
    pre = {"input_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    folder = save_model_dir(source, tmp_path / "m", arch=arch, classes=[], preprocessing=pre)
    with pytest.raises(CheckpointMismatchError, match="would load here and compute something"):
        load_checkpoint(ours(built), folder)
    assert load_checkpoint(ours(arch, **dict(o.split("=") for o in options)), folder).loaded


def test_convert_of_a_training_run_names_what_to_convert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run's folder, its checkpoints/ or one checkpoint: convert said 'expected config.json
    and model.safetensors', where load_model names the run's model or checkpoint weights."""
    from safetensors.torch import save_file

    run = tmp_path / "run"
    checkpoint = run / "checkpoints" / "ckpt-00000004"
    checkpoint.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"model": "resnet20"}))
    save_file(ours("resnet20").state_dict(), str(checkpoint / "model.safetensors"))
    torch.save({"step": 4}, checkpoint / "state.pt")
    weights = checkpoint / "model.safetensors"
    for src in (run, run / "checkpoints", checkpoint):
        args = ["convert", str(src), "--arch", "resnet20", "--out", str(tmp_path / "out")]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "has not finished" in err and f": {weights} --arch resnet20" in err, err
    assert main(["convert", str(weights), "--arch", "resnet20", "--out", str(tmp_path / "o")]) == 0
    torch.save({"step": 4, "optimizer": {"state": {}}}, checkpoint / "state.pt")
    with pytest.raises(ValueError, match=rf"no model weights; .*\({weights} beside it\)"):
        load_model(checkpoint / "state.pt", arch="resnet20")  # the training state


def test_broken_model_directories_get_clear_errors(tmp_path: Path) -> None:
    from resnetkit.models.model_dir import save_model_dir

    pre = {"input_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    good = save_model_dir(ours("resnet20"), tmp_path / "good", arch="resnet20", classes=[],
                          preprocessing=pre)  # fmt: skip
    # A transformers directory loads directly, when its config describes a ResNet it can build.
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "resnet"}))
    (hf / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match=r"transformers ResNet with bottleneck blocks \[\] has no"):
        load_model(hf)
    # Weights of another depth beside a resnet20 description.
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text((good / "config.json").read_text())
    from safetensors.torch import save_file

    save_file(ours("resnet32").state_dict(), str(other / "model.safetensors"))
    with pytest.raises(ValueError, match=r"does not fit the resnet20.*unexpected \(layer1.3"):
        load_model(other)
    # A truncated weights file.
    data = (good / "model.safetensors").read_bytes()
    (other / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_model(other)


def test_converting_a_model_dir_keeps_its_preprocessing_and_metrics(tmp_path: Path) -> None:
    from resnetkit.models.model_dir import save_model_dir

    pre = {"input_size": 32, "mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.243, 0.261]}
    src = save_model_dir(ours("resnet20"), tmp_path / "src", arch="resnet20",
                         classes=[f"c{i}" for i in range(10)], preprocessing=pre,
                         metrics={"test_top1": 91.5})  # fmt: skip
    assert main(["convert", str(src), "--arch", "resnet20", "--out", str(tmp_path / "c")]) == 0
    meta = json.loads((tmp_path / "c" / "config.json").read_text())
    assert meta["preprocessing"] == pre and meta["metrics"] == {"test_top1": 91.5}
    args = ["convert", str(src), "--arch", "resnet20", "--num-classes", "5", "--adapt-head"]
    assert main([*args, "--out", str(tmp_path / "five")]) == 0
    meta = json.loads((tmp_path / "five" / "config.json").read_text())
    assert meta["preprocessing"] == pre and meta["metrics"] == {}  # a new head: not measured


def test_an_mlp_head_is_not_squeezed_into_fc() -> None:
    state = dict(ours("resnet20").state_dict())
    fc_w, fc_b = state.pop("fc.weight"), state.pop("fc.bias")
    state |= {"classifier.0.weight": torch.zeros(32, 64), "classifier.0.bias": torch.zeros(32)}
    state |= {"classifier.3.weight": fc_w[:, :32], "classifier.3.bias": fc_b}
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(ours("resnet20"), state)
    notes = err.value.report.notes
    assert any("classifier has several layers (classifier.0, classifier.3)" in n for n in notes)
    assert not any("renamed the classifier" in n for n in notes)


def test_keras_optimizer_slots_are_refused_not_loaded() -> None:
    _, weights = _keras_source()
    slot = dict(weights)
    slot["Adam/m/conv1_conv/kernel:0"] = np.zeros_like(weights["conv1_conv/kernel:0"])
    with pytest.raises(ValueError, match="two arrays for Keras layer 'conv1_conv' weight 'kernel'"):
        load_checkpoint(ours("resnet50", num_classes=10, stride_in_1x1=True), slot)


def test_convert_refuses_another_architecture_than_the_model_directory_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from resnetkit.interop.convert import convert_checkpoint
    from resnetkit.models.model_dir import save_model_dir

    pre = {"input_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    plain = save_model_dir(
        create_model("plain20"), tmp_path / "plain", arch="plain20", classes=[], preprocessing=pre
    )
    # plain-20's weights fit ResNet-20 (option A adds none): built, it would compute another net
    argv = ["convert", str(plain), "--arch", "resnet20", "--out", str(tmp_path / "conv")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "holds a plain20 with shortcut 'none' (--arch resnet20: 'A')" in err
    assert "pass --arch plain20" in err and not (tmp_path / "conv").exists()
    assert main([*argv[:3], "plain20", *argv[4:]]) == 0
    # The same architecture with options its zoo entry lacks: built as the directory says.
    variant = create_model("resnet20", shortcut="B", avg_down=True)
    save_model_dir(variant, tmp_path / "d", arch="resnet20", classes=[], preprocessing=pre)
    report, out = convert_checkpoint(tmp_path / "d", "resnet20", tmp_path / "d2")
    assert report.loaded and load_model(out).config == variant.config


def test_convert_writes_nothing_it_cannot_finish(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    src = tmp_path / "r18.safetensors"
    save_file(ours("resnet18").state_dict(), src)
    existing = tmp_path / "existing.npz"
    existing.write_bytes(b"keep me")
    argv = ["convert", str(src), "--arch", "resnet18", "--to", "keras", "--out", str(existing)]
    from resnetkit.interop.convert import convert_checkpoint

    with pytest.raises(ValueError, match="basic blocks"):  # Keras has no ResNet-18
        convert_checkpoint(src, "resnet18", existing, target="keras")
    assert main(argv) == 2
    assert existing.read_bytes() == b"keep me"
    assert (
        main(["convert", str(src), "--arch", "resnet18", "--to", "torchvision", "--out", str(src)])
        == 2
    )  # the source itself: refused
    assert load_model(src, arch="resnet18").num_classes == 1000


def test_a_broken_config_json_is_named(tmp_path: Path) -> None:
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{oops")
    (tmp_path / "hf" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=r"hf/config.json: not valid JSON"):
        read_checkpoint(tmp_path / "hf")


def _preparation(model: nn.Module) -> tuple[Any, ...]:
    prep = resnetkit.Preprocessing.of(model)
    return prep.image_size, prep.resize, prep.interpolation, prep.mean, prep.std


@pytest.mark.parametrize("processor", ["resnetkit", "convnext"])
def test_converting_a_huggingface_folder_keeps_its_preprocessor_config(
    processor: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """convert read config.json and the weights and left preprocessor_config.json out: the
    model directory got ImageNet's mean/std and 224, while predict on the same folder reads
    the processor's."""
    torch.manual_seed(0)
    model = ours("resnet18", num_classes=3)
    model.pretrained_cfg = {  # type: ignore[assignment]
        "input_size": 96,
        "resize": 128,
        "interpolation": "bicubic",
        "mean": [0.5, 0.4, 0.3],
        "std": [0.2, 0.25, 0.3],
    }
    hf = to_huggingface(model, tmp_path / "hf", classes=["a", "b", "c"])
    if processor == "convnext":  # as transformers' own ResNets (microsoft/resnet-50) ship
        proc = {"image_processor_type": "ConvNextImageProcessor", "crop_pct": 0.875,
                "size": {"shortest_edge": 112}, "resample": 2, "do_normalize": True,
                "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3]}  # fmt: skip
        (hf / "preprocessor_config.json").write_text(json.dumps(proc))
    predicted = _preparation(load_model(hf))  # what `resnetkit predict --model HF` uses
    assert predicted[3] == (0.5, 0.4, 0.3)
    argv = ["convert", str(hf), "--arch", "resnet18", "--out", str(tmp_path / "rk")]
    assert main(argv) == 0, capsys.readouterr().err
    assert "names no input normalization" not in capsys.readouterr().out
    converted = load_model(tmp_path / "rk")
    assert _preparation(converted) == predicted
    assert converted.pretrained_cfg["classes"] == ["a", "b", "c"]
    argv = ["convert", str(hf), "--arch", "resnet18", "--to", "timm", "--out", str(tmp_path / "t")]
    assert main(argv) == 0, capsys.readouterr().err
    assert _preparation(load_model(tmp_path / "t")) == predicted

    proc = json.loads((hf / "preprocessor_config.json").read_text())
    (hf / "preprocessor_config.json").write_text(json.dumps({**proc, "image_std": [0.2, 0, 0.3]}))
    with pytest.raises(ValueError, match=r"preprocessor_config.json: image_std must be positive"):
        read_checkpoint(hf)


def test_every_pil_filter_comes_back_from_a_huggingface_folder(tmp_path: Path) -> None:
    """preprocessor_config.json's ``resample`` was written for six PIL filters and read back
    for three: lanczos, box and hamming came back (load and convert alike) as bilinear."""
    for interpolation in ("lanczos", "box", "hamming", "nearest"):
        model = ours("resnet18", num_classes=3)
        model.pretrained_cfg = {  # type: ignore[assignment]
            "input_size": 96,
            "resize": 128,
            "interpolation": interpolation,
            "mean": [0.5, 0.4, 0.3],
            "std": [0.2, 0.25, 0.3],
        }
        hf = to_huggingface(model, tmp_path / interpolation)
        assert load_model(hf).pretrained_cfg["interpolation"] == interpolation
        assert read_checkpoint(hf).preprocessing["interpolation"] == interpolation


def test_a_grayscale_model_goes_to_huggingface_and_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 1-channel model's Hugging Face folder could not be loaded back (num_channels was
    ignored), and it had no preprocessor_config.json, without a word."""
    from importlib import resources

    from PIL import Image

    from resnetkit.models.model_dir import save_model_dir

    model = randomize(ours("resnet18", num_classes=2, in_chans=1), seed=4)
    pre = {"input_size": 64, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}  # RGB's, averaged
    src = save_model_dir(model, tmp_path / "m", arch="resnet18", classes=["a", "b"],
                         preprocessing=pre)  # fmt: skip
    model.pretrained_cfg = pre  # type: ignore[assignment]
    argv = ["convert", str(src), "--arch", "resnet18", "--to", "huggingface"]
    assert main([*argv, "--out", str(tmp_path / "hf")]) == 0, capsys.readouterr().err
    assert "the model is grayscale: its preprocessor_config.json takes grayscale pictures" in (
        capsys.readouterr().out
    )
    hf = tmp_path / "hf"
    theirs = transformers.ResNetForImageClassification.from_pretrained(hf)
    x = images(64, chans=1)
    assert_same(out(theirs, x), out(model, x))
    processor = transformers.AutoImageProcessor.from_pretrained(str(hf))
    picture = Image.open(resources.files("resnetkit.assets").joinpath("cat.png"))
    their_x = processor(picture.convert("L"), return_tensors="pt")["pixel_values"][0]
    our_x = resnetkit.Preprocessing.of(model).transform()(picture)
    assert their_x.shape == our_x.shape == (1, 64, 64)
    assert float((their_x - our_x).abs().mean()) < 1e-3
    back = load_model(hf)  # resnetkit reads num_channels and the grayscale processor
    assert back.config.in_chans == 1
    assert_same(out(back, x), out(model, x))
    assert _preparation(back) == _preparation(model)
    again = tmp_path / "again"  # and convert reads them
    assert main(["convert", str(hf), "--arch", "resnet18", "--out", str(again)]) == 0
    assert load_model(again).config.in_chans == 1
    assert _preparation(load_model(again)) == _preparation(model)

    four = ours("resnet18", num_classes=2, in_chans=4)  # tensors, not pictures: said so
    report, _ = _four_channels_to_huggingface(four, tmp_path)
    assert any("no preprocessor_config.json was written (the model takes 4-channel" in n
               for n in report.notes)  # fmt: skip
    assert not (tmp_path / "hf4" / "preprocessor_config.json").exists()
    assert load_model(tmp_path / "hf4").config.in_chans == 4


def _four_channels_to_huggingface(model: ResNet, tmp_path: Path) -> Any:
    from safetensors.torch import save_file

    from resnetkit.interop.convert import convert_checkpoint

    save_file(model.state_dict(), str(tmp_path / "four.safetensors"))
    return convert_checkpoint(
        tmp_path / "four.safetensors", model.name, tmp_path / "hf4", target="huggingface"
    )


def test_class_names_that_do_not_fit_the_classifier_are_refused(tmp_path: Path) -> None:
    """A Hugging Face config.json naming 2 classes for a 3-output classifier converted with
    the names silently dropped."""
    hf = to_huggingface(ours("resnet18", num_classes=3), tmp_path / "hf", classes=["a", "b", "c"])
    config = json.loads((hf / "config.json").read_text())
    config["id2label"] = {"0": "a", "1": "b"}
    (hf / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"names 2 classes, and its classifier has 3 outputs"):
        read_checkpoint(hf)
