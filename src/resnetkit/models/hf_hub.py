"""Models on the Hugging Face Hub by name, as timm names them: ``hf-hub:timm/resnet50.a1_in1k``.

``create_model("hf-hub:ORG/NAME[@REVISION]", pretrained=True)`` (and ``load_model``, and
``--model`` on the command line) reads a repository's ``config.json`` and weights and builds
the resnetkit model they describe:

* timm's repositories (``timm/resnet50.a1_in1k``: ``config.json`` with ``architecture`` and
  ``pretrained_cfg``): the architecture of that name, with timm's preprocessing (input size,
  ``crop_pct``, interpolation, mean and std) and class names (the repository's
  ``label_names``, else ImageNet-1k's for a 1000-class ImageNet tag).
* transformers' ResNets (``microsoft/resnet-50``: ``model_type: resnet``): the depth and
  block its ``depths``/``layer_type`` give, the stride placement it declares, ``id2label``,
  and the preprocessing of ``preprocessor_config.json``.

Files are looked for in Hugging Face's own cache first (``$HF_HUB_CACHE``, else
``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``: what ``huggingface_hub`` and timm
downloaded), then in resnetkit's (``$RESNETKIT_HOME/huggingface``), and only then downloaded
from ``$HF_ENDPOINT`` (default ``https://huggingface.co``; ``$HF_TOKEN`` for gated
repositories) unless ``HF_HUB_OFFLINE`` is set. A download is pinned to the commit the first
file came from, verified against the digest the Hub announces (sha256 for weights, the git
blob hash for small files) and written atomically; weights are read as safetensors, or with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlparse

from torch import nn

from resnetkit.download import ChecksumError, fetch
from resnetkit.models.model_dir import finite_numbers, interpolation_problem

PREFIXES = ("hf-hub:", "hf_hub:")
#: PIL's resampling filters as transformers' image processors number them (``resample``):
#: what a ``preprocessor_config.json`` is written with and read back as.
PIL_RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}
DEFAULT_ENDPOINT = "https://huggingface.co"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
#: transformers' ``depths`` and ``layer_type`` of each torchvision-shaped ResNet.
_HF_DEPTHS: dict[tuple[str, tuple[int, ...]], str] = {
    ("basic", (2, 2, 2, 2)): "resnet18",
    ("basic", (3, 4, 6, 3)): "resnet34",
    ("bottleneck", (3, 4, 6, 3)): "resnet50",
    ("bottleneck", (3, 4, 23, 3)): "resnet101",
    ("bottleneck", (3, 8, 36, 3)): "resnet152",
}


class HubFileNotFoundError(FileNotFoundError):
    """A repository file that is neither cached nor downloadable (offline, not there, or the
    Hub unreachable)."""


class HubFileMissingError(HubFileNotFoundError):
    """The repository has no such file (404), or it is not cached and HF_HUB_OFFLINE is set:
    an optional file may be left out; other failures may not."""


def is_hf_hub_name(name: str) -> bool:
    return name.startswith(PREFIXES)


def parse_name(name: str) -> tuple[str, str]:
    """``hf-hub:ORG/NAME[@REVISION]`` -> ``(repo, revision)`` (revision ``main`` by default).

    Raises:
        ValueError: not an ``ORG/NAME`` repository id.
    """
    rest = name.split(":", 1)[1] if is_hf_hub_name(name) else name
    repo, _, revision = rest.partition("@")
    segments = revision.split("/")
    safe_revision = not revision or (
        re.match(r"^[\w./-]+$", revision) is not None
        and all(seg not in ("", ".", "..") for seg in segments)
    )
    if not _REPO.match(repo) or ".." in repo or not safe_revision:
        raise ValueError(
            f"{name!r}: expected hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION, e.g. "
            "hf-hub:timm/resnet50.a1_in1k"
        )
    return repo, revision or "main"


# --- finding and downloading files ------------------------------------------------------------


def hf_cache_dir() -> Path:
    """Hugging Face's cache, as ``huggingface_hub`` resolves it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(home).expanduser() / "hub"


