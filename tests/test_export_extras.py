"""TensorFlow Lite and Core ML export, where their converters are installed.

The default test environment (``make test``) does not install them (litert-torch pulls in JAX
and LiteRT, and pins typing-extensions/pydantic below what the rest of the stack uses); there,
only the clear-error tests run. ``make test-extras`` builds ``.venv-extras`` with
``resnetkit[tflite,coreml]`` and runs this whole file.
"""

import importlib.util
import platform
from pathlib import Path

import pytest

from resnetkit.export.exporter import export_model
from resnetkit.models.loading import load_model

HAS_LITERT = importlib.util.find_spec("litert_torch") is not None
HAS_COREML = importlib.util.find_spec("coremltools") is not None


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.skipif(not HAS_LITERT, reason="needs resnetkit[tflite] (make test-extras)")
def test_tflite_export_runs_in_litert_and_matches_eager(tmp_path: Path) -> None:
    report = export_model(load_model("resnet20.cifar10"), "tflite", tmp_path / "r20.tflite")
    assert report.ran and report.passed
    assert report.max_abs_diff <= 1e-4 and report.input_shape == (1, 3, 32, 32)
    assert report.folded_batchnorms == 19 and report.size_bytes > 1_000_000


@pytest.mark.skipif(not HAS_COREML, reason="needs resnetkit[coreml] (make test-extras)")
def test_coreml_export_is_converted_and_read_back(tmp_path: Path) -> None:
    out = tmp_path / "r20.mlpackage"
    report = export_model(load_model("resnet20.cifar10"), "coreml", out)
    assert out.is_dir() and report.size_bytes > 500_000
    if platform.system() == "Darwin":  # Apple's runtime: verified like every other format
        assert report.ran and report.passed
    else:
        assert not report.ran and not report.passed
        assert "only on macOS" in " ".join(report.notes)
        assert "NOT VERIFIED" in report.summary()
    with pytest.raises(ValueError, match=r"\.mlpackage"):
        export_model(load_model("resnet20.cifar10"), "coreml", tmp_path / "r20.mlmodel")


def test_fixed_batch_formats_refuse_dynamic_batch(tmp_path: Path) -> None:
    model = load_model("resnet20.cifar10")
    for fmt, name in (("tflite", "m.tflite"), ("coreml", "m.mlpackage")):
        with pytest.raises(ValueError, match="fixed batch size"):
            export_model(model, fmt, tmp_path / name, dynamic_batch=True)  # type: ignore[arg-type]


@pytest.mark.skipif(HAS_LITERT, reason="checks the message shown when litert-torch is missing")
def test_missing_tflite_converter_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(ImportError, match=r"pip install 'resnetkit\[tflite\]'"):
        export_model(load_model("resnet20.cifar10"), "tflite", tmp_path / "m.tflite")


@pytest.mark.skipif(HAS_COREML, reason="checks the message shown when coremltools is missing")
def test_missing_coreml_converter_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(ImportError, match=r"pip install 'resnetkit\[coreml\]'"):
        export_model(load_model("resnet20.cifar10"), "coreml", tmp_path / "m.mlpackage")
