"""The benchmarks run end to end on the bundled sample and write what their README promises."""

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from benchmarks import data_pipeline, distill_cifar, fixres_cifar, gpu_paper_cifar, train_throughput

from resnetkit.reproduce.degradation import report_degradation
from tests.fakedata import write_fake_cifar10

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


def test_gpu_parts_rebuild_the_cifar_batches_byte_for_byte(tmp_path: Path) -> None:
    data = write_fake_cifar10(tmp_path / "data", n_train=250, n_test=37)
    gpu_paper_cifar.pack(data, tmp_path / "gpu")
    for part in ("part1", "part2"):
        gpu_paper_cifar.unpack(tmp_path / "gpu" / part, tmp_path / "there")
    for original in (data / "cifar-10-batches-bin").glob("*.bin"):
        rebuilt = tmp_path / "there" / "cifar-10-batches-bin" / original.name
        assert rebuilt.read_bytes() == original.read_bytes(), original.name
    # A part that no longer rebuilds the original is refused, not trained on.
    labels = tmp_path / "gpu" / "part2" / "test_batch.labels"
    labels.write_bytes(bytes([(labels.read_bytes()[0] + 1) % 10]) + labels.read_bytes()[1:])
    with pytest.raises(ValueError, match="does not rebuild the original test_batch.bin"):
        gpu_paper_cifar.unpack(tmp_path / "gpu" / "part2", tmp_path / "again")