def own_cache_dir() -> Path:
    """resnetkit's copy of what it downloaded, in the same layout as Hugging Face's cache."""
    home = os.environ.get("RESNETKIT_HOME") or Path.home() / ".cache" / "resnetkit"
    return Path(home).expanduser() / "huggingface"


def _repo_folder(root: Path, repo: str) -> Path:
    return root / ("models--" + repo.replace("/", "--"))


def _cached(
    root: Path, repo: str, revision: str, filename: str, *, plain: bool = False
) -> tuple[Path, str] | None:
    """``(file, commit)`` from a cache in Hugging Face's layout (``refs/REVISION`` holds the
    commit, ``snapshots/COMMIT/FILE`` the file), or None."""
    folder = _repo_folder(root, repo)
    commit = revision
    if not _COMMIT.match(revision):
        ref = folder / "refs" / revision  # a checked revision: no "..", not absolute
        if not ref.is_file():
            if not plain:
                return None
            # resnetkit's own download from a server that named no commit: kept by revision
            path = folder / "snapshots" / revision / filename
            return (path, "") if path.is_file() else None
        commit = ref.read_text().strip()
        if not _COMMIT.match(commit):  # not a ref file Hugging Face's tools wrote
            return None
    path = folder / "snapshots" / commit / filename
    return (path, commit) if path.is_file() else None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 302 itself carries the digest; urlopen raises it as an HTTPError


def _headers() -> dict[str, str]:
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _announced(url: str, timeout: float) -> tuple[str, str]:
    """``(commit, digest)`` the Hub announces for a file: ``X-Linked-Etag`` (sha256 of an LFS
    file) or ``ETag`` (git blob sha1 of a small one), from a HEAD request that follows
    redirects within the Hub (its resolve cache, as huggingface_hub does) but not to another
    host (the CDN of an LFS file: the redirect itself carries the digest)."""
    opener = urllib.request.build_opener(_NoRedirect)
    for _ in range(5):
        request = urllib.request.Request(url, method="HEAD", headers=_headers())
        try:
            response = opener.open(request, timeout=timeout)
            headers = response.headers
            response.close()
            break
        except urllib.error.HTTPError as err:
            if err.code not in (301, 302, 303, 307, 308):
                raise
            headers = err.headers
            location = headers.get("Location") or ""
            # an LFS file's answer (its digest) or a redirect to another host: stop here
            if headers.get("X-Linked-Etag") or urlparse(location).netloc:
                break
            url = urljoin(url, location)
    etag = (headers.get("X-Linked-Etag") or headers.get("ETag") or "").strip()
    etag = etag.removeprefix("W/").strip('"').lower()
    return (headers.get("X-Repo-Commit") or "").strip(), etag


def _git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(f"blob {path.stat().st_size}\0".encode())
    digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass
