"""Our cascade vs imagen-pytorch (``speedup_vs_imagen_pytorch`` of results.json): the same number of
final-size images, the same ancestral steps, guidance weight, dynamic thresholding and MiniLM text
embeddings; the peer (loaded offline by ``benchmarks.imagen_pytorch_peer``) is one Unet at the final
size with about as many parameters as all our stages together."""
from __future__ import annotations

import time
import types
from typing import Any, Callable

import torch

from benchmarks.common import median, randomised_stage, sampling_inputs, timed
from benchmarks.imagen_pytorch_peer import (PEER_PACKAGES, PeerSampler, count_params, import_imagen_pytorch,
                                            matched_unet, unet_forward)
from imagen.cascade import Cascade


def sampling_rounds(cascade: Cascade, peer: PeerSampler, inputs: tuple, steps: int, w: float, percentile: float,
                    variants: dict[str, tuple[float | None, int]], rounds: int
                    ) -> tuple[dict[str, list[float]], list[float]]:
    """Alternating rounds (each of our variants, then the peer): this machine's speed drifts by tens of
    percent over minutes, so each side's time is its minimum over the rounds. (ours per variant, peer)."""
    tokens, mask, wv, seeds = inputs
    n_images, size = tokens.shape[0], cascade.image_size

    def ours(sr_w: float | None, sr_n: int) -> Callable[[], Any]:
        return lambda: cascade.sample(tokens, mask, wv, seeds, steps=steps, sr_steps=sr_n, kind="ddpm",
                                      thresholding="dynamic", percentile=percentile, sr_weight=sr_w)

    ours_all: dict[str, list[float]] = {k: [] for k in variants}
    peer_all = []
    for r in range(rounds):
        for k, (sr_w, sr_n) in variants.items():
            ours_all[k] += timed(ours(sr_w, sr_n), repeats=1, warmup=1 if r == 0 else 0)
        images, t = peer.sample(tokens, mask, w)
        peer_all.append(t)
        assert images.shape == (n_images, 3, size, size) and torch.isfinite(images).all()
    return ours_all, peer_all


def forward_level(cascade: Cascade, ip: types.ModuleType, tokens: torch.Tensor, mask: torch.Tensor,
                  repeats: int) -> dict[str, Any]:
    """Same resolution, one forward: our base U-Net architecture at the final size vs a peer Unet of matched size."""
    size, n_images = cascade.image_size, tokens.shape[0]
    base_arch = {**cascade.stages[0].cfg.arch, "image_size": size}
    ours_unet = randomised_stage("base", base_arch, 0).eval()
    f_unet, f_dim, f_params = matched_unet(ip, count_params(ours_unet), cascade.text_encoder.dim)
    f_unet.eval()
    b = 2 * n_images
    x = torch.randn(b, 3, size, size)
    tok2, mask2 = torch.cat([tokens, tokens]), torch.cat([mask, mask])
    with torch.inference_mode():
        ours_f = timed(lambda: ours_unet(x.contiguous(memory_format=torch.channels_last), torch.full((b,), 0.5),
                                         tok2, mask2), repeats)
    with torch.no_grad():
        peer_f = timed(lambda: unet_forward(f_unet, x, tok2, mask2), repeats)
    return {"compared": (f"one forward at batch {b}, {size}x{size}: our base U-Net architecture "
                         f"({count_params(ours_unet):,} params) vs imagen-pytorch Unet dim={f_dim} ({f_params:,} params)"),
            "ours_seconds": ours_f, "peer_seconds": peer_f, "speedup": median(peer_f) / median(ours_f)}


def measure_peer(cascade: Cascade, n_images: int, steps: int, w: float, percentile: float, sr_weight: float | None,
                 sr_steps: int, forward_repeats: int, rounds: int = 2) -> dict[str, Any]:
    """Our cascade vs imagen-pytorch sampling the same number of images at the final size, same steps,
    guidance weight and dynamic thresholding, fed the same MiniLM text embeddings.

    The headline ratio runs every one of our stages with the peer's ``steps`` and ``w``; ``settings`` adds
    the ratios with the SR stage at the config's ``sr_weight`` and/or ``sr_steps``, timed in the same rounds."""
    dim_text, size = cascade.text_encoder.dim, cascade.image_size
    ours_params = sum(count_params(st.model) for st in cascade.stages)
    inputs = sampling_inputs(cascade, n_images, w)
    t_import = time.perf_counter()
    ip = import_imagen_pytorch(dim_text)
    t_import = time.perf_counter() - t_import
    unet, dim, peer_params = matched_unet(ip, ours_params, dim_text)
    peer = PeerSampler.build(ip, unet, size, steps, dim_text, percentile)
    # our SR stage(s) at: (sr_weight, sr_steps); None = the base stage's w
    variants = {"every_stage_w_and_steps": (None, steps), "config_sr_weight": (sr_weight, steps),
                "config_sr_steps": (None, sr_steps), "config_sr_weight_and_steps": (sr_weight, sr_steps)}
    ours_all, peer_all = sampling_rounds(cascade, peer, inputs, steps, w, percentile, variants, rounds)
    peer_s = min(peer_all)
    ours_s, ours_cfg_s = ours_all["every_stage_w_and_steps"], ours_all["config_sr_weight"]
    settings = {k: {"sr_weight": "w" if sr_w is None else sr_w, "sr_steps": sr_n, "ours_seconds": ours_all[k],
                    "speedup": peer_s / min(ours_all[k])} for k, (sr_w, sr_n) in variants.items()}
    return {
        "speedup": peer_s / min(ours_s), "rounds": rounds, "peer_seconds_all": peer_all,
        "compared": (f"{n_images} images of {size}x{size}, {steps} ancestral (DDPM) steps per stage, w={w:g}, "
                     f"dynamic thresholding p={percentile}, the same MiniLM token embeddings, w at every stage: our {len(cascade.stages)}-"
                     f"stage cascade ({ours_params:,} parameters in all, cond+uncond in one forward) vs one "
                     f"imagen-pytorch Unet at {size}x{size} (shaped like our base U-Net, dim={dim}, {peer_params:,} "
                     "parameters; cond and uncond as two forwards, as imagen-pytorch does)"),
        "ours_seconds": ours_s, "ours_images_per_second": n_images / min(ours_s), "ours_params": ours_params,
        "speedup_with_config_sr_weight": peer_s / min(ours_cfg_s), "config_sr_weight": sr_weight,
        "ours_seconds_with_config_sr_weight": ours_cfg_s, "config_sr_steps": sr_steps, "settings": settings,
        "peer_seconds": peer_s, "peer_images_per_second": n_images / peer_s, "peer_params": peer_params,
        "peer_dim": dim, "peer_import_s": t_import, "peer_packages": list(PEER_PACKAGES),
        "forward_level": forward_level(cascade, ip, inputs[0], inputs[1], forward_repeats),
    }