def test_gpu_paper_runs_train_at_once_and_stop_at_the_budget(tmp_path: Path) -> None:
    data = write_fake_cifar10(tmp_path / "data")
    summary = gpu_paper_cifar.train_all(
        data,
        tmp_path / "runs",
        ("resnet20", "plain20"),
        budget_s=40,  # the short run needs about 9 s on 2 idle cores, 20+ on busy ones
        device="cpu",
        extra="--batch-size 50 --val-split 50 --num-threads 1 --checkpoint-every-iters 2",
        results=tmp_path / "out",
        model_args={"plain20": ["--max-iters", "4"]},  # resnet20: the whole 64k iterations
        recipe="paper-cifar",  # the 45k/5k split's recipe: a val split to check
    )
    assert json.loads((tmp_path / "out" / "gpu-paper-cifar.json").read_text()) == summary
    short = summary["models"]["plain20"]
    assert short["finished"] and short["returncode"] == 0, short["log_tail"]
    assert short["iterations"] == 4 and not short["stopped_at_budget"]
    assert "val_top1" in short["epochs"][-1] and short["final_test_top1"] is not None
    # The run longer than the budget got SIGTERM: it checkpointed where it was and said so.
    cut = summary["models"]["resnet20"]
    assert cut["stopped_at_budget"] and cut["returncode"] == 143, cut["log_tail"]
    assert not cut["finished"] and 0 < cut["iterations"] < 64000
    latest = tmp_path / "runs" / "resnet20" / "checkpoints" / "latest"
    assert cut["iterations"] == int(latest.read_text().split("-")[-1])  # not just whole epochs
    assert cut["final_test_step"] <= cut["iterations"] and cut["final_test_top1"] is not None
    assert "stopped by SIGTERM" in cut["log_tail"]
    # What comes back is few files (a device call returns at most 8), each small enough.
    back = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert back == ["gpu-paper-cifar.json", "logs.tar.xz", "plain20.tar", "resnet20.tar"]
    assert all(isinstance(size, int) for size in summary["bundles"].values())
    runs = tmp_path / "back"
    assert gpu_paper_cifar.receive(tmp_path / "out", runs) == ["plain20", "resnet20"]
    for name in ("resnet20", "plain20"):
        got = runs / "full" / name / "metrics.jsonl"
        assert got.read_text() == (tmp_path / "runs" / name / "metrics.jsonl").read_text()
        assert (runs / "full" / f"{name}.log").is_file()
    # The finished model comes back whole (for Fig. 7); the one cut short, its checkpoint.
    kept = runs / "full" / "plain20" / "model"
    assert (kept / "model.safetensors").is_file() and (kept / "config.json").is_file()
    assert not (runs / "full" / "resnet20" / "model").exists()
    ckpts = runs / "full" / "resnet20" / "checkpoints"
    assert (ckpts / (ckpts / "latest").read_text().strip()).is_dir()
    # What came back is enough for the Fig. 6 report, drawn here (one model at a time: the
    # short run's --max-iters makes it another recipe, which one figure refuses to mix).
    assert report_degradation(runs / "full", "full", ("plain20",))["models"]["plain20"]["complete"]
    report = report_degradation(runs / "full", "full", ("resnet20",))
    assert not report["models"]["resnet20"]["complete"]
    assert report["models"]["resnet20"]["iterations"] > 0
    assert (runs / "full" / "degradation.png").is_file()
    with pytest.raises(ValueError, match=r"trained with different recipes \(max_iters: 4 -> 64000"):
        report_degradation(runs / "full", "full", ("resnet20", "plain20"))
    # Runs continued here travel back to a device the same way (send, then receive there).
    gpu_paper_cifar.main(
        ["send", "--runs", str(runs / "full"), "--models", "resnet20", "--to", str(tmp_path / "s")]
    )
    assert gpu_paper_cifar.receive(tmp_path / "s", tmp_path / "there") == ["resnet20"]
    sent = tmp_path / "there" / "full" / "resnet20" / "checkpoints"
    assert (sent / "latest").read_text() == (ckpts / "latest").read_text()
    name = (ckpts / "latest").read_text().strip()
    for file in (ckpts / name).iterdir():
        assert (sent / name / file.name).read_bytes() == file.read_bytes()
    # Nothing to continue (a finished run), or a run still training here: refused, named.
    with pytest.raises(SystemExit, match="plain20 has finished: nothing to continue"):
        gpu_paper_cifar.send(runs / "full", ("plain20",), tmp_path / "s2")
    # An older tar left in the folder would travel too: only an empty one is sent into.
    with pytest.raises(SystemExit, match=r"s is not empty: send into a new folder"):
        gpu_paper_cifar.send(runs / "full", ("resnet20",), tmp_path / "s")
    # A run that got further here meanwhile is not replaced by what comes back.
    there = tmp_path / "there" / "full" / "resnet20"
    (there / "checkpoints" / "latest").write_text("ckpt-99999999")
    with pytest.raises(SystemExit, match=r"further along than what came back: resnet20 \(here"):
        gpu_paper_cifar.receive(tmp_path / "s", tmp_path / "there")
    assert (there / "checkpoints" / "latest").read_text() == "ckpt-99999999"
    # Sent runs must resume there: a machine that lost them does not start them from step 0.
    with pytest.raises(SystemExit, match=r"no checkpoint to continue .* for plain56"):
        gpu_paper_cifar.main(
            ["train", "--data-dir", str(tmp_path), "--out", str(tmp_path / "there" / "full"),
             "--models", "resnet20,plain56", "--device", "cpu", "--require-resume"]
        )  # fmt: skip
    (runs / "full" / "resnet20" / ".lock").write_text(f"{os.getpid()}\n")
    with pytest.raises(SystemExit, match=f"is being trained \\(pid {os.getpid()}\\)"):
        gpu_paper_cifar.send(runs / "full", ("resnet20",), tmp_path / "s2")
    assert not (tmp_path / "s2").exists()


def test_gpu_receive_refuses_a_member_outside_its_folder(tmp_path: Path) -> None:
    import io
    import tarfile

    (tmp_path / "out").mkdir()
    with tarfile.open(tmp_path / "out" / "evil.tar", "w") as tar:
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(ValueError, match="would land outside"):
        gpu_paper_cifar.receive(tmp_path / "out", tmp_path / "runs")
    assert not (tmp_path / "escaped.txt").exists()


