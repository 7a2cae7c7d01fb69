"""Train one cascade stage on shapes scenes rendered on the fly.

    python -m bench.train recipe=base            # text-to-image base stage
    python -m bench.train recipe=sr              # super-resolution stage (noise cond. aug.)

Classifier-free guidance training drops the text 10% of the time (paper section 2.2);
SR stages see their low-res input corrupted at a random aug_level (section 2.5).
Each step's data and noise are keyed by (seed, step), so a killed run resumes from its last
checkpoint and continues exactly (resume, loss log, EMA, warm-up and saving: ``bench.training``).
Weights are saved as safetensors: ``ema.safetensors`` (what sampling loads) and
``train_state.safetensors`` (model, EMA, Adam moments).
"""
from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from bench.scene_kinds import KindHead, kind_loss, kind_maps
from bench.shapes import (EXCHANGES, binding_swap, count_twin, drop_twin, positional_relations, reading_order, render_batch,
                          sample_scene, swapped_scene)
from bench.order_stop import UNTIL_JSON, OrderStop, reached
from bench.training import Loop, Trainer, load_weights, lr_schedule, setup, state_step
from imagen.checkpoint import build_stage, load_stage, save_stage
from imagen.schedule import alpha_sigma, q_sample, training_target
from imagen.text_encoder import TextEncoder, TextEncoderConfig

log = logging.getLogger("bench.train")
CL = torch.channels_last  # about 25% faster convolutions on CPU (oneDNN)


