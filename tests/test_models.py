"""The model zoo: exact to the papers and to torchvision, one interface, clear errors."""

import re

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from torch import Tensor

import resnetkit
from resnetkit import create_model, list_models
from resnetkit.models import UnknownModelError, get_model_config
from resnetkit.models.analysis import count_macs, model_stats
from resnetkit.models.blocks import PadShortcut
from resnetkit.models.registry import Registry
from resnetkit.models.zoo import model_entries

TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336,
    "resnext101_64x4d": 83_455_272,
    "wide_resnet50_2": 68_883_240,
    "wide_resnet101_2": 126_886_696,
}
CIFAR_PARAMS = {  # paper Table 6: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M, 19.4M
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "resnet1202": 19_421_274,
}
TORCHVISION_GMACS = {  # v1.5, torchvision's model cards
    "resnet18": 1.814,
    "resnet34": 3.664,
    "resnet50": 4.089,
    "resnet101": 7.801,
    "resnet152": 11.514,
}
PAPER_GFLOPS = {  # paper Table 1 (multiply-adds), v1 stride placement
    "resnet18": 1.8,
    "resnet34": 3.6,
    "resnet50": 3.8,
    "resnet101": 7.6,
    "resnet152": 11.3,
}


def meta_model(name: str, **options: object) -> torch.nn.Module:
    with torch.device("meta"):
        return create_model(name, **options).eval()


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list(TORCHVISION_PARAMS))
def test_param_counts_equal_torchvision(name: str) -> None:
    with torch.device("meta"):
        reference = getattr(tvm, name)()
    assert n_params(meta_model(name)) == n_params(reference) == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name", list(CIFAR_PARAMS))
def test_cifar_param_counts_match_paper(name: str) -> None:
    assert n_params(meta_model(name)) == CIFAR_PARAMS[name]


def test_plain_twins_have_the_same_weights_as_option_a_resnets() -> None:
    for depth in (20, 32, 44, 56, 110):
        assert n_params(meta_model(f"plain{depth}")) == CIFAR_PARAMS[f"resnet{depth}"]


def test_preact_counts_match_paper() -> None:
    assert n_params(meta_model("preact_resnet110")) == pytest.approx(1.7e6, rel=0.03)
    assert n_params(meta_model("preact_resnet164")) == pytest.approx(1.7e6, rel=0.03)
    assert n_params(meta_model("preact_resnet1001")) == pytest.approx(10.2e6, rel=0.03)


@pytest.mark.parametrize("name", list(TORCHVISION_GMACS))
def test_macs_v15_match_torchvision(name: str) -> None:
    macs = count_macs(meta_model(name), (1, 3, 224, 224)) / 1e9
    assert macs == pytest.approx(TORCHVISION_GMACS[name], rel=0.01)


@pytest.mark.parametrize("name", list(PAPER_GFLOPS))
def test_macs_v1_match_paper_table1(name: str) -> None:
    v1 = {"stride_in_1x1": True} if name not in ("resnet18", "resnet34") else {}  # no 1x1s
    macs = count_macs(meta_model(name, **v1), (1, 3, 224, 224)) / 1e9
    assert macs == pytest.approx(PAPER_GFLOPS[name], rel=0.03)
    if not v1:
        with pytest.raises(ValueError, match="basic blocks have no 1x1"):
            meta_model(name, stride_in_1x1=True)


def test_v1_and_v15_put_the_stride_in_different_convs() -> None:
    v15 = meta_model("resnet50")
    v1 = meta_model("resnet50", stride_in_1x1=True)
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)
    assert v1.layer2[0].conv1.stride == (2, 2) and v1.layer2[0].conv2.stride == (1, 1)


def test_shortcut_options() -> None:
    a = meta_model("resnet34", shortcut="A")
    b = meta_model("resnet34")
    c = meta_model("resnet34", shortcut="C")
    blocks = lambda m: [blk for stage in m.stages for blk in stage]  # noqa: E731
    assert sum(isinstance(blk.downsample, PadShortcut) for blk in blocks(a)) == 3
    assert sum(blk.downsample is not None for blk in blocks(b)) == 3
    assert all(blk.downsample is not None for blk in blocks(c))
    assert n_params(a) < n_params(b) < n_params(c)
    assert n_params(b) - n_params(a) == sum(
        p.numel()
        for blk in blocks(b)
        if blk.downsample is not None
        for p in blk.downsample.parameters()
    )