class _Resolver:
    """Finds the files of one repository revision, downloading (pinned to one commit) when
    neither cache has them."""

    repo: str
    revision: str
    timeout: float = 60.0
    commit: str = ""

    def get(self, filename: str) -> Path:
        """The local file.

        Raises:
            HubFileNotFoundError: not cached, and offline or not in the repository.
            ChecksumError: the download does not match the announced digest.
        """
        for root in (hf_cache_dir(), own_cache_dir()):
            own = root == own_cache_dir()
            found = _cached(root, self.repo, self.commit or self.revision, filename, plain=own)
            if found is not None:
                path, commit = found
                self.commit = commit or self.commit  # later files come from the same commit
                return path
        if _offline():
            raise HubFileMissingError(
                f"{self.repo}@{self.revision}: {filename} is not in {hf_cache_dir()} or "
                f"{own_cache_dir()}, and HF_HUB_OFFLINE is set: download it where there is a "
                f"network (huggingface-cli download {self.repo} {filename}) and copy the "
                "cache over, or unset HF_HUB_OFFLINE"
            )
        return self._download(filename)

    def _download(self, filename: str) -> Path:
        endpoint = os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")
        url = _resolve_url(endpoint, self.repo, self.commit or self.revision, filename)
        try:
            commit, digest = _announced(url, self.timeout)
        except urllib.error.HTTPError as err:
            if err.code == 404:
                raise HubFileMissingError(
                    f"{self.repo}@{self.revision} has no {filename}"
                ) from None
            raise HubFileNotFoundError(
                f"could not reach {url}: HTTP {err.code} {err.reason}"
                + (
                    " (a gated or private repository: set HF_TOKEN)"
                    if err.code in (401, 403)
                    else ""
                )
            ) from None
        except (OSError, http.client.HTTPException) as err:
            raise HubFileNotFoundError(
                f"could not download {self.repo}/{filename} from {endpoint}: {err}. Without a "
                f"network, put the repository in Hugging Face's cache ({hf_cache_dir()}; "
                f"huggingface-cli download {self.repo} where there is one) and call again"
            ) from None
        if not self.commit:
            self.commit = commit if _COMMIT.match(commit) else ""
        pinned = self.commit or self.revision
        folder = _repo_folder(own_cache_dir(), self.repo)
        target = folder / "snapshots" / pinned / filename
        get_url = _resolve_url(endpoint, self.repo, pinned, filename)
        sha256 = digest if re.fullmatch(r"[0-9a-f]{64}", digest) else ""
        blob = digest if re.fullmatch(r"[0-9a-f]{40}", digest) else ""
        if not sha256 and not blob:
            raise ChecksumError(
                f"{url} announces no digest to check the download against (ETag "
                f"{digest!r}): refused. Fetch the repository with huggingface-cli into "
                f"{hf_cache_dir()} if you trust the source"
            )

        def check_blob(path: Path) -> None:  # before the file takes its name in the cache
            actual = _git_blob_sha1(path)
            if actual != blob:
                raise ChecksumError(
                    f"checksum mismatch for {get_url}: the Hub announces git blob {blob}, got "
                    f"{actual}; the download was deleted"
                )

        try:
            fetch(
                get_url,
                target,
                "sha256",
                sha256,
                self.timeout,
                headers=_headers(),
                verify=check_blob if blob else None,
            )
        except ChecksumError:
            raise
        except (OSError, http.client.HTTPException) as err:
            raise HubFileNotFoundError(f"could not download {get_url}: {err}") from None
        if pinned != self.revision:
            ref = folder / "refs" / self.revision  # refs/pr/1 nests, as in Hugging Face's
            ref.parent.mkdir(parents=True, exist_ok=True)
            ref.write_text(pinned)
        return target

    def describe(self) -> str:
        return f"{self.repo}@{self.revision}"

    def optional(self, filename: str) -> Path | None:
        """The file, or None when the repository has none (an unreachable Hub still raises)."""
        try:
            return self.get(filename)
        except HubFileMissingError:
            return None


def _resolve_url(endpoint: str, repo: str, revision: str, filename: str) -> str:
    """The Hub's download URL; a revision such as ``refs/pr/1`` is one path segment there."""
    return f"{endpoint}/{repo}/resolve/{quote(revision, safe='')}/{filename}"


# --- what the repository holds ------------------------------------------------------------------


