"""shapes-CLIP: a small image-text encoder for the shapes domain.

Image tower: a CNN on 64x64 RGB. Any input size is first resized to 64x64 with
``torch.nn.functional.interpolate(mode="bilinear", antialias=True, align_corners=False)``
on float pixels in [0, 1] (inputs already 64x64 are used as they are). Its 256-d hidden
layer before the projection (after GELU) is the **Fréchet-distance feature** (``fd_features``);
the projection of it, L2-normalised, is the contrastive image embedding (``image_features``).

Text head: on the frozen per-token states of all-MiniLM-L6-v2 (384-d, max_length 32): a
linear map, one pre-norm transformer layer, then masked mean pooling and attention pooling
concatenated and projected; L2-normalised. Similarity is the cosine; training multiplies it
by a learnable logit scale (CLIP).

Weights are one safetensors file (float16) whose metadata holds the architecture, so
``load_shapes_clip`` rebuilds the model without pickle.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

from imagen.checkpoint import CheckpointError, atomic_save, read_meta
from imagen.text_encoder import TextEncoder, TextEncoderConfig

MODEL_NAME = "shapes-clip-v1"
INPUT_SIZE = 64
RESIZE = "bilinear, antialias=True, align_corners=False, on [0, 1] floats, to 64x64"
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "checkpoints" / "shapes_clip.safetensors"


@dataclass
class ShapesClipConfig:
    widths: tuple[int, ...] = (32, 64, 128, 128)   # image tower: one stride-2 stage per width
    depths: tuple[int, ...] = (2, 2, 2, 1)         # 3x3 convolutions per stage
    feature_dim: int = 256                          # Fréchet-distance features (pre-projection)
    embed_dim: int = 128                            # joint embedding
    text_dim: int = 384                             # MiniLM token states
    text_width: int = 128
    text_heads: int = 4
    text_layers: int = 1
    max_length: int = 32
    text_encoder: str = "minilm"
    name: str = MODEL_NAME


def resize_images(images: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """uint8 (N, 3, H, W) at any size -> float (N, 3, size, size) in [0, 1] (bilinear, antialias)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images (0..255), got {images.dtype}")
    x = images.float() / 255.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