def test_option_a_pads_new_channels_equally_on_both_sides() -> None:
    pad = PadShortcut(stride=2, extra_channels=16)
    x = torch.arange(2 * 16 * 4 * 4, dtype=torch.float32).reshape(2, 16, 4, 4)
    y = pad(x)
    assert y.shape == (2, 32, 2, 2)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


@pytest.mark.parametrize(
    "name",
    ["resnet18", "resnet50", "resnet101", "resnext50_32x4d", "resnext101_64x4d", "wide_resnet50_2"],
)
def test_torchvision_state_dict_loads_strict_and_gives_same_outputs(name: str) -> None:
    reference = getattr(tvm, name)().eval()
    ours = create_model(name).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - reference(x)).abs().max() <= 1e-5


MODEL_SMOKE_SIZE = {"resnet1202": 32, "preact_resnet1001": 32}


@pytest.mark.parametrize("name", list_models())
def test_every_model_forward_backward(name: str) -> None:
    config = get_model_config(name)
    size = 32
    model = create_model(name, num_classes=5)
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert config.num_classes in (10, 1000)


def test_every_model_is_listed_once_and_unique() -> None:
    names = [e.name for e in model_entries()]
    assert len(names) == len(set(names)) == len(list_models())
    for family in ("resnet20", "plain56", "preact_resnet164", "resnext50_32x4d", "resnet50d"):
        assert family in names


def test_registry_refuses_duplicates() -> None:
    registry = Registry()
    entry = model_entries()[0]
    registry.register(entry)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(entry)


def test_list_models_pattern() -> None:
    assert list_models("plain*") == [
        "plain18",
        "plain34",
        "plain20",
        "plain32",
        "plain44",
        "plain56",
        "plain110",
    ]
    assert "resnet20" in resnetkit.list_models("resnet*")


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(UnknownModelError, match="Did you mean 'resnet50'"):
        create_model("resnt50")


