"""Loading the peer implementation, imagen-pytorch (PyPI ``imagen-pytorch``), offline, for the benchmark.

imagen-pytorch cannot be imported offline as published: ``Unet.__init__`` has the default argument
``text_embed_dim = get_encoded_dim(DEFAULT_T5_NAME)``, evaluated at import time, which fetches the
T5 config from the Hugging Face Hub; and the package ``__init__`` imports its trainer (accelerate,
datasets, ema-pytorch, ...). So this module

- registers the package without running its ``__init__`` and imports only ``imagen_pytorch.imagen_pytorch``
  (the ``Unet`` and ``Imagen`` classes),
- replaces ``imagen_pytorch.t5.get_encoded_dim`` by a function returning our text width before that
  import, and ``t5_encode_text`` by one that refuses (text embeddings are always given directly as
  ``text_embeds=`` / ``text_masks=``).

Install for the benchmark only, without touching torch (these are all it needs to import)::

    pip install --no-deps imagen-pytorch==2.1.0 einops beartype kornia kornia-rs
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import time
import types
from dataclasses import dataclass
from typing import Any

import torch

PEER_PACKAGES = ("imagen-pytorch==2.1.0", "einops", "beartype", "kornia", "kornia-rs")
INSTALL_HINT = "pip install --no-deps " + " ".join(PEER_PACKAGES)


def import_imagen_pytorch(text_dim: int) -> types.ModuleType:
    """``imagen_pytorch.imagen_pytorch`` with its Hub look-ups stubbed; raises ImportError with the install line."""
    loaded = sys.modules.get("imagen_pytorch.imagen_pytorch")
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec("imagen_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"imagen-pytorch is not installed; for the peer comparison run: {INSTALL_HINT}")
    package = types.ModuleType("imagen_pytorch")
    package.__path__ = list(spec.submodule_search_locations)  # a namespace: its __init__ (trainer) never runs
    sys.modules["imagen_pytorch"] = package
    try:
        t5 = importlib.import_module("imagen_pytorch.t5")
        t5.get_encoded_dim = lambda name: text_dim

        def no_t5(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("the benchmark feeds text embeddings directly (text_embeds=); T5 is never loaded")

        t5.t5_encode_text = no_t5
        t5.get_model_and_tokenizer = no_t5
        module = importlib.import_module("imagen_pytorch.imagen_pytorch")
    except ImportError as e:
        sys.modules.pop("imagen_pytorch", None)
        raise ImportError(f"imagen-pytorch could not be imported ({e}); install: {INSTALL_HINT}") from e
    module.get_encoded_dim = t5.get_encoded_dim
    module.t5_encode_text = no_t5
    return module


def unet_kwargs(dim: int, text_dim: int) -> dict[str, Any]:
    """An imagen-pytorch Unet shaped like our base U-Net: widths (1, 2, 4) x ``dim``, 2 ResNet blocks per
    level, attention (with text) and cross-attention at the two lower levels, 4 heads; imagen-pytorch's
    defaults otherwise. (Its README's BaseUnet64 shape has 14M parameters even at dim=8: too big to match.)
    dim=32 has about as many parameters as our 32 px base stage, dim=40 as our whole shipped cascade."""
    return dict(dim=dim, text_embed_dim=text_dim, dim_mults=(1, 2, 4), num_resnet_blocks=2,
                layer_attns=(False, True, True), layer_cross_attns=(False, True, True), attn_heads=4,
                memory_efficient=False)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def matched_unet(ip: types.ModuleType, target_params: int, text_dim: int, dims: range = range(8, 129, 8)
                 ) -> tuple[torch.nn.Module, int, int]:
    """The README-shaped Unet whose parameter count is closest to ``target_params``: (unet, dim, params)."""
    best: tuple[int, int] | None = None
    for dim in dims:
        torch.manual_seed(0)
        n = count_params(ip.Unet(**unet_kwargs(dim, text_dim)))
        if best is None or abs(n - target_params) < abs(best[1] - target_params):
            best = (dim, n)
        if n > target_params:
            break
    assert best is not None
    torch.manual_seed(0)
    return ip.Unet(**unet_kwargs(best[0], text_dim)), best[0], best[1]


@dataclass
class PeerSampler:
    """imagen-pytorch's ``Imagen`` around one Unet, configured like our sampler: cosine schedule, ``steps``
    ancestral steps, dynamic thresholding at ``percentile``, v-prediction, plain classifier-free guidance."""

    imagen: torch.nn.Module
    steps: int

    @classmethod
    def build(cls, ip: types.ModuleType, unet: torch.nn.Module, image_size: int, steps: int, text_dim: int,
              percentile: float) -> "PeerSampler":
        imagen = ip.Imagen(unets=(unet,), image_sizes=(image_size,), timesteps=steps, text_embed_dim=text_dim,
                           noise_schedules="cosine", pred_objectives="v", dynamic_thresholding=True,
                           dynamic_thresholding_percentile=percentile, cond_drop_prob=0.1)
        return cls(imagen.eval(), steps)

    def sample(self, tokens: torch.Tensor, mask: torch.Tensor, w: float, seed: int = 0) -> tuple[torch.Tensor, float]:
        """Images in [0, 1] (B, 3, S, S) for the given text embeddings, and the wall time in seconds."""
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        images = self.imagen.sample(text_embeds=tokens, text_masks=mask, cond_scale=w,
                                    cfg_remove_parallel_component=False, use_tqdm=False, device=torch.device("cpu"))
        return images, time.perf_counter() - t0


def unet_forward(unet: torch.nn.Module, x: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One conditional forward of a peer Unet at times 0.5 (for forward-level timing)."""
    t = torch.full((x.shape[0],), 0.5)
    return unet(x, t, text_embeds=tokens, text_mask=mask)
