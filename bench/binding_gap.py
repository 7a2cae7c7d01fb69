"""Does a base stage bind words to objects? The binding gap, from the denoising loss alone.

    python -m bench.binding_gap checkpoint=checkpoints/base/ema.safetensors [n=128 seed=0]
    python -m bench.binding_gap checkpoint=checkpoints/base_random/ema.safetensors text_encoder.kind=random

For n two-object shapes scenes (half two-colour Colors with two different shapes, half Positional)
and noise levels t in each bin, the v-prediction loss with the scene's caption is compared with the
loss, on the same x_t, of the same words bound otherwise (``bench.shapes.binding_swap``: colours
exchanged between the objects, or the relation reversed):

    gap = L(swapped caption) - L(caption),   L = || v_theta(x_t, t, c) - v ||^2 (mean over pixels)

A model that reads only which words occur (a bag of words) has gap 0; one that binds colours to
shapes and objects to places denoises better with the true caption (gap > 0). Only at high noise:
below t ~ 0.85 x_t itself shows which colour sits where, and the caption's binding adds nothing.
The scale of what binding can gain in each bin, from the images alone (no model), is the twin gain:
the v-loss of the ideal denoiser that knows the scene is one of {scene, swapped scene} but not which
(its x0 estimate the posterior mean p x0 + (1 - p) x0', p = P(scene | x_t) for two Gaussian
likelihoods N(x_t; alpha_t x0, sigma_t^2)), minus that of one that knows:

    twin_gain = || p x0 + (1 - p) x0' - x0 ||^2 / sigma_t^2   (on a fixed x_t, v = (alpha_t x_t - x0) / sigma_t)

Per category and t bin: the mean gap, its 95% interval (normal, over scenes), the share of scenes
with gap > 0 and the twin gain; and, for the built-in base, which path carries the caption: the loss with it through cross-attention
alone (``loss_no_pooled``: the empty caption's pooled text vector in the time embedding) and with
none (``loss_uncond``). A base whose ``loss_no_pooled`` is near ``loss_uncond`` reads its caption from
the pooled vector, a bag of words by construction. For a scene-kind run (``recipe.scene_kinds``, its
``train_state.safetensors``) also ``head_binding``: on the same x_t with the true caption, the share of
object pixels its kind head gives to their own kind of the scene's two (``bench.scene_kinds.head_binding``;
about 0.5 for a bag of words, 1 for a head that binds). The command then prints where sampling decides a
Positional scene's order, from pure noise (``bench.first_step``: the share of scenes whose guided x0
estimate at t = 0.97 puts each colour on its side). About a minute on 2 CPU cores, against minutes
of sampling and scoring: a cheap check while training (``train_state.safetensors`` of a run in
progress works too).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file

from bench.cli import missing_arguments
from bench.first_step import first_step_order, order_by_relation, order_summary
from bench.scene_kinds import KindHead, head_binding, kind_maps
from bench.shapes import probe_scenes, swapped_scene
from bench.train import row_mse, scene_images, stage_of
from bench.training import model_weights
from imagen.checkpoint import CheckpointError, build_stage, load_stage
from imagen.schedule import alpha_sigma, q_sample, training_target
from imagen.text_encoder import TextEncoder, TextEncoderConfig
from imagen.unet import BaseUNet

T_BINS = ((0.6, 0.8), (0.8, 0.9), (0.9, 0.95), (0.95, 1.0))


def load_base(path: str | Path, ema: bool = False) -> tuple[torch.nn.Module, str | None]:
    """A base stage from ``ema.safetensors`` or from a run's ``train_state.safetensors`` (its model
    weights, or with ``ema`` its EMA weights; the architecture from ``recipe.json`` beside it); also the
    text encoder it was trained with. A scene-kind run (``recipe.scene_kinds``) gives its ``KindHead``."""
    path = Path(path)
    if path.name != "train_state.safetensors":
        model, meta = load_stage(path)
        if meta.get("kind") != "base":
            raise ValueError(f"{path}: a {meta.get('kind')!r} stage; the binding gap is measured on a base stage")
        return model.eval(), meta.get("text_encoder")
    info = json.loads((path.parent / "recipe.json").read_text())
    recipe = info.get("recipe", {})
    if recipe.get("stage") != "base" or "arch" not in recipe:
        raise ValueError(f"{path.parent / 'recipe.json'}: not a base-stage training run (recipe.stage "
                         f"{recipe.get('stage')!r}); the binding gap is measured on a base stage")
    model = build_stage("base", recipe["arch"])
    model = KindHead(model) if recipe.get("scene_kinds", 0) > 0 else model
    model.load_state_dict(model_weights(load_file(str(path)), "ema." if ema else "model."))
    return model.eval(), info.get("text_encoder")


@torch.no_grad()
def binding_gap(model: torch.nn.Module, enc: TextEncoder, scenes: list, seed: int = 0,
                bins=T_BINS, paths: bool = False) -> pd.DataFrame:
    """One row per scene and t bin: category, t, loss (true caption), gap (swapped minus true), twin gain;
    with ``paths`` (a BaseUNet) also the loss with the caption through cross-attention alone
    (``loss_no_pooled``) and with no caption (``loss_uncond``): which path carries the text; for a
    ``KindHead`` (a scene-kind run) also its ``head_binding`` on x_t with the true caption."""
    model, head = (model.unet, model) if isinstance(model, KindHead) else (model, None)
    swaps = [swapped_scene(s, flip_relation=i % 4 < 2) for i, s in enumerate(scenes)]
    x0, x0_swap = scene_images(scenes, model.cfg.image_size), scene_images(swaps, model.cfg.image_size)
    true_tok, swap_tok = enc.encode([s.caption for s in scenes]), enc.encode([w.caption for w in swaps])
    g, rows = torch.Generator().manual_seed(seed), []
    for lo, hi in bins:
        t = lo + (hi - lo) * torch.rand(len(scenes), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        x_t, v = q_sample(x0, t, eps), training_target(x0, eps, t, "v")
        loss = [row_mse(model(x_t, t, *tok), v) for tok in (true_tok, swap_tok)]
        ideal = twin_gain(x_t, t, x0, x0_swap)
        extra = text_paths(model, x_t, t, v, true_tok) if paths else {}
        if head is not None:
            extra["head_binding"] = head_binding(head(x_t, t, *true_tok)[1], kind_maps(scenes, x0.shape[-1]))
        for i, (s, ti, l0, l1, gain) in enumerate(zip(scenes, t.tolist(), *loss, ideal.tolist())):
            rows.append({"category": s.category, "t_bin": f"{lo:.2f}-{hi:.2f}", "t": ti, "loss": float(l0),
                         "gap": float(l1 - l0), "twin_gain": gain, **{k: float(c[i]) for k, c in extra.items()}})
    return pd.DataFrame(rows)


def text_paths(model: torch.nn.Module, x_t, t, v, tokens) -> dict[str, torch.Tensor]:
    """Per row: the v-loss without the pooled text vector (cross-attention alone) and without the caption."""
    every = torch.ones(len(t), dtype=torch.bool)
    return {"loss_no_pooled": row_mse(model(x_t, t, *tokens, drop_pooled=every), v),
            "loss_uncond": row_mse(model(x_t, t, *tokens, drop_text=every), v)}


def twin_gain(x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor, x0_swap: torch.Tensor) -> torch.Tensor:
    """Per row: the v-loss the ideal denoiser loses by not knowing whether x_t came from x0 or x0_swap."""
    alpha, sigma = (a[:, None, None, None] for a in alpha_sigma(t))
    def log_lik(x):
        return -(x_t - alpha * x).pow(2).sum(dim=(1, 2, 3)) / (2 * sigma.flatten() ** 2)
    p = torch.sigmoid(log_lik(x0) - log_lik(x0_swap))[:, None, None, None]
    return ((p * x0 + (1 - p) * x0_swap - x0) / sigma).pow(2).mean(dim=(1, 2, 3))


def summarise(per_scene: pd.DataFrame) -> pd.DataFrame:
    """Per category and t bin: n, mean loss, mean gap with a 95% normal interval, share of gap > 0."""
    g = per_scene.groupby(["category", "t_bin"])
    more = {c: (c, "mean") for c in ("loss_no_pooled", "loss_uncond", "head_binding") if c in per_scene}
    out = g.agg(n=("gap", "size"), loss=("loss", "mean"), **more, gap=("gap", "mean"), sd=("gap", "std"),
                p_positive=("gap", lambda x: float((x > 0).mean())), twin_gain=("twin_gain", "mean"))
    half = 1.96 * out["sd"] / out["n"].pow(0.5)
    out["gap_lo"], out["gap_hi"] = out["gap"] - half, out["gap"] + half
    return out.drop(columns="sd").reset_index()


def load(checkpoint: str, text_encoder: dict, ema: bool = False) -> tuple[torch.nn.Module, TextEncoder]:
    """``load_base`` and its text encoder, refusing an encoder other than the one it was trained with."""
    model, trained_with = load_base(checkpoint, ema)
    enc = TextEncoder(TextEncoderConfig(**text_encoder))
    if trained_with and trained_with != enc.id:
        raise ValueError(f"{checkpoint} was trained with text encoder {trained_with}, this probe would use "
                         f"{enc.id}: set text_encoder (e.g. text_encoder.kind=random for the control base)")
    return model, enc


def run(checkpoint: str, text_encoder: dict, n: int = 128, seed: int = 0, ema: bool = False) -> pd.DataFrame:
    """The summary table for a checkpoint."""
    model, enc = load(checkpoint, text_encoder, ema)
    return measure(model, enc, probe_scenes(n, seed), seed)


def measure(model: torch.nn.Module, enc: TextEncoder, scenes: list, seed: int) -> pd.DataFrame:
    """The summary table (with the text paths for the built-in base)."""
    return summarise(binding_gap(model, enc, scenes, seed, paths=isinstance(stage_of(model), BaseUNet)))


def main() -> None:
    import hydra  # command line only: hydra and omegaconf are slow to import
    from omegaconf import DictConfig, OmegaConf

    if not any(a.startswith("-") for a in sys.argv[1:]) and missing_arguments(sys.argv[1:], ("checkpoint",)):
        print("bench.binding_gap: missing checkpoint; usage: python -m bench.binding_gap checkpoint=FILE "
              "[text_encoder.kind=random n=128 seed=0 ema=false order_t=0.97 order_w=3 order_draws=4 "
              "out=FILE.csv]", file=sys.stderr)
        sys.exit(2)

    @hydra.main(version_base="1.3", config_path="../conf", config_name="binding_gap")
    def _main(cfg: DictConfig) -> None:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        try:
            model, enc = load(cfg.checkpoint, OmegaConf.to_container(cfg.text_encoder, resolve=True), cfg.ema)
            scenes = probe_scenes(cfg.n, cfg.seed)
            table = measure(model, enc, scenes, cfg.seed)
            rows = first_step_order(stage_of(model), enc, scenes, cfg.order_t, cfg.order_w, cfg.order_draws, cfg.seed)
            order = order_summary(rows)
        except (CheckpointError, ValueError, OSError) as e:
            print(f"bench.binding_gap: {e}", file=sys.stderr)
            sys.exit(2)
        pd.set_option("display.width", 160)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        print(f"first step (bench.first_step; Positional, pure noise at t = {cfg.order_t}, w = {cfg.order_w}): "
              f"order {order['order']:.3f} ({order['order_lo']:.3f}-{order['order_hi']:.3f}) of {order['n']} "
              f"scenes, margin {order['margin']:.4f}")
        for r in order_by_relation(rows).itertuples():
            print(f"  {r.relation}: order {r.order:.3f} ({r.order_lo:.3f}-{r.order_hi:.3f}) of {r.n}, "
                  f"margin {r.margin:.4f}")
        if cfg.out:
            table.to_csv(cfg.out, index=False)
            print(f"written: {cfg.out}")

    _main()


if __name__ == "__main__":
    main()