@dataclass
class Recipe:
    stage: str = "base"                 # base | sr
    arch: dict = field(default_factory=dict)
    image_size: int = 32
    lowres_size: int = 0
    prediction: str = "v"
    steps: int = 6000
    batch_size: int = 64
    lr: float = 3e-4
    warmup: int = 200
    ema_decay: float = 0.999
    text_drop: float = 0.1
    aug_level_max: float = 0.5
    grad_clip: float = 1.0
    # data: category weights (null: the grammar's CATEGORY_MIX) and one-object share of Colors
    category_mix: dict | None = None
    single_object: float = 0.6
    # Positional scenes' relations (null: all four). A curriculum: one relation first ("left of": the first
    # noun's colour goes left), then all four (docs/base_history.md "Positional in two phases")
    relations: list[str] | None = None
    # two-object Colors captions in reading order (bench.shapes.reading_order: the object further left
    # named first), so "A and B" places its nouns as "A to the left of B" does (false: either order)
    colors_in_reading_order: bool = False
    # loss: "none" (plain MSE on the target) or "min_snr" (Hang et al. 2023, weight min(SNR, gamma))
    loss_weighting: str = "none"
    min_snr_gamma: float = 5.0
    # time focus: this share of each batch draws t from U[lo, hi] instead of U[0, 1] (null: none).
    # On the cosine schedule a 32 px scene's binding lowers the loss only at t >~ 0.85: below, x_t itself
    # shows which colour sits where (bench.binding_gap's twin gain), so [0.85, 1] spends the steps there.
    time_focus: list[float] | None = None
    time_focus_share: float = 0.5
    # binding contrast: weight of a hinge that asks the caption's loss to beat, by binding_margin, the
    # loss of the same words bound differently (bench.shapes.binding_swap), on rows with
    # t >= binding_t_min (0: off). Each such row costs a second forward and backward pass.
    binding_contrast: float = 0.0
    binding_margin: float = 0.005
    binding_t_min: float = 0.6
    # pooled drop: this share of rows trains with the empty caption's pooled text vector in the time
    # embedding, so their caption arrives through cross-attention alone, the only path that can bind a
    # word to a place (0: off). Sampling keeps the pooled vector (paper 2.4).
    pooled_drop: float = 0.0
    # binding twins: the second half of each batch repeats the first half's binding scenes with the
    # same words bound otherwise (bench.shapes.swapped_scene: colours exchanged, or the relation
    # reversed and the objects' places exchanged), at the same t, noise and text drop. A bag of words
    # sees one caption's words with two images on the same x_t noise; only binding tells them apart.
    # The twins replace the second half's own scenes, so the batch holds fewer one-object and Counting
    # scenes than category_mix says (base_bind: Counting about 6% of rows, not 10%).
    binding_twins: bool = False
    # ... exchanging colours (the binding's colour differs where each object sits) or shapes first
    # (colours and places stay: the twins' x_t agree where x_t shows colours but not yet shapes)
    twin_exchange: str = "colors"
    # ... and each Counting scene of n >= 2 objects beside its count twin (bench.shapes.count_twin: the
    # last object taken away, n - 1 in the caption) at the same t, noise and text drop: the pair's
    # x_t agree but for one object and the captions but for the count word (false: Counting has no twin)
    count_twins: bool = False
    # ... and every other two-object Colors scene (odd row + step) beside its drop twin instead of its swapped
    # one (bench.shapes.drop_twin: the second object taken away, one object named)
    drop_twins: bool = False
    # the clear gap between a Counting scene's objects, as a fraction of the canvas (bench.shapes.scene._place).
    # Counting's failures are objects sampled touching and merged into one blob; a wider gap in training
    # asks for them apart
    count_gap: float = 0.06
    # scene kinds: weight of a per-pixel cross-entropy, from the base's last features through a
    # training-only head, on which (colour, shape) kind of x0 covers each pixel, on rows with their
    # caption (bench.scene_kinds; 0: off). ema.safetensors keeps the U-Net alone.
    scene_kinds: float = 0.0
    # ... with each object pixel weighted 1 + scene_kinds_objects (0: every pixel alike)
    scene_kinds_objects: float = 0.0
    # text-path learning rate: the caption's path into the base (text conditioning, null token,
    # cross-attention layers; bench.train.text_path) learns at lr times this (1: one rate for all).
    # A single cross-attention layer learns to read a relation's order from the tokens only after a
    # long plateau (docs/base_history.md).
    text_lr_scale: float = 1.0
    # warm start: a stage file (ema.safetensors) whose weights initialise model and EMA
    init_from: str | None = None
    # the next phase of a curriculum: another run's train_state.safetensors (model, EMA, AdamW moments,
    # kind head, step count) this run starts from when its out_dir holds no state of its own; `steps`
    # counts on from that run's. init_from is then not read.
    continue_from: str | None = None
    # a phase that ends when the order is learnt (bench.order_stop): every until_every steps, the EMA's
    # first-step order on bench.binding_gap's probe scenes; the phase stops once it is >= until_order and
    # `steps` is its cap (null: train all `steps`). The order phases escape a plateau at a step that
    # differs between runs (docs/base_history.md "The layout curriculum")
    until_order: float | None = None
    until_every: int = 200
    # after such a phase: train this many steps past continue_from's step (null: `steps` is the total,
    # counted on from there)
    steps_after: int | None = None
    # the last this many steps of the run: the learning rate falls linearly towards 0 (0: constant)
    cooldown: int = 0

    def __post_init__(self) -> None:
        if self.binding_contrast > 0 and self.stage != "base":
            raise ValueError("recipe.binding_contrast is for the base stage (an SR stage binds no words)")
        if (self.pooled_drop > 0 or self.binding_twins or self.scene_kinds > 0 or self.text_lr_scale != 1) \
                and self.stage != "base":
            raise ValueError("recipe.pooled_drop, binding_twins, scene_kinds and text_lr_scale are for the base stage")
        if self.cooldown < 0 or (self.cooldown and self.until_order is not None):
            raise ValueError("recipe.cooldown is a step count >= 0, for a phase of known length (not until_order)")
        if self.steps_after is not None and self.continue_from is None:
            raise ValueError("recipe.steps_after counts on from continue_from's step: set recipe.continue_from")
        if self.count_twins and not self.binding_twins:
            raise ValueError("recipe.count_twins pairs Counting scenes within binding_twins: set binding_twins: true")
        if self.drop_twins and not self.binding_twins:
            raise ValueError("recipe.drop_twins pairs Colors scenes within binding_twins: set binding_twins: true")
        if self.twin_exchange not in EXCHANGES:
            raise ValueError(f"recipe.twin_exchange must be one of {EXCHANGES}, not {self.twin_exchange!r}")
        try:
            positional_relations(self.relations)
        except ValueError as e:
            raise ValueError(f"recipe.{e}") from None


def batch_scenes(seed: int, step: int, batch: int, mix: dict | None = None, single_object: float = 0.6,
                 relations: list | None = None, colors_in_reading_order: bool = False,
                 count_gap: float = 0.06) -> list:
    """The scenes of one step (keyed by seed and step)."""
    rng, relations = random.Random(f"{seed}:{step}"), positional_relations(relations)
    scenes = [sample_scene(rng, mix=mix, single_object=single_object, relations=relations, count_gap=count_gap)
              for _ in range(batch)]
    return [reading_order(s) for s in scenes] if colors_in_reading_order else scenes