def test_a_path_or_a_model_in_the_wrong_function_is_named() -> None:
    """create_model(Path) failed inside the Hub name check ('no attribute startswith');
    load_model(model) inside pathlib ('expected str, bytes or os.PathLike')."""
    from pathlib import Path

    with pytest.raises(TypeError, match=r"model name \(str\), got .*runs/x.*use resnetkit.load_"):
        create_model(Path("runs/x/model"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model name"):
        create_model(None)  # type: ignore[arg-type]
    model = create_model("resnet20")
    with pytest.raises(TypeError, match="got ResNet: it is already a model .*load_checkpoint"):
        resnetkit.load_model(model)  # type: ignore[arg-type]


def test_option_values_are_checked_as_given() -> None:
    with pytest.raises(ValueError, match=r"drop_path_rate must be in \[0, 1\), got 2.0"):
        create_model("resnet20", drop_path_rate=2.0)  # not the first block's share of it
    with pytest.raises(ValueError, match="num_classes must be a whole number, got '10'"):
        create_model("resnet20", num_classes="10")
    with pytest.raises(ValueError, match=r"layers must be positive whole numbers, got \(3, 0"):
        create_model("resnet20", layers=(3, 0, 3))
    with pytest.raises(ValueError, match="plain56 has no shortcuts, so there is nothing to drop"):
        create_model("plain56", drop_path_rate=0.1)


def test_unknown_option_lists_valid_ones() -> None:
    with pytest.raises(TypeError, match="num_clases.*Did you mean 'num_classes'.*Valid options"):
        create_model("resnet20", num_clases=3)


@pytest.mark.parametrize(
    "shape, match",
    [
        ((3, 32, 32), "4-D input.*unsqueeze"),
        ((2, 32, 32, 3), "3 input channels.*channels-last"),
        ((2, 1, 32, 32), "3 input channels"),
        ((2, 3, 16, 16), "at least 32x32"),
    ],
)
def test_bad_input_says_the_expected_shape(shape: tuple[int, ...], match: str) -> None:
    model = create_model("resnet18").eval()
    with pytest.raises(ValueError, match=match):
        model(torch.randn(shape))


def test_input_that_is_not_a_float_tensor_is_named() -> None:
    """A numpy array failed on ``.dim()`` (AttributeError), uint8 pixels inside conv1."""
    import numpy as np

    model = create_model("resnet20").eval()
    with pytest.raises(TypeError, match="takes a torch tensor .*got ndarray.*from_numpy"):
        model(np.zeros((1, 3, 32, 32), dtype=np.float32))
    with pytest.raises(TypeError, match="floating-point input, got torch.uint8.*Preprocessing"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    assert model(torch.zeros(1, 3, 32, 32, dtype=torch.float64).float()).shape == (1, 10)


def test_in_chans_and_num_classes() -> None:
    model = create_model("resnet20", in_chans=1, num_classes=7)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    model = create_model("resnet50", in_chans=5, num_classes=2)
    assert model(torch.randn(2, 5, 32, 32)).shape == (2, 2)


def test_uniform_interface() -> None:
    model = create_model("resnet50").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, 2048, 2, 2)
        pooled = model.forward_head(features, pre_logits=True)
        assert pooled.shape == (2, 2048)
        logits = model.forward_head(features)
        assert torch.allclose(logits, model.fc(pooled))
        maps = model.forward_intermediates(x, out_indices=(1, 3))
        assert [m.shape[1:] for m in maps] == [(512, 8, 8), (2048, 2, 2)]
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    assert model(x).shape == (2, 2048)


def test_reset_classifier_and_intermediates_check_what_they_are_given() -> None:
    half = create_model("resnet20").half().eval()
    half.reset_classifier(5)  # in the model's dtype, not float32
    assert half(torch.randn(1, 3, 32, 32).half()).shape == (1, 5)
    named = resnetkit.load_model("resnet20.cifar10")
    named.reset_classifier(4)  # the old 10 class names go with the old head
    assert named.pretrained_cfg["classes"] == []  # type: ignore[index]
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        named.reset_classifier(-1)
    assert named.num_classes == named.config.num_classes == 4  # nothing half-changed
    x = torch.randn(1, 3, 32, 32)
    for bad in ((-1,), (5,), ()):
        with pytest.raises(ValueError, match="must name stages of resnet20, 0..2"):
            named.forward_intermediates(x, bad)


def test_features_only_backbone() -> None:
    model = create_model("resnet20", features_only=True, out_indices=(0, 2)).eval()
    maps = model(torch.randn(2, 3, 32, 32))
    assert [tuple(m.shape) for m in maps] == [(2, 16, 32, 32), (2, 64, 8, 8)]
    # as timm: the stages forward returns, with its accessors (a neck's input widths)
    assert model.feature_info.channels() == [16, 64]
    assert model.feature_info.reduction() == [1, 4]
    assert model.feature_info.module_name() == ["layer1", "layer3"]
    assert create_model("resnet20").feature_info.channels() == [16, 32, 64]  # every stage
    unordered = create_model("resnet20", features_only=True, out_indices=(2, 0, 2)).eval()
    maps = unordered(torch.randn(1, 3, 32, 32))  # stage order, each once: as feature_info says
    assert [m.shape[1] for m in maps] == unordered.feature_info.channels() == [16, 64]
    with pytest.raises(ValueError, match="out_indices"):
        create_model("resnet20", out_indices=(3,))
    with pytest.raises(ValueError, match=r"out_indices \[\] must name stages of resnet20, 0..2"):
        create_model("resnet20", features_only=True, out_indices=())
    # numpy indices, or one stage as an int, are stage numbers too; halves are not
    x = torch.randn(1, 3, 32, 32)
    numpy_indices = create_model("resnet20", features_only=True, out_indices=np.array([0, 2]))
    assert [f.shape[1] for f in numpy_indices.eval()(x)] == [16, 64]
    assert [f.shape[1] for f in model.forward_intermediates(x, np.array([1]))] == [32]
    assert [f.shape[1] for f in model.forward_intermediates(x, 2)] == [64]
    with pytest.raises(ValueError, match=r"must be stage numbers of resnet20, 0..2; got \(0.5,\)"):
        create_model("resnet20", features_only=True, out_indices=(0.5,))


def test_config_refuses_what_would_build_and_fail_or_do_nothing() -> None:
    bad = {
        "stride_in_1x1": ("resnet50", "false", "must be True or False"),
        "avg_down": ("resnet50", "no", "must be True or False"),
        "stem_width": ("resnet20", 0, "stem_width must be >= 1"),
        "groups": ("resnet50", -2, "groups and width_per_group >= 1"),
        "width_per_group": ("resnet164", 2, "narrowest bottleneck (width 16) without a channel"),
    }
    for option, (name, value, message) in bad.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            create_model(name, **{option: value})
    with pytest.raises(ValueError, match="stem_width must be >= 2"):
        create_model("resnet50d", stem_width=1)
    with pytest.raises(ValueError, match="shortcut 'A' has no projections"):
        create_model("resnet50d", shortcut="A")
    # Options are checked: a lower-case "b" would otherwise have built option C.
    for option, value in (("shortcut", "b"), ("stem", "CIFAR"), ("block", "Bottleneck")):
        with pytest.raises(ValueError, match=f"{option} must be one of"):
            create_model("resnet20", **{option: value})


def test_zero_init_residual_makes_blocks_start_as_identity_paths() -> None:
    model = create_model("resnet18", zero_init_residual=True)
    assert all(blk.bn2.weight.abs().sum() == 0 for s in model.stages for blk in s)
    pre = create_model("preact_resnet110", zero_init_residual=True)
    assert all(blk.conv2.weight.abs().sum() == 0 for s in pre.stages for blk in s)
    with pytest.raises(ValueError, match="plain20 has no shortcuts"):  # it would output zeros
        create_model("plain20", zero_init_residual=True)


def test_first_preact_unit_follows_the_2016_appendix() -> None:
    """The first unit after a bare conv (CIFAR) pre-activates both paths; after a BN-ReLU
    stem (ImageNet) it adds no BN-ReLU of its own; later units keep the raw sum."""
    cifar = create_model("preact_resnet110").eval()
    first, second = cifar.layer1[0], cifar.layer1[1]
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        pre = torch.relu(first.bn1(x))
        branch = first.conv2(torch.relu(first.bn2(first.conv1(pre))))
        torch.testing.assert_close(first(x), branch + pre)
        pre2 = torch.relu(second.bn1(x))
        branch2 = second.conv2(torch.relu(second.bn2(second.conv1(pre2))))
        torch.testing.assert_close(second(x), branch2 + x)
    imagenet = create_model("preact_resnet50")
    assert imagenet.layer1[0].bn1 is None and imagenet.layer1[1].bn1 is not None
    assert isinstance(imagenet.bn1, torch.nn.BatchNorm2d)  # the stem's BN-ReLU serves it


def test_drop_path_is_active_in_training_only() -> None:
    model = create_model("resnet20", drop_path_rate=0.5)
    rates = [blk.drop_path.drop_prob for s in model.stages for blk in s]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.5) and rates == sorted(rates)
    x = torch.randn(4, 3, 32, 32)
    model.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    b = model(x)
    assert not torch.allclose(a, b)
    model.eval()
    assert torch.equal(model(x), model(x))


def _saved_for_backward(model: torch.nn.Module, x: Tensor) -> int:
    """How many tensors the forward pass keeps for the backward pass (outside checkpoints)."""
    count = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal count
        count += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x).sum()
    out.backward()
    return count


