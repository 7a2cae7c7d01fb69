"""Image feature extractors behind one interface, each stating its backbone and its resize.

- ``InceptionExtractor``: torch-fidelity's ``FeatureExtractorInceptionV3`` (2048-d pool3), from a
  local weights file. This is FID's feature space.
- ``OpenClipExtractor``: any open_clip model, ``pretrained=`` a tag or a local file (CLIP score,
  FD-CLIP, CMMD).
- ``ShapesClipExtractor``: the project's domain encoder (``bench.shapes_clip``), the offline default:
  its tower features for FD, its joint embedding for CLIP score and CMMD.

All take uint8 images (N, 3, H, W), run in batches under ``torch.inference_mode`` and return
float32 features (N, dim) on the CPU. Each also states what reference-statistics keys need beyond
``name``: ``weights`` (a digest of the weights file, or the tag that names them), ``device`` and
``dtype`` (the dtype of the model's parameters, which the features are computed in). Nothing is loaded at import time; a missing weights file
fails in the constructor, before any image is read, naming the file and the config key.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from bench.rundir import file_sha256
from bench.shapes_clip import model as shapes_clip_model
from imagen.device import resolve_device  # noqa: F401  (re-exported: the one device resolution)

ExtractorKind = Literal["shapes_clip", "inception", "clip"]

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
INCEPTION_SHA8 = "6726825d"


@runtime_checkable
class FeatureExtractor(Protocol):
    """``name`` (backbone + weights), ``resize`` (how images reach it), ``dim``; call on uint8 (N,3,H,W)."""

    name: str
    resize: str
    dim: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class ImageTextEncoder(FeatureExtractor, Protocol):
    """A feature extractor with a text tower in the same embedding space (CLIP score, CMMD)."""

    def text_features(self, texts: list[str]) -> torch.Tensor: ...


def file_sha8(path: str | Path) -> str:
    """First 8 hex digits of the file's sha256 (names the weights inside extractor names)."""
    return file_sha256(path)[:8]


def weights_digest(path: str | Path) -> str:
    """``sha256:`` and the first 16 hex digits of the file's sha256 (identifies weights in reference keys)."""
    return f"sha256:{file_sha256(path)[:16]}"


def param_dtype(model: Any, default: str = "float32") -> str:
    """The dtype of the model's first floating-point parameter ("float32"), ``default`` when it has none."""
    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            if torch.is_tensor(p) and p.is_floating_point():
                return str(p.dtype).removeprefix("torch.")
    return default


def _check_images(images: torch.Tensor) -> None:
    if not (torch.is_tensor(images) and images.dtype == torch.uint8 and images.ndim == 4 and images.shape[1] == 3):
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        dtype = images.dtype if torch.is_tensor(images) else "-"
        raise ValueError(f"expected uint8 images (N, 3, H, W), got {shape} {dtype}")


def run_batched(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int,
                device: torch.device) -> torch.Tensor:
    """Apply ``fn`` to ``images`` in batches on ``device`` under inference_mode; float32 CPU result."""
    _check_images(images)
    outs = []
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            outs.append(fn(images[start:start + batch_size].to(device)).float().cpu())
    if not outs:
        raise ValueError("no images to extract features from")
    return torch.cat(outs)


class InceptionExtractor:
    """FID's Inception-v3 (2048-d pool3 features) via torch-fidelity, from a local weights file.

    Resize: torch-fidelity's TF1.x-compatible bilinear interpolation to 299x299 (no antialias),
    then (x - 128) / 128, as in the original TF FID graph.
    """

    dim = 2048
    resize = "tf1-bilinear (no antialias) to 299, (x-128)/128"

    def __init__(self, weights_path: str | Path | None, device: str | torch.device = "cpu",
                 batch_size: int = 32) -> None:
        path = Path(weights_path).expanduser() if weights_path else None
        if path is None or not path.is_file():
            where = f"not found at {path}" if path else "not given"
            raise FileNotFoundError(
                f"FID Inception-v3 weights {where}. Nothing is downloaded at run time: provide {INCEPTION_FILE} "
                f"(the converted TF 2015-12-05 weights torch-fidelity downloads from {INCEPTION_URL}) and set "
                f"metrics.inception_weights=/path/to/{INCEPTION_FILE}")
        # optional backend, imported on use: most runs never load it (start-up time)
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        try:
            self.model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                     feature_extractor_weights_path=str(path))
        except Exception as e:  # wrong file: keys or shapes do not match
            raise ValueError(f"{path} is not a torch-fidelity Inception-v3 state_dict "
                             f"(metrics.inception_weights): {e}") from e
        self.weights = weights_digest(path)
        sha8 = self.weights.removeprefix("sha256:")[:8]
        self.name = "inception-v3-pool3" if sha8 == INCEPTION_SHA8 else f"inception-v3-pool3[{sha8}]"
        self.weights_path = path
        self.device = resolve_device(device)
        self.model.to(self.device)
        self.dtype = param_dtype(self.model)
        self.batch_size = batch_size

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return run_batched(lambda x: self.model(x)[0], images, self.batch_size, self.device)