@dataclass
class HfHubWeights:
    """One Hub repository's model: what to build and how to load it.

    Attributes:
        name: the ``hf-hub:`` name asked for, or the folder read.
        arch: the resnetkit architecture.
        num_classes: classes of the head.
        config_changes: architecture fields the repository fixes (stride placement, input
            channels, output stride).
        source_format: ``timm`` or ``huggingface`` (transformers).
        pretrained_cfg: the preprocessing and class names.
        resolver: where the repository's files are: the Hub (and its caches) or a folder.
    """

    name: str
    arch: str
    num_classes: int
    source_format: str
    pretrained_cfg: dict[str, Any]
    config_changes: dict[str, Any] = field(default_factory=dict)
    resolver: _Resolver | _LocalFolder | None = None

    def load_into(self, model: nn.Module) -> None:
        """Read the weights (explaining any mismatch), load them, set ``pretrained_cfg``."""
        from resnetkit.interop.convert import load_checkpoint
        from resnetkit.models.resnet import ResNet

        assert isinstance(model, ResNet) and self.resolver is not None
        weights = None
        for filename in WEIGHT_FILES:
            weights = self.resolver.optional(filename)
            if weights is not None:
                break
        if weights is None:
            raise HubFileNotFoundError(
                f"{self.resolver.describe()} holds neither {' nor '.join(WEIGHT_FILES)}"
            )
        source: Any = weights
        if self.source_format == "huggingface":
            source = weights.parent  # the snapshot: config.json and the weights together
            if not (source / "config.json").is_file():
                source = weights
        load_checkpoint(model, source, source_format=self.source_format)
        model.pretrained_cfg = dict(self.pretrained_cfg)  # type: ignore[assignment]


@dataclass
class _LocalFolder:
    """A repository's files in a local folder (a download, or ``convert --to timm DIR``)."""

    folder: Path

    def describe(self) -> str:
        return str(self.folder)

    def get(self, filename: str) -> Path:
        path = self.folder / filename
        if not path.is_file():
            raise HubFileMissingError(f"{self.folder} has no {filename}")
        return path

    def optional(self, filename: str) -> Path | None:
        path = self.folder / filename
        return path if path.is_file() else None


def is_hub_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder in a Hub layout resnetkit reads: a ``config.json`` of a
    timm model (``architecture``) or of a transformers ResNet (``model_type: resnet``)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    if not isinstance(data, dict) or ("arch" in data and "config" in data):  # resnetkit's own
        return False
    return "architecture" in data or data.get("model_type") == "resnet"


def get_folder_weights(folder: str | Path) -> HfHubWeights:
    """:func:`get_hf_hub_weights` for a local folder in a Hub layout."""
    folder = Path(folder).expanduser()
    return _describe(str(folder), _LocalFolder(folder))


def get_hf_hub_weights(name: str, timeout: float = 60.0) -> HfHubWeights:
    """Read a repository's ``config.json`` (downloading it if need be) and describe its model.

    Raises:
        ValueError: a malformed name, an unreadable config, or an architecture resnetkit does
            not have (the message lists the ones it loads).
        HubFileNotFoundError: the config is not cached and cannot be downloaded.
    """
    repo, revision = parse_name(name)
    return _describe(name, _Resolver(repo, revision, timeout))


def read_json_object(path: Path) -> dict[str, Any]:
    """A config file's JSON object.

    Raises:
        ValueError: not JSON (or not UTF-8), or JSON that is not an object; the file named.
    """
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _describe(name: str, resolver: _Resolver | _LocalFolder) -> HfHubWeights:
    config_path = resolver.get("config.json")
    config = read_json_object(config_path)
    if "architecture" in config:
        weights = _timm_weights(name, config)
    elif config.get("model_type") == "resnet":
        weights = _transformers_weights(name, config, resolver)
    else:
        raise ValueError(
            f"{name}: {config_path} describes neither a timm model (no 'architecture') nor a "
            f"transformers ResNet (model_type {config.get('model_type')!r})"
        )
    weights.resolver = resolver
    return weights