def scene_images(scenes: list, size: int) -> torch.Tensor:
    """The scenes rendered at ``size`` px, NCHW float in [-1, 1]."""
    return torch.from_numpy(render_batch(scenes, size)).permute(0, 3, 1, 2).float() / 127.5 - 1


def shapes_batch(seed: int, step: int, batch: int, size: int, lowres: int = 0,
                 mix: dict | None = None, single_object: float = 0.6):
    """Captions and images in [-1, 1] (and low-res images when ``lowres``) for one step (keyed by seed and step)."""
    scenes = batch_scenes(seed, step, batch, mix, single_object)
    return [s.caption for s in scenes], scene_images(scenes, size), scene_images(scenes, lowres) if lowres else None


def with_twins(scenes: list, step: int, exchange: str = "colors",
               count_twins: bool = False, drop_twins: bool = False) -> tuple[list, torch.Tensor]:
    """``scenes`` with row half + i replaced by the swapped twin of row i (where one exists; with
    ``count_twins`` a Counting row's count twin; with ``drop_twins`` a two-object Colors row at odd i + step
    its drop twin), and each row's source row (its own index, or its twin's) to share t, noise and text
    drop with."""
    half = len(scenes) // 2
    scenes, source = list(scenes), torch.arange(len(scenes))
    for i in range(half):
        twin = swapped_scene(scenes[i], flip_relation=(i + step) % 2 == 0, exchange=exchange)
        if drop_twins and (i + step) % 2 == 1:
            twin = drop_twin(scenes[i]) or twin
        if twin is None and count_twins:
            twin = count_twin(scenes[i])
        if twin is not None:
            scenes[half + i], source[half + i] = twin, i
    return scenes, source