class ImageTower(nn.Module):
    """CNN: stride-2 stages down to 4x4, flatten (keeps where things are), linear to features."""

    def __init__(self, cfg: ShapesClipConfig):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for width, depth in zip(cfg.widths, cfg.depths):
            for i in range(depth):
                layers += [nn.Conv2d(c_in, width, 3, stride=2 if i == 0 else 1, padding=1, bias=False),
                           nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                c_in = width
        self.convs = nn.Sequential(*layers)
        side = INPUT_SIZE // 2 ** len(cfg.widths)
        self.fc = nn.Linear(c_in * side * side, cfg.feature_dim)
        self.proj = nn.Linear(cfg.feature_dim, cfg.embed_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: float (N, 3, 64, 64) in [-1, 1] -> pre-projection features (N, feature_dim)."""
        return F.gelu(self.fc(self.convs(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.features(x)), dim=-1)


class TextHead(nn.Module):
    """Frozen MiniLM token states (B, L, 384) + mask -> L2-normalised embedding (B, embed_dim)."""

    def __init__(self, cfg: ShapesClipConfig):
        super().__init__()
        w = cfg.text_width
        self.inp = nn.Linear(cfg.text_dim, w)
        self.layers = nn.ModuleList([
            nn.TransformerEncoderLayer(w, cfg.text_heads, dim_feedforward=2 * w, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(cfg.text_layers)])
        self.norm = nn.LayerNorm(w)
        self.query = nn.Parameter(torch.randn(1, 1, w) * w ** -0.5)
        self.pool = nn.MultiheadAttention(w, cfg.text_heads, batch_first=True)
        self.proj = nn.Sequential(nn.Linear(2 * w, 2 * w), nn.GELU(), nn.Linear(2 * w, cfg.embed_dim))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pad = ~mask.bool()
        h = self.inp(tokens)
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=pad)
        h = self.norm(h)
        m = mask.to(h.dtype).unsqueeze(-1)
        mean = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
        att, _ = self.pool(self.query.expand(h.shape[0], -1, -1), h, h, key_padding_mask=pad, need_weights=False)
        return F.normalize(self.proj(torch.cat([mean, att[:, 0]], dim=-1)), dim=-1)


class ShapesClip(nn.Module):
    """Image tower + text head; ``score`` is the per-pair cosine similarity (no scale, no clamp)."""

    def __init__(self, cfg: ShapesClipConfig | None = None, text_encoder: Any | None = None):
        super().__init__()
        self.cfg = cfg or ShapesClipConfig()
        self.image_tower = ImageTower(self.cfg)
        self.text_head = TextHead(self.cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self._text_encoder = text_encoder   # frozen MiniLM, created on first use

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def feature_dim(self) -> int:
        """Size of ``fd_features`` (the Fréchet-distance feature space)."""
        return self.cfg.feature_dim

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def text_encoder(self):
        if self._text_encoder is None:
            self._text_encoder = TextEncoder(TextEncoderConfig(kind=self.cfg.text_encoder, max_length=self.cfg.max_length))
        return self._text_encoder

    def _prep(self, images: torch.Tensor) -> torch.Tensor:
        return resize_images(images.to(self.device)) * 2 - 1

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W), any H, W -> L2-normalised embeddings (N, embed_dim) float32."""
        return self.image_tower(self._prep(images)).float()

    @torch.no_grad()
    def fd_features(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> pre-projection tower features (N, feature_dim) float32, for Fréchet distance."""
        return self.image_tower.features(self._prep(images)).float()

    def encode_tokens(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """MiniLM states (B, L, 384) and mask (B, L) -> L2-normalised text embeddings (B, embed_dim)."""
        return self.text_head(tokens.to(self.device), mask.to(self.device))

    @torch.no_grad()
    def text_features(self, texts: list[str]) -> torch.Tensor:
        """Captions -> L2-normalised embeddings (N, embed_dim) float32."""
        tokens, mask = self.text_encoder().encode(list(texts))
        return self.encode_tokens(tokens, mask).float()

    @torch.no_grad()
    def score(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Cosine similarity of image i with text i, shape (N,), in [-1, 1]."""
        if len(texts) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(texts)} texts")
        return (self.image_features(images) * self.text_features(texts)).sum(-1)


def model_meta(model: ShapesClip, **info: Any) -> dict[str, Any]:
    return {"kind": "shapes_clip", "arch": dataclasses.asdict(model.cfg), "resize": RESIZE,
            "fd_features": "image tower pre-projection features (GELU output), dim feature_dim", **info}


def save_shapes_clip(model: ShapesClip, path: str | Path, dtype: torch.dtype = torch.float16, **info: Any) -> None:
    """Write weights (float16 by default; BatchNorm step counters kept as integers) with self-describing metadata."""
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    atomic_save(state, path, model_meta(model, stored_dtype=str(dtype), **info))


def load_shapes_clip(path: str | Path | None = None, device: str | torch.device = "cpu") -> ShapesClip:
    """Load shapes-CLIP from a safetensors file (default: the shipped ``checkpoints/shapes_clip.safetensors``)."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.exists():
        raise CheckpointError(f"shapes-CLIP weights not found: {path} (train them with `python -m bench.shapes_clip.train`)")
    meta = read_meta(path)
    if meta.get("kind") != "shapes_clip":
        raise CheckpointError(f"{path}: not a shapes-CLIP checkpoint (metadata kind={meta.get('kind')!r})")
    arch = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["arch"].items()}
    # built on the CPU (random init: 30 ms for 1.3M parameters) rather than on the meta device, whose
    # first use imports torch's reference kernels: ~2.6 s in every fresh process that scores a run
    model = ShapesClip(ShapesClipConfig(**arch))
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match the architecture in its metadata:\n{e}") from e
    return model.to(device).eval()