def _timm_weights(name: str, config: dict[str, Any]) -> HfHubWeights:
    from resnetkit.models.registry import get_model_config

    arch = str(config["architecture"])
    try:
        get_model_config(arch)
    except KeyError:
        raise ValueError(
            f"{name}: timm's {arch!r} has no resnetkit counterpart; resnetkit loads timm's "
            f"{', '.join(TIMM_ARCHS)}"
        ) from None
    if arch not in TIMM_ARCHS:
        raise ValueError(
            f"{name}: {arch!r} is registered in resnetkit under the same name but is not "
            f"timm's model of that name; resnetkit loads timm's {', '.join(TIMM_ARCHS)}"
        )
    cfg = config.get("pretrained_cfg") or {}
    args = dict(config.get("model_args") or {})
    num_classes = int(
        args.get("num_classes", config.get("num_classes", cfg.get("num_classes", 1000)))
    )
    input_size = cfg.get("input_size") or [3, 224, 224]
    size = int(input_size[-1])
    changes = _timm_model_args(name, args, int(args.get("in_chans", input_size[0])))
    crop_pct = float(cfg.get("crop_pct") or 0.875)
    classes = [str(c) for c in config.get("label_names") or []]
    if classes and len(classes) != num_classes:
        raise ValueError(
            f"{name}: config.json's label_names has {len(classes)} names for a model with "
            f"{num_classes} outputs (num_classes); give one name for each output, in order"
        )
    tag = str(cfg.get("tag") or "")
    if not classes and num_classes == 1000 and tag.endswith("in1k"):
        classes = _imagenet_classes()
    where = f"{name} config.json"
    mean = cfg.get("mean") or (0.485, 0.456, 0.406)
    std = cfg.get("std") or (0.229, 0.224, 0.225)
    interpolation = str(cfg.get("interpolation") or "bilinear")
    problem = interpolation_problem(interpolation, "pretrained_cfg.interpolation")
    if problem:
        raise ValueError(f"{where}: {problem}")
    pretrained_cfg = {
        "tag": name,
        "classes": classes,
        "mean": _stats(where, "pretrained_cfg.mean", mean, std=False),
        "std": _stats(where, "pretrained_cfg.std", std, std=True),
        "input_size": size,
        "resize": math.floor(size / crop_pct),  # timm's own rounding
        "crop": size,
        "crop_pct": crop_pct,
        "interpolation": interpolation,
        "source": name,
    }
    if cfg.get("test_input_size"):
        pretrained_cfg["test_input_size"] = int(cfg["test_input_size"][-1])
    return HfHubWeights(name, arch, num_classes, "timm", pretrained_cfg, changes)


#: timm creation arguments that leave the network resnetkit builds as it is (training-only
#: rates), or that resnetkit follows (``_timm_model_args``).
_TIMM_NEUTRAL_ARGS = (
    "num_classes",
    "drop_rate",
    "drop_path_rate",
    "drop_block_rate",
    "proj_drop_rate",
    "attn_drop_rate",
    "zero_init_last",  # initialisation only
)


def _timm_model_args(name: str, args: dict[str, Any], in_chans: int) -> dict[str, Any]:
    """The architecture fields a timm config's ``model_args`` (what timm writes on export:
    ``in_chans``, ``output_stride``, ``global_pool``...) fix.

    Raises:
        ValueError: an argument that changes timm's network in a way resnetkit does not follow.
    """
    changes: dict[str, Any] = {}
    if in_chans != 3:
        changes["in_chans"] = in_chans
    if "output_stride" in args and int(args["output_stride"]) != 32:
        changes["output_stride"] = int(args["output_stride"])
    if args.get("global_pool", "avg") != "avg":
        raise ValueError(f"{name}: global_pool {args['global_pool']!r}; resnetkit pools 'avg'")
    unknown = sorted(
        k
        for k in args
        if k not in (*_TIMM_NEUTRAL_ARGS, "in_chans", "output_stride", "global_pool")
    )
    if unknown:
        raise ValueError(
            f"{name}: its config's model_args {unknown} change timm's network in ways resnetkit "
            "does not build; load it with timm"
        )
    return changes