def row_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per row (image) mean squared error, the diffusion loss before weighting."""
    return (pred - target).pow(2).mean(dim=(1, 2, 3))


def loss_weight(t: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """Per-example loss weight. min-SNR-gamma (Hang et al. 2023): the eps-loss weighted by
    min(SNR, gamma) / SNR; on the v target (whose loss is (SNR + 1) x the eps loss) this is
    min(SNR, gamma) / (SNR + 1)."""
    if recipe.loss_weighting == "none":
        return torch.ones_like(t)
    alpha, sigma = alpha_sigma(t)
    snr = alpha**2 / sigma.clamp(min=1e-8) ** 2
    w = snr.clamp(max=recipe.min_snr_gamma)
    return w / (snr + 1) if recipe.prediction == "v" else w / snr.clamp(min=1e-8)


def focus_times(t: torch.Tensor, recipe: Recipe, g: torch.Generator) -> torch.Tensor:
    """``t`` (uniform on [0, 1]) with a ``time_focus_share`` of rows mapped onto U[lo, hi].

    Draws from ``g`` only when a focus is set, so recipes without one keep their random stream."""
    if not recipe.time_focus:
        return t
    lo, hi = recipe.time_focus
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"recipe.time_focus must be [lo, hi] with 0 <= lo < hi <= 1, got {recipe.time_focus}")
    pick = torch.rand(t.shape[0], generator=g) < recipe.time_focus_share
    return torch.where(pick, lo + (hi - lo) * t, t)


def _warm_start(model: torch.nn.Module, path: str) -> None:
    """``model`` initialised from the stage file ``path`` (the same architecture, or the same base without
    coordinate inputs or queries, ``add_coords``, without self-attention, ``grow_self_attention``, or
    with cross-attention at fewer resolutions, ``bench.training.load_weights``)."""
    src, _ = load_stage(path)
    added = []
    for k in ("coords", "coord_queries"):
        has, wants = getattr(src.cfg, k, False), getattr(model.cfg, k, False)
        if has and not wants:
            raise ValueError(f"init_from {path}: a base with arch.{k}; set arch.{k}=true "
                             f"(shipped_model.stages.0.arch.{k}=true) to continue it")
        if wants and not has:
            added.append(k)
    if added:
        src = add_coords(src, added)
        log.info("%s added to %s (zero weights: the same function at step 0)", " and ".join(added), path)
    if getattr(model.cfg, "self_attention", False) and not src.cfg.self_attention:
        grow_self_attention(src, model)
        log.info("initialised from %s, self-attention added (zero output: the same function at step 0)", path)
        return
    grown = load_weights(model, src.state_dict())   # attention at more resolutions: grown as the identity
    log.info("initialised from %s%s", path, f", attention grown at {', '.join(grown)}" if grown else "")


def add_coords(src: torch.nn.Module, added: list[str]) -> torch.nn.Module:
    """The same base with coordinate inputs (``arch.coords``: their stem weights zero) and / or coordinate
    queries (``arch.coord_queries``: each cross-attention's ``q_pos``, as initialised, its last layer
    zero): the same function."""
    dst = build_stage("base", {**src.cfg.__dict__, **{k: True for k in added}})
    state = src.state_dict()
    if "coords" in added:
        w = state["stem.weight"]
        state["stem.weight"] = torch.cat([w, w.new_zeros(w.shape[0], 2, *w.shape[2:])], dim=1)
    missing, unexpected = dst.load_state_dict(state, strict=False)
    if unexpected or any(".q_pos." not in k for k in missing):
        raise ValueError(f"add_coords: unexpected {unexpected}, missing {missing}")
    return dst


def grow_self_attention(src: torch.nn.Module, dst: torch.nn.Module) -> None:
    """Copy a base without self-attention into the same base with it. Each block is [ResBlock,
    (self-attention), cross-attention]: the ResBlock and the cross-attention are copied, the new
    self-attention keeps its zero-initialised output projection, so ``dst`` computes what ``src`` did."""
    if replace(dst.cfg, self_attention=False) != replace(src.cfg, self_attention=False):
        raise ValueError(f"init_from: self-attention can be added only to the same architecture otherwise; "
                         f"the checkpoint has {src.cfg}, the recipe {dst.cfg}")
    for name in ("down", "mid", "up"):
        for a, b in zip(getattr(src, name), getattr(dst, name)):
            if isinstance(a, torch.nn.ModuleList):
                b[0].load_state_dict(a[0].state_dict())
                b[-1].load_state_dict(a[-1].state_dict())
            else:
                b.load_state_dict(a.state_dict())
    for name in ("time", "text", "stem", "out_norm", "out"):
        getattr(dst, name).load_state_dict(getattr(src, name).state_dict())
    dst.null_token.data.copy_(src.null_token.data)


def build_models(recipe: Recipe, seed: int, dev: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The stage to train and its EMA copy (same initial weights: seeded, or ``init_from``); with
    ``scene_kinds``, each wrapped in a ``KindHead`` (the stage is its ``unet``)."""
    torch.manual_seed(seed)   # initial weights
    model = build_stage(recipe.stage, recipe.arch)
    ema = build_stage(recipe.stage, recipe.arch).requires_grad_(False)
    if recipe.init_from and not recipe.continue_from:
        _warm_start(model, recipe.init_from)
    if recipe.scene_kinds > 0:
        model, ema = KindHead(model), KindHead(ema).requires_grad_(False)
    model, ema = model.to(dev, memory_format=CL), ema.to(dev, memory_format=CL)
    ema.load_state_dict(model.state_dict())
    return model, ema


def stage_of(model: torch.nn.Module) -> torch.nn.Module:
    """The cascade stage inside a trained module (a ``KindHead``'s U-Net, or the module itself)."""
    return model.unet if isinstance(model, KindHead) else model


@dataclass
class Draws:
    """One step's random draws, per row: time t, noise eps, text drop and the optional ones (SR:
    aug_level and its low-res noise; pooled_drop). Their order in the stream is fixed: see ``draw``."""

    t: torch.Tensor
    eps: torch.Tensor
    drop: torch.Tensor
    aug: torch.Tensor | None = None
    aug_eps: torch.Tensor | None = None
    drop_pooled: torch.Tensor | None = None

    def gather(self, source: torch.Tensor) -> "Draws":
        """Row i takes row ``source[i]``'s draws (a twin shares its scene's t, noise and drops)."""
        pick = lambda v: None if v is None else v[source]  # noqa: E731
        return Draws(*(pick(getattr(self, f)) for f in ("t", "eps", "drop", "aug", "aug_eps", "drop_pooled")))


