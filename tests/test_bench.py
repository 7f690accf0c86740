"""``resnetkit bench``: every backend runs the same computation, timings and ratios add up."""

import json
from pathlib import Path

import pytest

from resnetkit.bench import BackendResult, BenchReport, bench_model
from resnetkit.cli.main import main
from resnetkit.models.loading import load_model
from resnetkit.models.registry import create_model
from tests.conftest import needs_cxx

pytestmark = pytest.mark.usefixtures("one_thread")


def test_backends_match_eager_and_unavailable_ones_say_why() -> None:
    model = load_model("resnet20.cifar10")
    report = bench_model(
        model,
        backends=("torchvision", "eager", "channels_last", "ort", "ort-int8"),
        batch_sizes=(1, 3),
        iters=2,
        warmup=1,
        rounds=2,
        log=lambda _: None,
    )
    assert report.model == "resnet20" and report.input_size == 32
    # torchvision has no CIFAR ResNet: the anchor is reported as skipped, with the reason.
    skipped = report.result("torchvision", 1)
    assert skipped.skipped and "cifar" in skipped.skipped.lower()
    for batch in (1, 3):
        for backend in ("eager", "channels_last", "ort"):
            r = report.result(backend, batch)
            assert not r.skipped
            assert len(r.latencies_ms) == 4  # iters x rounds
            assert r.p90_ms >= r.p50_ms > 0
            assert r.max_abs_diff <= 1e-4, backend
        # int8 computes an approximation: close, but not float32-close.
        int8 = report.result("ort-int8", batch)
        assert 0 < int8.max_abs_diff < 2.0
    table = report.table()
    assert "| 3 | ort-int8 |" in table and "skipped" in table
    assert report.anchor == "eager"  # the first backend that ran: torchvision has no numbers
    assert report.best_fp32(1) in (report.result("eager", 1), report.result("channels_last", 1))


def test_torchvision_anchor_holds_the_same_weights() -> None:
    model = create_model("resnet18", num_classes=7).eval()
    report = bench_model(
        model,
        backends=("torchvision", "eager"),
        input_size=64,
        iters=1,
        warmup=0,
        rounds=1,
        log=lambda _: None,
    )
    anchor = report.result("torchvision", 1)
    assert not anchor.skipped and anchor.max_abs_diff <= 1e-5
    assert report.anchor == "torchvision"


def test_ratios_come_from_p50_latency() -> None:
    fast = BackendResult("eager", 2, latencies_ms=[10.0, 10.0, 30.0])
    slow = BackendResult("torchvision", 2, latencies_ms=[20.0, 20.0, 20.0])
    report = BenchReport("m", 32, 1, [slow, fast], anchor="torchvision")
    assert fast.p50_ms == 10.0 and fast.images_per_s == pytest.approx(2 * 3 / 0.05)
    row = next(line for line in report.table().splitlines() if "| eager |" in line)
    assert "| 2.00 |" in row  # twice as fast as the anchor at the median


def test_bad_arguments_are_refused() -> None:
    model = create_model("resnet20")
    with pytest.raises(ValueError, match="unknown backend.*tensorrt"):
        bench_model(model, backends=("tensorrt",))
    with pytest.raises(ValueError, match="iters must be positive"):
        bench_model(model, iters=0)
    with pytest.raises(ValueError, match="batch sizes must be positive"):
        bench_model(model, batch_sizes=(0,))


def test_cli_prints_json_and_writes_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    argv = ["bench", "--model", "resnet20", "--backends", "eager,ort", "--batch-size", "1,2"]
    argv += ["--iters", "1", "--rounds", "1", "--warmup", "0", "--threads", "1"]
    assert main([*argv, "--json", "--out", str(out)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == json.loads(out.read_text())
    again = BenchReport.from_dict(shown)
    assert out.with_suffix(".md").read_text() == again.table() + "\n"
    assert again.result("ort", 2).latencies_ms == shown["results"][3]["latencies_ms"]
    assert {(r["backend"], r["batch_size"]) for r in shown["results"]} == {
        ("eager", 1),
        ("eager", 2),
        ("ort", 1),
        ("ort", 2),
    }
    assert shown["machine"]["logical_cpus"] >= 1
    assert main(["bench", "--model", "resnet20", "--batch-size", "x"]) == 2
    assert "--batch-size must be integers" in capsys.readouterr().err


@needs_cxx
def test_compiled_and_bf16_paths_compute_the_same_model() -> None:
    report = bench_model(
        load_model("resnet20.cifar10"),
        backends=("eager", "compile", "onednn-graph", "bf16"),
        batch_sizes=(2,),
        iters=1,
        warmup=0,
        rounds=1,
        log=lambda _: None,
    )
    for backend in ("compile", "onednn-graph"):
        compiled = report.result(backend, 2)
        assert not compiled.skipped and compiled.setup_s > 0
        assert compiled.max_abs_diff <= 1e-4  # BatchNorm folded, weights frozen: same function
    assert report.best_fp32(2) is not None
    assert report.best_fp32(2).backend in ("eager", "compile", "onednn-graph")  # type: ignore[union-attr]
    assert report.result("bf16", 2).max_abs_diff < 0.5  # 8-bit mantissa: close, not equal


def test_bare_architecture_names_get_random_weights_and_default_preprocessing() -> None:
    from resnetkit.models.loading import load_model_or_random

    random50 = load_model_or_random("resnet50")
    assert random50.pretrained_cfg["input_size"] == 224 and not random50.training
    shipped = load_model_or_random("resnet20.cifar10")
    assert shipped.pretrained_cfg["classes"][3] == "cat"
    with pytest.raises(ValueError, match="not a model directory"):
        load_model_or_random("resnet20.imagenet")


def test_a_failing_backend_is_reported_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    import resnetkit.bench as bench

    real = bench.prepare_backend

    def flaky(backend: str, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if backend == "channels_last":
            raise RuntimeError("shape '[3, 64, 64]' is invalid")
        return real(backend, *args, **kwargs)

    monkeypatch.setattr(bench, "prepare_backend", flaky)
    report = bench_model(
        load_model("resnet20.cifar10"),
        backends=("eager", "channels_last"),
        batch_sizes=(1,),
        iters=1,
        warmup=0,
        rounds=1,
        log=lambda _: None,
    )
    assert report.result("channels_last", 1).skipped.startswith("failed: RuntimeError: shape")
    assert report.result("eager", 1).latencies_ms


def test_a_backend_or_threads_given_wrong_is_refused(capsys: pytest.CaptureFixture[str]) -> None:

    argv = ["bench", "--model", "resnet20", "--iters", "1", "--rounds", "1"]
    assert main([*argv, "--backends", "eager,channels_last,eager"]) == 2
    assert "eager given twice" in capsys.readouterr().err
    assert main([*argv, "--backends", ","]) == 2
    assert "--backends eager,ort" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--threads", "-1"])
    assert "--threads" in capsys.readouterr().err


def test_onnx_runtime_runs_at_the_input_size_asked() -> None:
    model = create_model("resnet20").eval()
    report = bench_model(
        model, backends=("eager", "ort"), input_size=48, iters=1, warmup=0, rounds=1,
        log=lambda _: None,
    )  # fmt: skip
    ort = report.result("ort", 1)
    assert not ort.skipped, ort.skipped  # was "failed": the file took 32x32 inputs
    assert ort.max_abs_diff <= 1e-4