def test_gpu_smoke_trains_every_model_on_the_first_part(tmp_path: Path) -> None:
    data = write_fake_cifar10(tmp_path / "data", n_train=250, n_test=37)
    gpu_paper_cifar.pack(data, tmp_path / "gpu")
    gpu_paper_cifar.unpack(tmp_path / "gpu" / "part1", tmp_path / "there")  # part 2 not yet
    summary = gpu_paper_cifar.smoke(
        tmp_path / "there",
        tmp_path / "smoke",
        tmp_path / "out",
        ("plain20", "resnet110"),  # ResNet-110's 400-iteration warm-up, shortened to fit
        device="cpu",
        iters=2,
        budget_s=60,
        extra="--batch-size 25 --num-threads 1",  # the device's bf16 and CUDA graphs: not here
    )
    assert summary["ok"] and (tmp_path / "smoke" / "ok").is_file()
    for entry in summary["models"].values():
        assert entry["iterations"] == 2 and entry["final_test_top1"] is not None
    assert summary["models"]["resnet110"]["extra_args"][:2] == ["--warmup-iters", "1"]
    # Only the summary and the logs come back from the smoke call.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "gpu-paper-cifar.json",
        "logs.tar.xz",
    ]


def test_gpu_runs_under_mps_start_and_stop_its_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in control program records how it is called: started as a daemon before the
    runs (which get its pipe folder), told to quit after; without one the runs go on alone."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    control = bin_dir / "nvidia-cuda-mps-control"
    control.write_text(
        f'#!/bin/sh\necho "$* pipe=$CUDA_MPS_PIPE_DIRECTORY input=$(cat -)" >> {calls}\n'
    )
    control.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(gpu_paper_cifar, "MPS_PROBE", [sys.executable, "-c", "pass"])
    data = write_fake_cifar10(tmp_path / "data", n_train=100, n_test=20)
    summary = gpu_paper_cifar.train_all(
        data,
        tmp_path / "runs",
        ("plain20",),
        budget_s=60,
        device="cpu",
        extra="--batch-size 25 --max-iters 1 --num-threads 1",
        mps=True,
    )
    assert summary["mps"] and summary["models"]["plain20"]["finished"]
    pipe = tmp_path / "runs" / "mps" / "pipe"  # absolute: a daemon may change its directory
    # A daemon left by an earlier call is told to quit, then one starts; it quits at the end.
    assert calls.read_text().splitlines() == [
        f" pipe={pipe} input=quit",
        f"-d pipe={pipe} input=",
        f" pipe={pipe} input=quit",
    ]
    # A client that cannot reach the server: no MPS (the daemon told to quit), runs go alone.
    monkeypatch.setattr(gpu_paper_cifar, "MPS_PROBE", [sys.executable, "-c", "raise SystemExit(1)"])
    assert gpu_paper_cifar.start_mps(tmp_path / "probe") is None
    assert calls.read_text().splitlines()[-1].endswith("input=quit")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no control program: no MPS, still runs
    assert gpu_paper_cifar.start_mps(tmp_path / "again") is None