def _transformers_weights(
    name: str, config: dict[str, Any], resolver: _Resolver | _LocalFolder
) -> HfHubWeights:
    from resnetkit.interop.convert import _huggingface_meta

    layer_type = str(config.get("layer_type", "bottleneck"))
    depths = tuple(int(d) for d in config.get("depths") or ())
    arch = _HF_DEPTHS.get((layer_type, depths))
    if arch is None:
        raise ValueError(
            f"{name}: a transformers ResNet with {layer_type} blocks {list(depths)} has no "
            "resnetkit counterpart (ResNet-18/34/50/101/152 are loaded)"
        )
    meta = _huggingface_meta(config)
    if meta["problems"]:
        raise ValueError(f"{name}: {'; '.join(meta['problems'])}")
    num_classes = len(config.get("id2label") or {}) or int(config.get("num_labels", 0))
    pretrained_cfg: dict[str, Any] = {
        "tag": name,
        "classes": meta["classes"],
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "input_size": 224,
        "resize": 256,
        "crop": 224,
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "source": name,
    }
    if meta["task"].get("multi_label"):  # problem_type multi_label_classification
        pretrained_cfg.update(multi_label=True, threshold=meta["task"]["threshold"])
    processor = resolver.optional("preprocessor_config.json")
    if processor is not None:
        pretrained_cfg.update(processor_preprocessing(processor))
    changes: dict[str, Any] = {"stride_in_1x1": True} if meta["stride_in_1x1"] else {}
    channels = config.get("num_channels", 3)
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise ValueError(
            f"{name}: config.json's num_channels must be a positive whole number (3 for RGB, "
            f"1 for grayscale), got {channels!r}"
        )
    if channels != 3:  # a grayscale (or multispectral) model: its first conv says so
        changes["in_chans"] = channels
    return HfHubWeights(name, arch, num_classes, "huggingface", pretrained_cfg, changes)


def processor_preprocessing(path: Path) -> dict[str, Any]:
    """Input size, resize, interpolation and normalisation of a transformers image processor
    config (``preprocessor_config.json``), as resnetkit's preprocessing keys: what loading a
    transformers folder and converting one both read.

    Raises:
        ValueError: not a JSON object, or a mean/std that is not finite numbers (a std also
            above 0); the file and field named.
    """
    proc = read_json_object(path)
    out: dict[str, Any] = {}
    if proc.get("image_mean") and proc.get("image_std"):
        out["mean"] = _stats(str(path), "image_mean", proc["image_mean"], std=False)
        out["std"] = _stats(str(path), "image_std", proc["image_std"], std=True)
    size = proc.get("size")
    crop = proc.get("crop_size")
    side = size.get("shortest_edge") if isinstance(size, dict) else size
    if isinstance(side, int):
        crop_pct = float(proc.get("crop_pct") or 1.0)
        crop_side = crop.get("height") if isinstance(crop, dict) else None
        if crop_side:  # resize to `side`, centre-crop `crop_side` (BitImageProcessor)
            out.update(input_size=int(crop_side), resize=side, crop=int(crop_side))
        else:  # ConvNext's processor: resize to side / crop_pct, crop side (below 384)
            out.update(input_size=side, resize=int(side / crop_pct), crop=side)
        out["crop_pct"] = out["input_size"] / out["resize"]
    filters = {number: name for name, number in PIL_RESAMPLE.items()}
    resample = filters.get(proc.get("resample", PIL_RESAMPLE["bilinear"]))
    if resample:
        out["interpolation"] = resample
    return out


def _stats(where: str, key: str, value: Any, *, std: bool) -> list[float]:
    """A config's per-channel mean or std (one number or a list), checked: finite numbers,
    a std above 0.

    Raises:
        ValueError: naming ``where`` (the file or repository) and ``key`` (the field).
    """
    values = value if isinstance(value, list | tuple) else [value]
    good = bool(values) and finite_numbers(values)
    if not good or (std and any(v <= 0 for v in values)):
        what = "positive finite numbers" if std else "finite numbers"
        raise ValueError(
            f"{where}: {key} must be {what} (0-1 scale, one a channel), got {value!r}; fix the file"
        )
    return [float(v) for v in values]


#: timm architectures that are resnetkit's of the same name (weights load strictly).
TIMM_ARCHS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnet18d",
    "resnet34d",
    "resnet50c",
    "resnet50d",
    "resnet101d",
    "resnet152d",
    "resnet200",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
)


def _imagenet_classes() -> list[str]:
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
