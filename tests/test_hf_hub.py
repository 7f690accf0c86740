"""``hf-hub:`` names: timm's and transformers' ResNets from the Hugging Face Hub, found in
Hugging Face's cache or downloaded from a local stand-in for the Hub (nothing goes online):
pinned to one commit, verified against the digests the Hub announces."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

import resnetkit
from resnetkit.download import ChecksumError
from resnetkit.interop.writers import to_huggingface, to_timm
from resnetkit.models import hf_hub
from resnetkit.models.hf_hub import HubFileNotFoundError, parse_name
from resnetkit.models.loading import load_model
from tests.conftest import dead_url
from tests.nets import randomize

pytestmark = pytest.mark.usefixtures("one_thread")

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TIMM_REPO = "timm/resnet18.a1_in1k"
TIMM_CONFIG = {
    "architecture": "resnet18",
    "num_classes": 1000,
    "num_features": 512,
    "pretrained_cfg": {
        "tag": "a1_in1k",
        "input_size": [3, 224, 224],
        "test_input_size": [3, 288, 288],
        "interpolation": "bicubic",
        "crop_pct": 0.95,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "num_classes": 1000,
        "classifier": "fc",
    },
}


class FakeHub:
    """What the Hub's ``/{repo}/resolve/{revision}/{file}`` answers: small files with their
    git blob sha1 as ETag, weights (LFS) as a redirect carrying X-Linked-Etag (sha256)."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.tamper: set[str] = set()  # files served with other bytes than announced
        self.fail: set[str] = set()  # files answered with a 503
        self.no_digest: set[str] = set()  # files announced without any digest
        self.no_commit = False  # answer without X-Repo-Commit
        self.resolve_cache = False  # small files: a relative 307 first, as the Hub does now
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Authorization

    def add(self, repo: str, files: dict[str, bytes]) -> None:
        self.repos[repo] = files

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                hub.requests.append((self.command, self.path, self.headers.get("Authorization")))
                if self.path.startswith("/api/resolve-cache/"):  # the Hub's own cache
                    self.path = self.path.removeprefix("/api/resolve-cache")
                elif hub.resolve_cache and "/resolve/" in self.path and "config" in self.path:
                    location = "/api/resolve-cache" + self.path
                    return self._send(307, b"", {"Location": location}, body)
                if self.path.startswith("/cdn/"):
                    repo, _, filename = self.path[5:].rpartition("/")
                    return self._send(200, hub.served(repo, filename), {}, body)
                head, sep, tail = self.path.lstrip("/").partition("/resolve/")
                revision, _, filename = tail.partition("/")
                files = hub.repos.get(head)
                if not sep or files is None or filename not in files:
                    return self._send(404, b"not found", {}, body)
                if urllib.parse.unquote(revision) not in ("main", COMMIT, "refs/pr/1"):
                    return self._send(404, b"no such revision", {}, body)
                if filename in hub.fail:
                    return self._send(503, b"try later", {}, body)
                data = files[filename]
                headers = {} if hub.no_commit else {"X-Repo-Commit": COMMIT}
                if filename.endswith((".safetensors", ".bin")):
                    headers["X-Linked-Etag"] = f'"{hashlib.sha256(data).hexdigest()}"'
                    # the CDN: another host name for the same server
                    port = self.server.server_address[1]
                    headers["Location"] = f"http://localhost:{port}/cdn/{head}/{filename}"
                    return self._send(302, b"", headers, body)
                blob = hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()
                if filename not in hub.no_digest:
                    headers["ETag"] = f'"{blob}"'
                return self._send(200, hub.served(head, filename), headers, body)

            def _send(self, code: int, data: bytes, headers: dict[str, str], body: bool) -> None:
                self.send_response(code)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

        return Handler

    def served(self, repo: str, filename: str) -> bytes:
        data = self.repos[repo][filename]
        return data[:-1] + b"\0" if filename in self.tamper else data


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    fake = FakeHub()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{httpd.server_address[1]}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("RESNETKIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def resnet18() -> resnetkit.ResNet:
    torch.manual_seed(0)
    return resnetkit.create_model("resnet18").eval()


def _safetensors(state: dict[str, torch.Tensor], tmp_path: Path) -> bytes:
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path.read_bytes()


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    own = b.state_dict()
    for key, value in a.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, own[key]), key