def draw(recipe: Recipe, seed: int, step: int, shape: tuple, lowres_shape: tuple | None) -> Draws:
    """The draws of one step from one generator keyed by (seed, step), always in this order: t, eps, text
    drop, (SR) aug_level and its noise, the time focus, (pooled_drop) the pooled drop. An option draws
    only when set, so the recipes without it keep their stream."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    b = shape[0]
    t, eps = torch.rand(b, generator=g), torch.randn(shape, generator=g)
    d = Draws(t, eps, torch.rand(b, generator=g) < recipe.text_drop)
    if recipe.stage == "sr":
        d.aug = torch.rand(b, generator=g) * recipe.aug_level_max
        d.aug_eps = torch.randn(lowres_shape, generator=g)
    d.t = focus_times(d.t, recipe, g)
    if recipe.pooled_drop > 0:
        d.drop_pooled = torch.rand(b, generator=g) < recipe.pooled_drop
    return d


def diffusion_loss(model: torch.nn.Module, enc: TextEncoder, recipe: Recipe, seed: int, step: int,
                   dev: torch.device) -> torch.Tensor:
    """The (weighted) diffusion loss of one step, with the recipe's extra terms; data, times, noise and
    drops keyed by (seed, step)."""
    scenes = batch_scenes(seed, step, recipe.batch_size, recipe.category_mix, recipe.single_object,
                          recipe.relations, recipe.colors_in_reading_order, recipe.count_gap)
    source = None
    if recipe.binding_twins:
        scenes, source = with_twins(scenes, step, recipe.twin_exchange, recipe.count_twins, recipe.drop_twins)
    x0 = scene_images(scenes, recipe.image_size)
    lowres = scene_images(scenes, recipe.lowres_size) if recipe.lowres_size else None
    tokens, mask = enc.encode([s.caption for s in scenes])
    d = draw(recipe, seed, step, tuple(x0.shape), None if lowres is None else tuple(lowres.shape))
    extra: dict[str, Any] = {}
    if d.aug is not None:
        extra = {"lowres": q_sample(lowres, d.aug, d.aug_eps).to(dev, memory_format=CL), "aug_level": d.aug.to(dev)}
    if source is not None:
        d = d.gather(source)
    if d.drop_pooled is not None:
        extra["drop_pooled"] = d.drop_pooled.to(dev)
    x0, eps, t, drop = x0.to(dev, memory_format=CL), d.eps.to(dev, memory_format=CL), d.t.to(dev), d.drop.to(dev)
    x_t, target = q_sample(x0, t, eps), training_target(x0, eps, t, recipe.prediction)
    pred = model(x_t, t, tokens.to(dev), mask.to(dev), drop_text=drop, **extra)
    pred, logits = pred if recipe.scene_kinds > 0 else (pred, None)
    per_example = row_mse(pred, target)
    loss = (per_example * loss_weight(t, recipe).to(dev)).mean()
    if logits is not None:
        kinds = kind_maps(scenes, recipe.image_size).to(dev)
        loss = loss + recipe.scene_kinds * kind_loss(logits, kinds, ~drop, recipe.scene_kinds_objects)
    if recipe.binding_contrast > 0:
        loss = loss + recipe.binding_contrast * binding_hinge(model, enc, recipe, scenes, step, x_t, t, target,
                                                              per_example, drop, dev)
    return loss


def binding_hinge(model: torch.nn.Module, enc: TextEncoder, recipe: Recipe, scenes: list, step: int,
                  x_t: torch.Tensor, t: torch.Tensor, target: torch.Tensor, per_example: torch.Tensor,
                  drop: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """mean over eligible rows of relu(L(caption) - L(swapped caption) + margin): the model is asked to
    denoise better with the words bound as in the image than bound otherwise. Eligible: a swap exists,
    the text was not dropped, t >= binding_t_min. Positional rows alternate (by row and step) between a
    reversed relation and exchanged attributes."""
    negatives = [binding_swap(s, flip_relation=(i + step) % 2 == 0) for i, s in enumerate(scenes)]
    late = (t.detach().cpu() >= recipe.binding_t_min) & ~drop.cpu()   # one transfer, not one per row
    rows = [i for i, n in enumerate(negatives) if n is not None and bool(late[i])]
    if not rows:
        return per_example.sum() * 0.0
    tokens, mask = enc.encode([negatives[i] for i in rows])
    idx = torch.tensor(rows, device=dev)
    pred = stage_of(model)(x_t[idx], t[idx], tokens.to(dev), mask.to(dev))
    l_neg = row_mse(pred, target[idx])
    return torch.relu(per_example[idx] - l_neg + recipe.binding_margin).mean()


def text_path(name: str, module_of: dict[str, torch.nn.Module]) -> bool:
    """Whether parameter ``name`` is on the base's text path: its text conditioning (``text.*``: the tokens'
    norm and projection, and the pooled vector's), the null token, or a cross-attention layer
    (``Attention.is_cross``)."""
    parts = name.split(".")
    if parts[-1] == "null_token" or "text" in parts[:-1]:
        return True
    return any(getattr(module_of.get(".".join(parts[:i])), "is_cross", False) for i in range(1, len(parts)))


def param_groups(model: torch.nn.Module, text_lr_scale: float = 1.0) -> list[dict]:
    """One AdamW group (``text_lr_scale`` 1), or the text path's parameters (``text_path``) in a second
    group whose ``lr_scale`` the trainer multiplies its learning rate by."""
    if text_lr_scale == 1:
        return [{"params": list(model.parameters())}]
    module_of, rest, text = dict(model.named_modules()), [], []
    for name, p in model.named_parameters():
        (text if text_path(name, module_of) else rest).append(p)
    return [{"params": rest}, {"params": text, "lr_scale": text_lr_scale}]


def train(recipe: Recipe, out_dir: str | Path, seed: int = 0, device: str = "auto", threads: int = 0,
          ckpt_every: int = 100, max_minutes: float | None = None, text_encoder_cfg: dict | None = None) -> Path:
    """Train (or resume) one stage in ``out_dir``; returns its ``ema.safetensors``."""
    dev = setup(device, threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    enc = TextEncoder(TextEncoderConfig(**(text_encoder_cfg or {})))
    model, ema = build_models(recipe, seed, dev)
    opt = torch.optim.AdamW(param_groups(model, recipe.text_lr_scale), lr=recipe.lr, weight_decay=0.0)
    n_params = sum(p.numel() for p in stage_of(model).parameters())
    meta = {"recipe": recipe.__dict__, "seed": seed, "text_encoder": enc.id, "params": n_params}
    (out / "recipe.json").write_text(json.dumps(meta, indent=2, default=str))

    def save_ema(step: int, seconds: float, final: bool) -> None:
        save_stage(stage_of(ema), out / "ema.safetensors", recipe.stage, prediction=recipe.prediction,
                   image_size=recipe.image_size, lowres_size=recipe.lowres_size, text_encoder=enc.id,
                   train_steps=step, seed=seed, params=n_params, recipe=recipe.__dict__)

    stopped = reached(out) if recipe.until_order is not None else None
    if stopped:
        log.info("%s: the order phase stopped at step %d already (%s)", out, stopped["step"], UNTIL_JSON)
        return out / "ema.safetensors"
    steps = phase_steps(recipe)
    stop = None if recipe.until_order is None else OrderStop(
        stage_of(ema), enc, out, recipe.until_order, math.lcm(recipe.until_every, ckpt_every), steps, seed)
    core = Trainer(model, opt, out, meta, ema=ema, ema_decay=recipe.ema_decay, grad_clip=recipe.grad_clip)
    core.run(Loop(steps, ckpt_every, max_minutes, desc=f"train {recipe.stage}",
                  continue_from=recipe.continue_from, stop_when=stop),
             loss_at=lambda step: diffusion_loss(model, enc, recipe, seed, step, dev),
             lr_at=lambda step: lr_schedule(recipe.lr, step, recipe.warmup, steps, recipe.cooldown),
             on_save=save_ema)
    return out / "ema.safetensors"


def phase_steps(recipe: Recipe) -> int:
    """The step this run trains to: ``steps``, or ``steps_after`` past ``continue_from``'s step."""
    return recipe.steps if recipe.steps_after is None else state_step(recipe.continue_from) + recipe.steps_after


def main() -> None:
    import hydra  # command line only: hydra and omegaconf are slow to import
    from omegaconf import DictConfig, OmegaConf

    @hydra.main(version_base="1.3", config_path="../conf", config_name="train")
    def _main(cfg: DictConfig) -> None:
        r = OmegaConf.to_container(cfg.recipe, resolve=True)
        recipe = Recipe(**r)
        path = train(recipe, cfg.out_dir, seed=cfg.seed, device=cfg.device, threads=cfg.threads,
                     ckpt_every=cfg.ckpt_every, max_minutes=cfg.max_minutes,
                     text_encoder_cfg=OmegaConf.to_container(cfg.text_encoder, resolve=True))
        print(f"EMA weights: {path}")

    _main()


if __name__ == "__main__":
    main()