def _open_clip_model_name(model: str) -> str:
    """A path to an open_clip model-config JSON is registered (``add_model_config``) and named by its stem."""
    if model.endswith(".json"):
        import open_clip  # optional backend, imported on use (start-up time)

        path = Path(model).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"open_clip model config {path} not found (metrics.clip_model)")
        open_clip.add_model_config(path)
        return path.stem
    return model


class OpenClipExtractor:
    """An open_clip model: image embeddings (unnormalised, like torch-fidelity's FD-CLIP) and text embeddings.

    ``model``: an open_clip architecture name (``ViT-B-32``), ``local-dir:/folder`` (open_clip's
    config + weights folder), or a path to a model-config JSON. ``pretrained``: a tag (downloaded by
    open_clip when online) or a local weights file. Preprocessing follows the model's own config:
    resize (antialiased, its interpolation, default bicubic) so the shortest side is the model's
    image size, centre crop, scale to [0, 1], normalise with its mean / std.
    """

    def __init__(self, model: str, pretrained: str | None, device: str | torch.device = "cpu",
                 batch_size: int = 64) -> None:
        local_dir = model.startswith("local-dir:")
        if model.endswith(".json") and not Path(model).expanduser().is_file():
            raise FileNotFoundError(f"open_clip model config {model} not found (metrics.clip_model)")
        label, self.weights = self._check_pretrained(model, pretrained, local_dir)
        import open_clip  # optional backend, imported on use (start-up time)

        name = _open_clip_model_name(model)
        self.device = resolve_device(device)
        try:
            self.model = open_clip.create_model(name, pretrained=None if local_dir else pretrained,
                                                device=self.device, require_pretrained=True)
        except Exception as e:
            raise RuntimeError(
                f"could not load open_clip model {model!r} with pretrained={pretrained!r}: {e}. Offline, give a local "
                f"weights file: metrics.clip_pretrained=/path/to/weights.(bin|pt|safetensors) with the matching "
                f"metrics.clip_model=<architecture>") from e
        self.model.eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(name)
        cfg = open_clip.get_model_preprocess_cfg(self.model)
        size = cfg.get("size", 224)
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)
        self.mean = tuple(float(v) for v in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
        self.std = tuple(float(v) for v in cfg.get("std", open_clip.OPENAI_DATASET_STD))
        self.interpolation = str(cfg.get("interpolation", "bicubic"))
        self.resize_mode = str(cfg.get("resize_mode", "shortest"))
        self.name = f"open_clip:{name}/{label}"
        self.dtype = param_dtype(self.model)
        self.dim = int(self.model.visual.output_dim)
        crop = "squash" if self.resize_mode == "squash" else "shortest side, centre crop"
        self.resize = (f"{self.interpolation}-antialias to {self.image_size[0]}x{self.image_size[1]} ({crop}), "
                       f"mean={self.mean}, std={self.std}")
        self.batch_size = batch_size

    @staticmethod
    def _check_pretrained(model: str, pretrained: str | None, local_dir: bool) -> tuple[str, str]:
        """(the label in the extractor's name, the weights' identity for reference keys)."""
        if local_dir:
            folder = Path(model[len("local-dir:"):]).expanduser()
            if not folder.is_dir():
                raise FileNotFoundError(f"open_clip folder {folder} not found (metrics.clip_model=local-dir:...)")
            # the folder's files (config and weights), by name and contents
            h = hashlib.sha256()
            for f in sorted(p for p in folder.iterdir() if p.is_file()):
                h.update(f"{f.name}\0{file_sha256(f)}\n".encode())
            return "local-dir", f"sha256:{h.hexdigest()[:16]}"
        if not pretrained:
            raise ValueError(
                "open_clip needs weights: set metrics.clip_pretrained=<tag, or a local file "
                "/path/to/open_clip_weights.bin> for metrics.clip_model=<architecture, e.g. ViT-B-32>. "
                "Nothing is downloaded offline; random weights are never used.")
        looks_like_path = os.sep in pretrained or pretrained.endswith((".bin", ".pt", ".pth", ".safetensors"))
        if looks_like_path:
            path = Path(pretrained).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"open_clip weights file {path} not found (metrics.clip_pretrained)")
            digest = weights_digest(path)
            return f"{path.name}#{digest.removeprefix('sha256:')[:8]}", digest
        return pretrained, f"open_clip tag {pretrained}"

    def _preprocess(self, images: torch.Tensor) -> torch.Tensor:
        mode = InterpolationMode.BILINEAR if self.interpolation == "bilinear" else InterpolationMode.BICUBIC
        h, w = self.image_size
        if self.resize_mode == "squash":
            x = TF.resize(images, [h, w], interpolation=mode, antialias=True)
        else:
            x = TF.resize(images, min(h, w), interpolation=mode, antialias=True)
            x = TF.center_crop(x, [h, w])
        x = x.float() / 255.0
        return TF.normalize(x, self.mean, self.std)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return run_batched(lambda x: self.model.encode_image(self._preprocess(x)), images, self.batch_size,
                           self.device)

    def text_features(self, texts: list[str]) -> torch.Tensor:
        """Unnormalised text embeddings (N, dim)."""
        outs = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                tokens = self.tokenizer(list(texts[start:start + self.batch_size])).to(self.device)
                outs.append(self.model.encode_text(tokens).float().cpu())
        return torch.cat(outs)