def test_names_parse_as_timm_writes_them() -> None:
    assert parse_name("hf-hub:timm/resnet50.a1_in1k") == ("timm/resnet50.a1_in1k", "main")
    assert parse_name("hf_hub:microsoft/resnet-50@v1.0") == ("microsoft/resnet-50", "v1.0")
    assert parse_name("hf-hub:a/b@refs/pr/1") == ("a/b", "refs/pr/1")
    bad_names = ("hf-hub:resnet50", "hf-hub:../x/y", "hf-hub:a/b/c", "hf-hub:timm/x@bad rev")
    bad_names += ("hf-hub:a/b@/tmp/x", "hf-hub:a/b@../../x", "hf-hub:a/b@refs//x", "hf-hub:a/b@.")
    for bad in bad_names:
        with pytest.raises(ValueError, match="expected hf-hub:ORG/NAME"):
            parse_name(bad)


def test_timm_repository_downloads_pinned_verified_then_works_offline(
    hub: FakeHub, resnet18: resnetkit.ResNet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = _safetensors(to_timm(resnet18), tmp_path)
    hub.add(
        TIMM_REPO, {"config.json": json.dumps(TIMM_CONFIG).encode(), "model.safetensors": weights}
    )
    monkeypatch.setenv("HF_TOKEN", "secret")
    model = resnetkit.create_model(f"hf-hub:{TIMM_REPO}", pretrained=True)
    _same_weights(model, resnet18)
    cfg = model.pretrained_cfg
    assert cfg["tag"] == f"hf-hub:{TIMM_REPO}" and cfg["interpolation"] == "bicubic"
    assert (cfg["input_size"], cfg["resize"], cfg["crop_pct"]) == (224, 235, 0.95)  # floor(224/.95)
    assert cfg["test_input_size"] == 288
    assert len(cfg["classes"]) == 1000 and cfg["classes"][0] == "tench"  # an in1k tag
    # The weights were fetched at the commit the config came from, with the token.
    gets = [path for method, path, _ in hub.requests if method == "GET"]
    assert f"/{TIMM_REPO}/resolve/{COMMIT}/model.safetensors" in gets
    # The token goes to the Hub, never to the host a redirect points at (its CDN).
    auth = {path.startswith("/cdn/"): a for _, path, a in hub.requests}
    assert auth == {False: "Bearer secret", True: None}
    folder = hf_hub.own_cache_dir() / "models--timm--resnet18.a1_in1k"
    assert (folder / "refs" / "main").read_text() == COMMIT
    assert (folder / "snapshots" / COMMIT / "model.safetensors").read_bytes() == weights
    # Offline now: from the cache, through load_model (what --model uses) and predict.
    monkeypatch.setenv("HF_ENDPOINT", dead_url())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = load_model(f"hf-hub:{TIMM_REPO}")
    assert not again.training and again.name == "resnet18"
    _same_weights(again, resnet18)
    cat = Path(str(resnetkit.__file__)).parent / "assets" / "cat.png"
    report = resnetkit.predict(f"hf-hub:{TIMM_REPO}", [cat], top_k=1)
    assert report.predictions[0]["top_k"][0]["class"] in cfg["classes"]
    # A new head on the hub weights, as for any pretrained tag.
    five = resnetkit.create_model(f"hf-hub:{TIMM_REPO}", pretrained=True, num_classes=5)
    assert five.fc.out_features == 5 and torch.equal(five.conv1.weight, resnet18.conv1.weight)
    assert five.pretrained_cfg["classes"] == [] and five.pretrained_cfg["adapted"] == [
        "num_classes=5"
    ]
    # pretrained=False: the architecture the config describes, fresh weights.
    fresh = resnetkit.create_model(f"hf-hub:{TIMM_REPO}")
    assert fresh.fc.out_features == 1000 and not torch.equal(
        fresh.conv1.weight, resnet18.conv1.weight
    )


def test_huggingface_cache_is_read_without_any_network(
    resnet18: resnetkit.ResNet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What timm or huggingface-cli downloaded (blobs linked from a snapshot) is used as is."""
    cache = tmp_path / "hf-cache"
    folder = cache / "models--timm--resnet18.a1_in1k"
    (folder / "blobs").mkdir(parents=True)
    snapshot = folder / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(COMMIT)
    blobs = {
        "config.json": json.dumps(TIMM_CONFIG).encode(),
        "model.safetensors": _safetensors(to_timm(resnet18), tmp_path),
    }
    for name, data in blobs.items():
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(blob)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_ENDPOINT", dead_url())
    monkeypatch.setenv("RESNETKIT_HOME", str(tmp_path / "home"))
    model = resnetkit.create_model(f"hf-hub:{TIMM_REPO}@{COMMIT}", pretrained=True)
    _same_weights(model, resnet18)
    assert not (tmp_path / "home").exists()  # nothing downloaded, nothing copied


def test_transformers_repository(hub: FakeHub, resnet18: resnetkit.ResNet, tmp_path: Path) -> None:
    """A transformers ResNet (as `convert --to huggingface` writes one, with its processor):
    the architecture from depths/layer_type, id2label, the processor's preprocessing."""
    model = resnetkit.create_model("resnet18", num_classes=3).eval()
    model.pretrained_cfg = {"input_size": 160, "resize": 182, "mean": [0.5] * 3, "std": [0.25] * 3}
    out = to_huggingface(model, tmp_path / "hf", classes=["ant", "bee", "cow"])
    hub.add("someone/resnet-18", {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()})
    loaded = resnetkit.create_model("hf-hub:someone/resnet-18", pretrained=True)
    _same_weights(loaded, model)
    cfg = loaded.pretrained_cfg
    assert cfg["classes"] == ["ant", "bee", "cow"]
    assert (cfg["input_size"], cfg["resize"], cfg["mean"]) == (160, 182, [0.5] * 3)


def test_convert_reads_hf_hub_names(
    hub: FakeHub, resnet18: resnetkit.ResNet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`convert hf-hub:ORG/NAME` as --model reads it (timm's and transformers' repositories,
    their preprocessing and classes kept): it said 'no such checkpoint file or directory'."""
    from resnetkit.cli.main import main

    hub.add(
        TIMM_REPO,
        {
            "config.json": json.dumps(TIMM_CONFIG).encode(),
            "model.safetensors": _safetensors(to_timm(resnet18), tmp_path),
        },
    )
    out = tmp_path / "r18"
    assert main(["convert", f"hf-hub:{TIMM_REPO}", "--arch", "resnet18", "--out", str(out)]) == 0
    assert f"hf-hub:{TIMM_REPO} (timm format) loaded into resnet18" in capsys.readouterr().out
    converted = load_model(out)
    _same_weights(converted, resnet18)
    cfg = converted.pretrained_cfg
    assert cfg["interpolation"] == "bicubic" and cfg["classes"][0] == "tench"
    other = str(tmp_path / "r34")
    assert main(["convert", f"hf-hub:{TIMM_REPO}", "--arch", "resnet34", "--out", other]) == 2
    assert "holds timm's resnet18, not resnet34" in capsys.readouterr().err

    three = resnetkit.create_model("resnet18", num_classes=3).eval()
    three.pretrained_cfg = {"input_size": 160, "resize": 182, "mean": [0.5] * 3, "std": [0.25] * 3}
    folder = to_huggingface(three, tmp_path / "hf", classes=["ant", "bee", "cow"])
    hub.add("someone/resnet-18", {p.name: p.read_bytes() for p in folder.iterdir()})
    report, written = resnetkit.interop.convert_checkpoint(
        "hf-hub:someone/resnet-18", "resnet18", tmp_path / "three", target="timm"
    )
    assert report.source_format == "huggingface"
    back = load_model(written)
    _same_weights(back, three)
    assert back.pretrained_cfg["classes"] == ["ant", "bee", "cow"]
    assert back.pretrained_cfg["input_size"] == 160


def test_what_cannot_be_loaded_is_explained(
    hub: FakeHub, resnet18: resnetkit.ResNet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = _safetensors(to_timm(resnet18), tmp_path)
    se = {**TIMM_CONFIG, "architecture": "seresnet50"}
    hub.add("timm/seresnet50.a1_in1k", {"config.json": json.dumps(se).encode()})
    with pytest.raises(
        ValueError, match="timm's 'seresnet50' has no resnetkit counterpart.*resnet50d"
    ):
        resnetkit.create_model("hf-hub:timm/seresnet50.a1_in1k", pretrained=True)
    with pytest.raises(HubFileNotFoundError, match="has no config.json"):
        resnetkit.create_model("hf-hub:timm/missing", pretrained=True)
    # Bytes that differ from the announced sha256: refused, nothing left behind.
    hub.add(
        TIMM_REPO, {"config.json": json.dumps(TIMM_CONFIG).encode(), "model.safetensors": weights}
    )
    hub.tamper.add("model.safetensors")
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        resnetkit.create_model(f"hf-hub:{TIMM_REPO}", pretrained=True)
    snapshot = hf_hub.own_cache_dir() / "models--timm--resnet18.a1_in1k" / "snapshots" / COMMIT
    assert not (snapshot / "model.safetensors").exists() and not list(snapshot.glob(".*part"))
    # So does a small file against its git blob hash.
    hub.tamper = {"config.json"}
    hub.add("timm/other", {"config.json": json.dumps(TIMM_CONFIG).encode()})
    with pytest.raises(ChecksumError, match="git blob"):
        resnetkit.create_model("hf-hub:timm/other")
    # Offline and not cached: where to put the files.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubFileNotFoundError, match="huggingface-cli download timm/nothing"):
        load_model("hf-hub:timm/nothing")


def test_info_reads_only_the_config(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    from resnetkit.cli.main import main

    hub.add(TIMM_REPO, {"config.json": json.dumps(TIMM_CONFIG).encode(), "model.safetensors": b""})
    assert main(["info", f"hf-hub:{TIMM_REPO}"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("resnet18: 18 layers") and "11,689,512" in text
    assert f"file            {TIMM_REPO}@{COMMIT}" in text
    assert "resize 235 (bicubic), crop 224x224" in text and "tench" in text
    assert not any(path.endswith("model.safetensors") for _, path, _ in hub.requests)


def test_a_pull_request_revision_and_a_half_cached_repository(
    hub: FakeHub, resnet18: resnetkit.ResNet, tmp_path: Path
) -> None:
    """``@refs/pr/1`` is one URL segment and a nested ref; a repository whose config is
    cached fetches its weights at the cached config's commit, not at what main is now."""
    weights = _safetensors(to_timm(resnet18), tmp_path)
    hub.add(
        TIMM_REPO, {"config.json": json.dumps(TIMM_CONFIG).encode(), "model.safetensors": weights}
    )
    model = resnetkit.create_model(f"hf-hub:{TIMM_REPO}@refs/pr/1", pretrained=True)
    _same_weights(model, resnet18)
    assert f"/{TIMM_REPO}/resolve/refs%2Fpr%2F1/config.json" in [p for _, p, _ in hub.requests]
    folder = hf_hub.own_cache_dir() / "models--timm--resnet18.a1_in1k"
    assert (folder / "refs" / "refs" / "pr" / "1").read_text() == COMMIT
    (folder / "snapshots" / COMMIT / "model.safetensors").unlink()
    hub.requests.clear()
    resnetkit.create_model(f"hf-hub:{TIMM_REPO}@refs/pr/1", pretrained=True)
    assert [p for m, p, _ in hub.requests if m == "HEAD"] == [
        f"/{TIMM_REPO}/resolve/{COMMIT}/model.safetensors"
    ]


def test_an_unreachable_hub_is_not_taken_for_a_missing_file(
    hub: FakeHub, resnet18: resnetkit.ResNet, tmp_path: Path
) -> None:
    model = resnetkit.create_model("resnet18", num_classes=3).eval()
    out = to_huggingface(model, tmp_path / "hf", classes=["a", "b", "c"])
    hub.add("someone/r18", {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()})
    hub.fail = {"preprocessor_config.json"}  # a 503: not "the repository has none"
    with pytest.raises(HubFileNotFoundError, match="HTTP 503"):
        resnetkit.create_model("hf-hub:someone/r18", pretrained=True)
    hub.fail = set()
    hub.no_digest = {"preprocessor_config.json"}
    with pytest.raises(ChecksumError, match="announces no digest"):
        resnetkit.create_model("hf-hub:someone/r18", pretrained=True)


@pytest.mark.parametrize(
    ("arch", "options"),
    [("resnet18", {}), ("resnet50d", {"output_stride": 8}), ("resnet34", {"in_chans": 1})],
)
def test_a_timm_folder_is_written_for_timm_and_read_back(
    tmp_path: Path, arch: str, options: dict[str, int]
) -> None:
    """`convert --to timm DIR` writes timm's Hub layout: timm builds the model from the folder
    alone (``local-dir:``, dilation and input channels included), and resnetkit reads it
    back (``load_model(DIR)``, and ``convert`` from it), as it reads a transformers folder."""
    import timm

    from resnetkit.cli.main import main
    from resnetkit.interop.timm_folder import to_timm_folder
    from resnetkit.models.model_dir import save_model_dir

    model = randomize(resnetkit.create_model(arch, num_classes=3, **options))
    pre = {"input_size": 64, "resize": 93, "interpolation": "bicubic"}
    pre |= {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    source = save_model_dir(
        model, tmp_path / "src", arch=arch, classes=["ant", "bee", "cow"], preprocessing=pre
    )
    out = tmp_path / f"{arch}.resnetkit"  # dotted as timm's names: still a folder
    argv = ["convert", str(source), "--arch", arch, "--to", "timm", "--out", str(out)]
    assert main(argv) == 0 and (out / "config.json").is_file()
    chans = options.get("in_chans", 3)
    x = torch.randn(2, chans, 64, 64)
    theirs = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), model(x), atol=1e-4, rtol=1e-4)
    data_cfg = timm.data.resolve_model_data_config(theirs)
    assert data_cfg["interpolation"] == "bicubic" and tuple(data_cfg["input_size"]) == (
        chans,
        64,
        64,
    )
    ours = load_model(out)
    _same_weights(ours, model)
    assert ours.config.output_stride == options.get("output_stride", 32)
    cfg = ours.pretrained_cfg
    assert cfg["classes"] == ["ant", "bee", "cow"] and cfg["interpolation"] == "bicubic"
    assert (cfg["input_size"], cfg["resize"]) == (64, 93)  # the resize survives exactly
    back = tmp_path / "back"
    assert main(["convert", str(out), "--arch", arch, "--out", str(back)]) == 0
    rebuilt = load_model(back)
    _same_weights(rebuilt, model)
    assert rebuilt.config.output_stride == options.get("output_stride", 32)
    with pytest.raises(FileExistsError, match="is not empty"):
        to_timm_folder(model, out)  # nothing is overwritten
    with pytest.raises(ValueError, match="timm has no 'resnet20'"):
        to_timm_folder(resnetkit.create_model("resnet20"), tmp_path / "x")


def test_convert_names_the_architecture_a_timm_folder_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """resnet50d's weights load into resnet50c without a shape error and compute another
    function: the folder's architecture decides."""
    from resnetkit.cli.main import main
    from resnetkit.interop.timm_folder import is_folder_target, to_timm_folder

    folder = to_timm_folder(resnetkit.create_model("resnet50d"), tmp_path / "d")
    argv = ["convert", str(folder), "--arch", "resnet50c", "--out", str(tmp_path / "c")]
    assert main(argv) == 2
    assert "holds timm's resnet50d, not resnet50c: build it as resnet50d" in capsys.readouterr().err
    assert is_folder_target(tmp_path / "resnet50.a1_in1k")
    assert not is_folder_target(tmp_path / "x.pth.tar") and not is_folder_target(tmp_path / "w.pth")
    with pytest.raises(ValueError, match=r"\.onnx is not a timm format"):
        is_folder_target(tmp_path / "model.onnx")


def test_pretrained_options_that_change_nothing_keep_the_measurements() -> None:
    same = resnetkit.create_model("resnet20.cifar10", pretrained=True, output_stride=8)
    assert "metrics" in same.pretrained_cfg and "adapted" not in same.pretrained_cfg


def test_grey_hub_weights_refuse_another_input_width(hub: FakeHub, tmp_path: Path) -> None:
    model = resnetkit.create_model("resnet18", in_chans=1, num_classes=3)
    grey = {**TIMM_CONFIG, "num_classes": 3, "model_args": {"in_chans": 1, "num_classes": 3}}
    hub.add("a/grey", {"config.json": json.dumps(grey).encode(),
                       "model.safetensors": _safetensors(to_timm(model), tmp_path)})  # fmt: skip
    loaded = resnetkit.create_model("hf-hub:a/grey", pretrained=True)
    assert loaded.config.in_chans == 1
    _same_weights(loaded, model)
    with pytest.raises(ValueError, match="take 1-channel inputs; only RGB weights adapt"):
        resnetkit.create_model("hf-hub:a/grey", pretrained=True, in_chans=3)


def test_a_server_that_names_no_commit_is_still_cached(
    hub: FakeHub, resnet18: resnetkit.ResNet, tmp_path: Path
) -> None:
    weights = _safetensors(to_timm(resnet18), tmp_path)
    hub.add(
        TIMM_REPO, {"config.json": json.dumps(TIMM_CONFIG).encode(), "model.safetensors": weights}
    )
    hub.no_commit = True
    resnetkit.create_model(f"hf-hub:{TIMM_REPO}", pretrained=True)
    hub.requests.clear()
    again = resnetkit.create_model(f"hf-hub:{TIMM_REPO}", pretrained=True)
    _same_weights(again, resnet18)
    assert hub.requests == []  # both files from resnetkit's cache


def test_a_transformers_folder_loads_directly(tmp_path: Path) -> None:
    model = randomize(resnetkit.create_model("resnet18", num_classes=3))
    hf_dir = to_huggingface(model, tmp_path / "hf", classes=["ant", "bee", "cow"])
    loaded = load_model(hf_dir)
    _same_weights(loaded, model)
    assert loaded.pretrained_cfg["classes"] == ["ant", "bee", "cow"]


def test_small_files_behind_the_hubs_resolve_cache_redirect(
    hub: FakeHub, resnet18: resnetkit.ResNet, tmp_path: Path
) -> None:
    """The Hub answers a small file with a relative 307 to its resolve cache; the digest is
    on the final answer (huggingface_hub follows such redirects too)."""
    weights = _safetensors(to_timm(resnet18), tmp_path)
    hub.add(
        TIMM_REPO, {"config.json": json.dumps(TIMM_CONFIG).encode(), "model.safetensors": weights}
    )
    hub.resolve_cache = True
    model = resnetkit.create_model(f"hf-hub:{TIMM_REPO}", pretrained=True)
    _same_weights(model, resnet18)
    heads = [p for m, p, _ in hub.requests if m == "HEAD"]
    assert f"/api/resolve-cache/{TIMM_REPO}/resolve/main/config.json" in heads


@pytest.mark.parametrize(
    ("prep", "resize"),
    [
        ({"input_size": 32}, 32),  # below 128: the picture resized whole (crop_pct 1.0)
        ({"input_size": 64, "crop_pct": 0.8}, 80),
        ({"input_size": 160}, 183),  # 128 and up: resized to 1/0.875, centre-cropped
        ({"input_size": 64, "crop": 48, "resize": 60}, 60),
    ],
    ids=["small", "crop_pct", "large", "crop"],
)
def test_a_timm_folder_prepares_pictures_as_resnetkit_does(
    tmp_path: Path, prep: dict[str, Any], resize: int
) -> None:
    """The timm folder said crop_pct = size / round(size / 0.875) whatever the model's own
    preprocessing: a 32-pixel CIFAR model was resized to 36 and cropped by timm, and by
    resnetkit reading the folder back, while resnetkit itself resizes it whole."""
    import numpy as np
    import timm
    from PIL import Image

    from resnetkit.interop.timm_folder import to_timm_folder
    from resnetkit.predict import Preprocessing

    model = resnetkit.create_model("resnet18", num_classes=2)
    model.pretrained_cfg = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], **prep}
    ours = Preprocessing.of(model)
    assert ours.resize == resize
    folder = to_timm_folder(model, tmp_path / "timm")
    theirs = timm.create_model(f"local-dir:{folder}", pretrained=False)
    data_cfg = timm.data.resolve_model_data_config(theirs)
    pixels = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    picture = Image.fromarray(pixels).resize((230, 170), Image.BILINEAR)  # not square
    timm_x = timm.data.create_transform(**data_cfg)(picture)
    our_x = ours.transform()(picture)
    assert timm_x.shape == our_x.shape == (3, ours.image_size, ours.image_size)
    assert float((timm_x - our_x).abs().max()) < 1e-5  # the same pixels, resampled alike
    back = Preprocessing.of(load_model(folder))  # and resnetkit reads the folder back alike
    assert (back.image_size, back.resize, back.mean, back.std) == (
        ours.image_size,
        ours.resize,
        ours.mean,
        ours.std,
    )


