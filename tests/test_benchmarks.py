"""The benchmarks run end to end on the bundled sample and write what their README promises."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from benchmarks import data_pipeline, train_throughput

# One round of two tiny steps: checks that every variant runs, not how fast it is.
TINY = ["--rounds", "1", "--steps", "2", "--warmup", "1", "--threads", "1", "--batch-size", "32"]


@pytest.fixture(autouse=True)
def _keep_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(data_pipeline.DATA_ENV, raising=False)  # always the bundled sample


def _check(out: Path, variants: set[str], anchor: str) -> dict:
    results = json.loads(out.read_text())
    assert set(results["variants"]) == variants
    assert results["anchor"] == anchor
    for name, variant in results["variants"].items():
        rates = variant["images_per_s"]
        assert len(rates["values"]) == 1, name
        assert rates["mean"] > 0, name
        assert variant["ratio_vs_anchor"]["of_means"] > 0, name
    assert results["ratio"] > 0
    assert results["config"]["data_dir"] == "cifar10-sample"
    assert results["config"]["train_images"] == 1000
    assert results["machine"]["torch_threads"] == 1
    table = out.with_suffix(".md").read_text()
    assert all(f"| {name} |" in table for name in variants)
    return results


def test_train_throughput_smoke(tmp_path: Path) -> None:
    out = tmp_path / "train.json"
    argv = [*TINY, "--num-workers", "0", "--bf16", "--out", str(out)]
    assert train_throughput.main(argv) == 0
    results = _check(
        out, {"plain-pytorch", "resnetkit-fast", "resnetkit-fast-bf16"}, "plain-pytorch"
    )
    assert results["config"]["num_workers"] == 0
    assert results["config"]["bf16"] is True


def test_data_pipeline_smoke(tmp_path: Path) -> None:
    out = tmp_path / "data.json"
    assert data_pipeline.main([*TINY, "--num-workers", "0", "--out", str(out)]) == 0
    _check(out, {"dataloader-pil-w0", "tensorloader"}, "dataloader-pil-w0")


def test_fast_pipeline_matches_the_anchor_batches() -> None:
    """Both pipelines yield the same kind of batch: normalised float32 images, int64 labels."""
    data = data_pipeline.load_train_split(data_pipeline.SAMPLE)
    anchor = data_pipeline.dataloader_stream(data, batch_size=8, num_workers=0, seed=0)
    fast = data_pipeline.tensorloader_stream(data_pipeline.tensor_loader(data, 8, seed=0))
    (xa, ya), (xf, yf) = next(anchor), next(fast)
    anchor.close()
    fast.close()
    assert xa.shape == xf.shape == (8, 3, 32, 32)
    assert xa.dtype == xf.dtype == torch.float32
    assert ya.dtype == yf.dtype == torch.int64
    assert xf.is_contiguous(memory_format=torch.channels_last)
    # Same normalisation: the value of a zero-padded pixel (black) is -mean/std in both.
    assert torch.allclose(xa.amin(dim=(0, 2, 3)), xf.amin(dim=(0, 2, 3)), atol=0.05)