def test_grad_checkpointing_gives_the_same_gradients() -> None:
    x = torch.randn(2, 3, 32, 32)
    plain = create_model("resnet20").eval()
    ckpt = create_model("resnet20", grad_checkpointing=True).eval()
    ckpt.load_state_dict(plain.state_dict())
    # the same gradients would also come from a model that ignored the flag: it must keep
    # only the blocks' inputs (and the stem and head), not every activation
    kept, kept_ckpt = _saved_for_backward(plain, x), _saved_for_backward(ckpt, x)
    assert kept_ckpt * 4 < kept
    for m in (plain, ckpt):
        m.zero_grad(set_to_none=True)
        m(x).sum().backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_grad_checkpointing_trains_like_the_plain_forward() -> None:
    """In training mode the recomputation in the backward pass runs every BatchNorm again:
    its running statistics must still be updated once per step, and stochastic depth must
    drop the same branches both times."""
    x = torch.randn(4, 3, 32, 32)
    plain = create_model("resnet20", drop_path_rate=0.2)
    ckpt = create_model("resnet20", drop_path_rate=0.2, grad_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    # in eval mode (BatchNorm's statistics stay as they are): the flag really recomputes
    assert _saved_for_backward(ckpt.eval(), x[:1]) * 4 < _saved_for_backward(plain.eval(), x[:1])
    ckpt.train(), plain.train()
    for m in (plain, ckpt):
        m.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        m(x).square().mean().backward()
    a, b = plain.state_dict(), ckpt.state_dict()
    assert int(b["layer1.0.bn1.num_batches_tracked"]) == 1
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_info_stats() -> None:
    stats = model_stats("resnet20")
    assert stats.params == 269_722
    assert stats.macs == pytest.approx(40.55e6, rel=0.01)
    assert stats.stage_shapes["layer3"] == [1, 64, 8, 8]
    # fp32 outputs per image, each tensor once (in-place ReLUs and DropPath hand back their
    # input): stem conv+BN 2 x 16x32x32; per block conv, BN, conv, BN: 4 x 16x32x32 (x3),
    # 4 x 32x16x16 (x3) + option A's padded shortcut, 4 x 64x8x8 (x3) + its shortcut; 64 + 10.
    elements = 2 * 16_384 + 12 * 16_384 + 13 * 8_192 + 13 * 4_096 + 64 + 10
    assert stats.activation_bytes == 4 * elements == 1_556_776
    assert model_stats("resnet50", input_size=112).macs == count_macs(
        meta_model("resnet50"), (1, 3, 112, 112)
    )


def test_pretrained_unknown_tag_is_explained() -> None:
    from resnetkit.models.registry import UnknownWeightsError, find_weights

    with pytest.raises(KeyError, match="no packaged weights named 'resnet50.imagenet'"):
        create_model("resnet50.imagenet", pretrained=True)
    with pytest.raises(UnknownWeightsError, match="Did you mean 'resnet20.cifar10'"):
        create_model("resnet20.cifar1", pretrained=True)
    with pytest.raises(ValueError, match="Did you mean 'resnet20.cifar10'"):  # the same error
        find_weights("resnet20.cifar1")
    with pytest.raises(TypeError, match="name the weights in the model name"):
        create_model("resnet20", pretrained="paper_cifar10")  # type: ignore[arg-type]
    # a torchvision tag that exists for other depths only: the same error, no traceback
    with pytest.raises(UnknownWeightsError, match="resnet18"):
        find_weights("resnet18.tv2_in1k")
    with pytest.raises(FileNotFoundError, match="no such model directory or checkpoint"):
        resnetkit.load_model("weights.npz", arch="resnet50")  # a missing file, not a model name


def test_pretrained_with_another_head_or_input_width_adapts_the_weights() -> None:
    """timm's fine-tuning idiom: the body keeps the weights, a new head (classes forgotten),
    a grey first conv that sums the RGB filters (a grey image gives the RGB response)."""
    source = create_model("resnet20.cifar10", pretrained=True).eval()
    torch.manual_seed(0)
    model = create_model("resnet20.cifar10", pretrained=True, num_classes=4).eval()
    assert model.fc.out_features == 4 and model.pretrained_cfg["classes"] == []
    assert model.pretrained_cfg["mean"] == source.pretrained_cfg["mean"]
    torch.manual_seed(0)  # a fresh head, initialised as the architecture's own
    assert torch.equal(model.fc.weight, create_model("resnet20", num_classes=4).fc.weight)
    body = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    for key, value in body.items():
        assert torch.equal(model.state_dict()[key], value), key
    grey = create_model("resnet20", pretrained=True, in_chans=1, num_classes=0).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            grey(x), source.forward_features(x.expand(-1, 3, -1, -1)).mean((2, 3))
        )
    assert grey.config.in_chans == 1 and grey.num_classes == 0
    # what was measured on the weights as they were is not claimed for the adapted model
    assert "metrics" not in grey.pretrained_cfg and "metrics" in source.pretrained_cfg
    assert grey.pretrained_cfg["adapted"] == ["in_chans=1", "num_classes=0"]
    # the paper's per-pixel mean follows the input channels: one grey mean image
    paper = create_model("resnet20.paper_cifar10", pretrained=True, in_chans=1, num_classes=2)
    rgb = torch.tensor(
        source_paper_mean := create_model("resnet20.paper_cifar10", pretrained=True).pretrained_cfg[
            "pixel_mean"
        ]
    ).view(3, -1)
    assert len(source_paper_mean) == 3 * 32 * 32
    torch.testing.assert_close(torch.tensor(paper.pretrained_cfg["pixel_mean"]), rgb.mean(0))
    assert len(resnetkit.predict(paper, [_asset("cat.png")]).predictions) == 1


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("resnet20", {}),
        ("preact_resnet18", {"skip": "shortcut_gating"}),
        ("resnet18", {"unit": "bn_after_add", "drop_path_rate": 0.1}),
    ],
)
def test_fx_feature_extraction_and_tracing(name: str, options: dict[str, object]) -> None:
    """torch.fx traces every model (torchvision's create_feature_extractor, FX quantisation),
    torch.export too; TorchScript's jit.script is refused with what to use instead."""
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(0)
    model = create_model(name, **options).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = model.forward_intermediates(x)
        fx = create_feature_extractor(model, {"layer2": "c3", "fc": "logits"})
        got = fx(x)
        torch.testing.assert_close(got["c3"], want[1])
        torch.testing.assert_close(got["logits"], model(x))
        exported = torch.export.export(model, (x,)).module()
        torch.testing.assert_close(exported(x), model(x))
    with pytest.raises(TypeError, match="torch.export"):
        torch.jit.script(model)
    with pytest.raises(ValueError, match="expects 3 input channels"):  # eager keeps its check
        model(torch.randn(1, 1, 32, 32))