def test_a_timm_config_that_contradicts_itself_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "r18"
    folder.mkdir()
    config = {**TIMM_CONFIG, "num_classes": 3, "label_names": ["ant", "bee"]}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"label_names has 2 names for a model with 3 outputs"):
        hf_hub.get_folder_weights(folder)
    bad_cfg = {**TIMM_CONFIG["pretrained_cfg"], "interpolation": "cubicc"}  # type: ignore[dict-item]
    (folder / "config.json").write_text(json.dumps({**TIMM_CONFIG, "pretrained_cfg": bad_cfg}))
    with pytest.raises(ValueError, match=r"interpolation 'cubicc' .* one of nearest, "):
        hf_hub.get_folder_weights(folder)
    bad_cfg = {**TIMM_CONFIG["pretrained_cfg"], "std": [0.2, float("nan"), 0.2]}  # type: ignore[dict-item]
    (folder / "config.json").write_text(json.dumps({**TIMM_CONFIG, "pretrained_cfg": bad_cfg}))
    with pytest.raises(ValueError, match=r"pretrained_cfg\.std must be positive finite numbers"):
        hf_hub.get_folder_weights(folder)


def test_a_grayscale_transformers_folder_loads_as_grayscale(tmp_path: Path) -> None:
    """config.json's num_channels was ignored: a 1-channel model's folder built an RGB
    network, whose first conv did not fit the weights."""
    model = randomize(resnetkit.create_model("resnet18", num_classes=3, in_chans=1))
    model.pretrained_cfg = {"input_size": 64, "mean": [0.5], "std": [0.25]}
    folder = to_huggingface(model, tmp_path / "hf", classes=["ant", "bee", "cow"])
    assert json.loads((folder / "config.json").read_text())["num_channels"] == 1
    loaded = load_model(folder)
    assert loaded.config.in_chans == 1
    _same_weights(loaded, model)
    cfg = loaded.pretrained_cfg
    assert (cfg["input_size"], cfg["mean"], cfg["std"]) == (64, [0.5], [0.25])
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_channels": "1"}))
    with pytest.raises(ValueError, match="num_channels must be a positive whole number"):
        load_model(folder)
