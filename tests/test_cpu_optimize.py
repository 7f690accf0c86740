"""optimize_for_cpu: the compiled float32 paths compute the eager model's function."""

from __future__ import annotations

import pytest
import torch

from resnetkit import create_model
from resnetkit.export import CPUOptimizationError, cpu, optimize_for_cpu
from resnetkit.export.cpu import chunk_for
from tests.conftest import needs_cxx

pytestmark = needs_cxx


@pytest.mark.parametrize(
    ("arch", "method"),
    # plain blocks fold every BatchNorm; pre-activation keeps some (test_bench runs
    # resnet20 through inductor)
    [
        ("resnet20", "onednn-graph"),
        ("preact_resnet18", "onednn-graph"),
        ("preact_resnet18", "inductor"),
    ],
)
def test_optimized_model_matches_eager_at_any_batch_size(
    one_thread: None, method: str, arch: str
) -> None:
    torch.manual_seed(0)
    model = create_model(arch, num_classes=7).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that folding matters
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run = optimize_for_cpu(
        model,
        torch.randn(2, 3, 32, 32),
        method,  # type: ignore[arg-type]
        chunk_size=4,
    )
    for batch in (2, 5, 9):  # the example's shape, then new ones; 9 runs as chunks 4, 4, 1
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            want = model(x)
        for _ in range(3):
            got = run(x)
        assert got.shape == (batch, 7)
        assert (got - want).abs().max() <= 1e-4
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # untouched
    assert model.training is False


def _recording_backend(
    monkeypatch: pytest.MonkeyPatch, shapes: list[int], error: float = 0.0
) -> None:
    """The oneDNN backend replaced by the folded model itself, recording each batch it runs
    and adding ``error`` to its outputs (a miscompiled graph)."""

    def build(folded: torch.nn.Module) -> object:
        def run(x: torch.Tensor) -> torch.Tensor:
            shapes.append(x.shape[0])
            with torch.inference_mode():
                return folded(x) + error

        return run

    monkeypatch.setattr(cpu, "_onednn_graph", build)


def test_a_result_outside_the_tolerance_is_refused(
    one_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = create_model("resnet20").eval()
    x = torch.randn(1, 3, 32, 32)
    _recording_backend(monkeypatch, [], error=1e-2)  # far above the default 1e-4
    with pytest.raises(CPUOptimizationError, match="differs from eager by 1.00e-02"):
        optimize_for_cpu(model, x, "onednn-graph")
    _recording_backend(monkeypatch, [], error=1e-6)  # within it: accepted
    optimize_for_cpu(model, x, "onednn-graph")


def test_batches_run_in_chunks_of_the_compiled_size(
    one_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = create_model("resnet20").eval()
    shapes: list[int] = []
    _recording_backend(monkeypatch, shapes)
    run = optimize_for_cpu(model, torch.randn(4, 3, 32, 32), "onednn-graph", chunk_size=4)
    shapes.clear()
    x = torch.randn(9, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(run(x), model(x), atol=1e-4, rtol=1e-4)
    assert shapes == [4, 4, 1]
    shapes.clear()
    run = optimize_for_cpu(model, torch.randn(4, 3, 32, 32), "onednn-graph", chunk_size=None)
    run(x)
    assert shapes[-1] == 9  # no chunking: one piece


def test_chunks_give_the_same_result_as_one_piece(one_thread: None) -> None:
    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    x = torch.randn(5, 3, 32, 32)
    whole = optimize_for_cpu(model, x, chunk_size=None)
    chunked = optimize_for_cpu(model, x, chunk_size=2)  # 2 + 2 + 1
    torch.testing.assert_close(chunked(x), whole(x), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="chunk_size must be >= 0"):
        optimize_for_cpu(model, x, chunk_size=-1)
    assert (chunk_for(224, 224), chunk_for(32, 32), chunk_for(1024, 1024)) == (4, 196, 1)


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="choose one of onednn-graph, inductor"):
        optimize_for_cpu(create_model("resnet20"), torch.randn(1, 3, 32, 32), "tvm")  # type: ignore[arg-type]


def test_inputs_of_the_wrong_shape_or_dtype_get_the_models_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An example without its batch dimension was blamed on the compiler ("onednn-graph
    failed here (IndexError...)"), and the compiled function took anything to its
    interpreter's traceback."""
    shapes: list[int] = []
    _recording_backend(monkeypatch, shapes)
    model = create_model("resnet20").eval()
    with pytest.raises(ValueError, match=r"4-D input .* x.unsqueeze\(0\)"):
        optimize_for_cpu(model, torch.randn(3, 32, 32))
    run = optimize_for_cpu(model, torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="looks channels-last"):
        run(torch.randn(2, 32, 32, 3))
    with pytest.raises(TypeError, match=r"floating-point input, got torch.uint8: scale"):
        run(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))  # the model's own check
    with pytest.raises(TypeError, match=r"float32 inputs .* got torch.float64: convert"):
        run(torch.zeros(2, 3, 32, 32, dtype=torch.float64))
    assert run(torch.randn(3, 3, 32, 32)).shape == (3, 10) and shapes[-1] == 3