def test_list_models_with_pretrained_lists_the_weights_tags() -> None:
    tags = resnetkit.list_models("resnet*", pretrained=True)
    assert {"resnet20.cifar10", "resnet20.paper_cifar10", "resnet50.tv2_in1k"} <= set(tags)
    assert "resnet18.tv2_in1k" not in tags and "resnet20" not in tags
    assert resnetkit.list_models("resnet20.*", pretrained=True) == [
        "resnet20.cifar10",
        "resnet20.paper_cifar10",
    ]
    for tag in tags:  # each names weights create_model would load
        assert resnetkit.find_weights(tag).tag == tag


def test_config_lists_become_tuples() -> None:
    built = create_model("resnet18", layers=[2, 2, 2, 2], widths=[64, 128, 256, 512]).config
    assert built == get_model_config("resnet18") and hash(built) == hash(built)
    assert built.layers == (2, 2, 2, 2) and isinstance(built.widths, tuple)
    from_numpy = create_model("resnet18", layers=np.array([2, 2, 2, 2])).config
    assert from_numpy == built and type(from_numpy.layers[0]) is int  # JSON-writable
    # the same architecture spelled with a list is not "another architecture" for weights
    model = create_model("resnet20.cifar10", pretrained=True, layers=[3, 3, 3])
    assert model.pretrained_cfg["classes"][0] == "airplane"


def test_timm_reads_the_packaged_weights_preprocessing() -> None:
    """timm's resolve_model_data_config fills in its ImageNet defaults (bicubic, 1/0.875
    resize and crop) for what a pretrained_cfg leaves out: the CIFAR weights say theirs."""
    from timm.data import resolve_model_data_config

    from resnetkit.predict import Preprocessing

    model = create_model("resnet20.cifar10", pretrained=True)
    timm_cfg = resolve_model_data_config(model)
    ours = Preprocessing.of(model)
    assert (timm_cfg["interpolation"], timm_cfg["crop_pct"]) == ("bilinear", 1.0)
    assert (timm_cfg["input_size"], ours.image_size, ours.resize) == (32, 32, 32)
    assert tuple(timm_cfg["mean"]) == ours.mean and tuple(timm_cfg["std"]) == ours.std


def _asset(name: str) -> str:
    from importlib import resources

    return str(resources.files("resnetkit.assets").joinpath(name))