def test_gpu_step_wait_runs_both_steps_and_reports_the_ratio(tmp_path: Path) -> None:
    from benchmarks import gpu_step_wait

    argv = ["--out", str(tmp_path), "--device", "cpu", "--no-compile", "--images", "200"]
    assert gpu_step_wait.main([*argv, "--epochs", "2", "--rounds", "1"]) == 0
    summary = json.loads((tmp_path / "gpu-step-wait.json").read_text())
    waits, defers = summary["runs"]["waits"][0], summary["runs"]["defers"][0]
    assert waits["waits"] and not defers["waits"]
    assert not waits["data_on_device"] and not defers["data_on_device"]  # the CPU: nowhere else
    ips = summary["images_per_second"]
    assert ips["waits"] > 0 and summary["speedup"] == round(ips["defers"] / ips["waits"], 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-step-wait.json"]  # no leftovers


def test_train_memory_measures_both_variants_in_fresh_processes(tmp_path: Path) -> None:
    from benchmarks import train_memory

    argv = ["--models", "resnet56", "--batch-size", "32", "--steps", "1", "--rounds", "1"]
    assert train_memory.main([*argv, "--threads", "1", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "train_memory.json").read_text())
    s = report["models"]["resnet56"]
    plain, ckpt = s["plain"], s["checkpointed"]
    # Keeping only each block's input: clearly less memory for a step, paid for in time.
    # Autograd keeps about a quarter (deterministic); the peak shrinks less, but shrinks.
    assert 0 < ckpt["saved_for_backward_mib"] < plain["saved_for_backward_mib"] / 3
    assert 0 < ckpt["step_memory_mib"] < plain["step_memory_mib"]
    assert s["memory_ratio"] == pytest.approx(plain["step_memory_mib"] / ckpt["step_memory_mib"])
    assert ckpt["step_seconds"] > 0 and plain["step_seconds"] > 0
    assert "| resnet56 |" in (tmp_path / "train_memory.md").read_text()


def test_distill_benchmark_trains_both_runs_and_resumes_them(tmp_path: Path) -> None:
    data = write_fake_cifar10(tmp_path / "cifar", n_train=500, n_test=50)
    out = tmp_path / "distill.json"
    argv = ["--data-dir", str(data), "--work", str(tmp_path / "runs"), "--train-subset", "256"]
    argv += ["--epochs", "2", "--ema-decay", "0", "--threads", "1", "--out", str(out)]
    assert distill_cifar.main(argv) == 0
    first = json.loads(out.read_text())
    assert set(first["runs"]) == {"labels", "distilled"}
    assert first["teacher"]["name"] == "resnet56.paper_cifar10"
    assert first["recipe"]["warmup_iters"] == 0 and first["train_images"] == 256  # 11% of 4
    for run in first["runs"].values():
        assert run["steps"] == 4 and 0 <= run["test_top1"] <= 100
    config = json.loads((tmp_path / "runs" / "distilled" / "model" / "config.json").read_text())
    assert config["provenance"]["teacher"]["name"] == "resnet56.paper_cifar10"
    assert (
        "teacher"
        not in json.loads((tmp_path / "runs" / "labels" / "model" / "config.json").read_text())[
            "provenance"
        ]
    )
    # again: the finished runs resume (nothing trains) and give the same answers
    assert distill_cifar.main(argv) == 0
    again = json.loads(out.read_text())
    for name, run in again["runs"].items():
        assert run["test_top1"] == first["runs"][name]["test_top1"]
        assert run["train_seconds"] == first["runs"][name]["train_seconds"]
    assert "| distilled |" in out.with_suffix(".md").read_text()


def test_fixres_benchmark_trains_on_small_crops_and_tests_each_side(tmp_path: Path) -> None:
    data = write_fake_cifar10(tmp_path / "cifar", n_train=300, n_test=50)
    out = tmp_path / "fixres.json"
    argv = ["--data-dir", str(data), "--work", str(tmp_path / "runs"), "--train-subset", "200"]
    argv += ["--train-side", "16", "--test-sides", "16,24", "--epochs", "1", "--threads", "1"]
    assert fixres_cifar.main([*argv, "--out", str(out)]) == 0
    first = json.loads(out.read_text())
    assert set(first["test_top1_by_side"]) == {"16", "24"} and first["train_images"] == 200
    assert all(0 <= v <= 100 for v in first["test_top1_by_side"].values())
    assert first["recipe"]["augment"] == "imagenet" and first["recipe"]["train_image_size"] == 16
    pngs = list((tmp_path / "runs").glob("train-png-200-seed0/*/*.png"))
    assert len(pngs) == 200  # the subset as files, one sub-folder per class
    # again: the folder is kept, the finished run resumes (nothing trains): same answers
    assert fixres_cifar.main([*argv, "--out", str(out)]) == 0
    again = json.loads(out.read_text())
    assert again["test_top1_by_side"] == first["test_top1_by_side"]
    assert again["train_seconds"] == first["train_seconds"]
    assert "16x16 (training crops')" in out.with_suffix(".md").read_text()