class ShapesClipExtractor:
    """The project's shapes-CLIP (``bench.shapes_clip.model.load_shapes_clip``); in-domain only for shapes prompts.

    ``features="fd"``: the image tower's pre-projection features (``fd_features``, ``feature_dim``-d),
    the Fréchet-distance space. ``features="embedding"``: the L2-normalised joint image embedding
    (``image_features``) with ``text_features`` beside it, for CLIP score and CMMD.
    """

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 256, features: Literal["fd", "embedding"] = "fd", model: Any = None,
                 weights_tag: str | None = None, weights: str | None = None) -> None:
        if features not in ("fd", "embedding"):
            raise ValueError(f"shapes-CLIP features must be 'fd' or 'embedding', got {features!r}")
        module = self._module()
        self.device = resolve_device(device)
        self.path = path
        self.model: Any = model if model is not None else module.load_shapes_clip(
            path=None if path is None else str(path), device=str(self.device))
        self.features = features
        # the weights are part of every reference-stats key (``weights``: the digest of the file loaded, the
        # shipped one included); the name, as for Inception, gets a digest only for another file than the shipped one
        if weights_tag is None or weights is None:
            weights_tag, weights = self._weights_identity(path, module, in_memory=model is not None)
        self.weights_tag, self.weights = weights_tag, weights
        self.dtype = param_dtype(self.model)
        base = str(self.model.name) + self.weights_tag
        self.resize = str(getattr(module, "RESIZE", "shapes-CLIP's own (bench.shapes_clip.model)"))
        if features == "fd" and hasattr(self.model, "fd_features"):
            self._fn, self.dim, self.name = self.model.fd_features, int(self.model.feature_dim), f"{base}/fd"
        else:
            self._fn, self.name = self.model.image_features, base
            self.dim = int(getattr(self.model, "embed_dim", self.model.feature_dim))
        self.batch_size = batch_size

    @staticmethod
    def _weights_identity(path: str | Path | None, module: Any, in_memory: bool = False) -> tuple[str, str]:
        """(name tag, weights digest): the tag is nothing for the shipped weights (or an in-memory model), else
        "[sha8]" of the weights file; the digest is that of the file loaded (``path``, else the shipped file),
        "in-memory model" for a model given without a file, "" when there is no file to hash."""
        shipped = getattr(module, "DEFAULT_WEIGHTS", None)
        shipped_ok = shipped is not None and Path(shipped).is_file()
        if path is None:
            if in_memory:
                return "", "in-memory model"
            return "", weights_digest(shipped) if shipped_ok else ""
        digest = weights_digest(path)
        if shipped_ok and weights_digest(shipped) == digest:
            return "", digest
        return f"[{digest.removeprefix('sha256:')[:8]}]", digest

    @staticmethod
    def _module() -> Any:
        return shapes_clip_model

    def with_features(self, features: Literal["fd", "embedding"]) -> "ShapesClipExtractor":
        """The same loaded model, giving the other kind of features."""
        if features == self.features:
            return self
        return ShapesClipExtractor(self.path, self.device, self.batch_size, features, model=self.model,
                                   weights_tag=self.weights_tag, weights=self.weights)  # the same file: not hashed again

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        # channels-last input: oneDNN's NHWC convolutions run the tower ~1.4x faster on CPU (features
        # equal to NCHW's within 1e-5; benchmarks/run.py measures extraction against torchmetrics)
        return run_batched(lambda x: self._fn(x.contiguous(memory_format=torch.channels_last)), images,
                           self.batch_size, self.device)

    def text_features(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised caption embeddings (N, dim)."""
        with torch.inference_mode():
            return torch.as_tensor(self.model.text_features(list(texts))).float().cpu()


def build_extractor(kind: ExtractorKind, *, inception_weights: str | None = None, clip_model: str = "ViT-B-32",
                    clip_pretrained: str | None = None, shapes_clip_path: str | None = None,
                    device: str = "auto", batch_size: int = 64) -> FeatureExtractor:
    """The extractor for ``kind``; raises at once (before any work) when its weights are missing."""
    if kind == "inception":
        return InceptionExtractor(inception_weights, device, batch_size)
    if kind == "clip":
        return OpenClipExtractor(clip_model, clip_pretrained, device, batch_size)
    if kind == "shapes_clip":
        return ShapesClipExtractor(shapes_clip_path, device, batch_size, features="fd")
    raise ValueError(f"unknown feature extractor {kind!r} (metrics.fd_extractor: shapes_clip | inception | clip)")
