"""Score a run directory: ``RUN/manifest.csv`` + images -> ``RUN/metrics.csv`` (one row per guidance weight
and category, plus ``all``), with N and confidence intervals on every row.

Columns (empty when not computable, never invented):

- ``fd``: Fréchet distance of the row's images to the reference stats, in the space named by
  ``fd_extractor``; ``fd_ci_low/high``: delete-a-group jackknife interval over the row's images for
  the expected FD at this N (reference fixed; ``bench.metrics.jackknife``); ``fd_reference``: which
  reference (dataset, split, N, resolution) and which group of it; ``fd_real``: the expected FD of
  as many *real* shapes images against the same reference, the mean over ``fd_real_draws`` independent
  real sets (the value a perfect model gets at this N; shapes only); ``fd_excess`` (+ CI) = fd - fd_real,
  comparable across N; ``fd_inf``: FD-infinity (Chong & Forsyth 2020), rows of at least ``fd_inf_min_n`` images.
- ``kid`` / ``kid_std`` / ``kid_se``: KID (cubic kernel, unbiased) in the FD feature space, mean /
  spread over subsets of ``kid_subset_size`` images / jackknife standard error over the row's images.
- ``precision`` / ``recall`` / ``density`` / ``coverage`` (k = ``prdc_k``): Kynkäänniemi et al. 2019
  and Naeem et al. 2020 in the FD feature space, against the reference group's images.
- ``cmmd`` (+ CI): CMMD (RBF sigma 10, x1000) on ``cmmd_model`` embeddings, estimator
  ``cmmd_estimator`` (default unbiased: comparable across N).
- ``clip_score`` (+ CI): mean over images of max(100 cos, 0), backbone ``clip_model``.
- ``alignment`` (+ CI): fraction of images the exact shapes detector (``bench.shapes.detect``)
  scores correct; ``color_alignment``: fraction with every requested colour present.
- ``out_of_domain``: True when shapes-CLIP measured prompts that are not shapes scenes (no ground
  truth, e.g. DrawBench); ``fd_extractor`` / ``clip_model`` then end in "(out-of-domain)".

Per-category rows of a shapes reference use that category's reference stats; other rows use the
whole reference. Image decoding runs in a thread pool while the models run.

Image sizes: a run of one square size N x N (every ``bench.run``) is scored as such, with reference
statistics at N. Images of several sizes (or not square; e.g. a folder scored by ``bench.score``)
reach every extractor at their own size, resized by that extractor's own rule (``resize`` in
metrics.json), images of one size batched together within each batch; the exact detector reads
each image at its own size; the reference statistics are at the shorter side of the most common
size. metrics.json states this under ``mixed_sizes``.

Beside the table: ``RUN/image_scores.csv`` (per image: CLIP score and the exact scorer's verdict)
and ``RUN/image_metrics.safetensors`` (``bench.metrics.image_cache``: per-image features and
verdicts, so that rescoring embeds and checks only images it has not seen).

    python -m bench.metrics.score_run RUN_DIR [metrics.KEY=VALUE ...]
"""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf
from PIL import Image
from tqdm import tqdm

from bench import rundir
from bench.distributed import Dist, current
from bench.rundir import METRICS_COLUMNS as COLUMNS
from bench.shapes import detect
from bench.shapes.scene import Scene

from . import jackknife
from .bootstrap import bootstrap_mean_ci
from .clip_score import clip_score_per_image
from .definitions import conventions, definitions
from .cmmd import CMMD_SIGMA, CMMDReference, reference_self_mean
from .extractors import FeatureExtractor, ImageTextEncoder, OpenClipExtractor, ShapesClipExtractor, build_extractor
from .frechet import FrechetReference, FrechetStats, fd_bootstrap, fd_inf, fd_jackknife
from .image_cache import ImageCache, batch_key, code_digest, extractor_key, scene_key
from .kid import KIDReference
from .prdc import PRDCReference, knn_radii
from .refstats import RefStats, coco_refstats, npz_refstats, real_fd_floor, shapes_refstats

log = logging.getLogger(__name__)

OOD = " (out-of-domain)"
FLUSH_S = 60.0  # the per-image cache is saved at least this often during the image pass


@dataclass
class MetricsConfig:
    """Mirrors ``conf/metrics/default.yaml``; see that file for what each key means."""

    enabled: bool = True
    fd_extractor: Literal["shapes_clip", "inception", "clip", "none"] = "shapes_clip"
    clip_backbone: Literal["shapes_clip", "clip", "none"] = "shapes_clip"
    shapes_clip_path: str | None = None
    clip_model: str = "ViT-B-32"
    clip_pretrained: str | None = None
    inception_weights: str | None = None
    reference: str = "shapes"
    coco_images: str | None = None
    ref_n: int = 5000
    ref_seed: int = 0
    ref_compute: bool = True
    cache_dir: str | None = None
    real_baseline: bool = True
    fd_real_draws: int = 20
    fd_interval: Literal["jackknife", "bootstrap"] = "jackknife"
    fd_jackknife_groups: int = 50
    fd_bootstrap: int = 50
    fd_inf: bool = True
    fd_inf_min_n: int = 100
    kid: bool = True
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    prdc: bool = True
    prdc_k: int = 3
    prdc_ref_n: int = 5000
    cmmd: bool = True
    cmmd_estimator: Literal["biased", "unbiased"] = "unbiased"
    alignment: bool = True
    bootstrap: int = 1000
    ci_level: float = 0.95
    pareto_fd: Literal["fd", "fd_excess", "fd_inf"] = "fd"
    seed: int = 0
    batch_size: int = 64
    workers: int = 2
    device: str = "auto"

    def __post_init__(self) -> None:
        choices = {"fd_extractor": ("shapes_clip", "inception", "clip", "none"),
                   "clip_backbone": ("shapes_clip", "clip", "none"), "cmmd_estimator": ("biased", "unbiased"),
                   "fd_interval": ("jackknife", "bootstrap"), "pareto_fd": ("fd", "fd_excess", "fd_inf")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"metrics.{key}={getattr(self, key)!r}: expected one of {allowed}")
        self.fd_real_draws = int(self.fd_real_draws)
        if self.fd_real_draws < 2:  # their spread is fd_excess's floor error
            raise ValueError(f"metrics.fd_real_draws={self.fd_real_draws}: expected at least 2")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MetricsConfig":
        """From a plain dict (e.g. the resolved Hydra ``metrics`` group); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown metrics config keys {unknown}; known: {sorted(names)}")
        return cls(**dict(d))


@dataclass
class _Models:
    fd: FeatureExtractor | None = None
    clip: ImageTextEncoder | None = None
    scorer: Callable[[np.ndarray, Any], dict] | None = None
    extractors: dict[str, FeatureExtractor] = field(default_factory=dict)  # name -> extractor, run once per image


def _build_models(cfg: MetricsConfig, needs_alignment: bool) -> _Models:
    """Every model first, so a missing weights file fails before any image is read."""
    m = _Models()
    common = dict(inception_weights=cfg.inception_weights, clip_model=cfg.clip_model,
                  clip_pretrained=cfg.clip_pretrained, shapes_clip_path=cfg.shapes_clip_path, device=cfg.device,
                  batch_size=cfg.batch_size)
    if cfg.fd_extractor != "none":
        m.fd = build_extractor(cfg.fd_extractor, **common)
    if cfg.clip_backbone == "clip":
        m.clip = m.fd if isinstance(m.fd, OpenClipExtractor) else OpenClipExtractor(
            cfg.clip_model, cfg.clip_pretrained, cfg.device, cfg.batch_size)
    elif cfg.clip_backbone == "shapes_clip":
        m.clip = (m.fd.with_features("embedding") if isinstance(m.fd, ShapesClipExtractor) else
                  ShapesClipExtractor(cfg.shapes_clip_path, cfg.device, cfg.batch_size, features="embedding"))
    for e in (m.fd, m.clip):
        if e is not None:
            m.extractors[e.name] = e
    if cfg.alignment and needs_alignment:
        m.scorer = detect.score  # looked up at call time: the module's current scorer
    return m


def _reference(cfg: MetricsConfig, ext: FeatureExtractor, resolution: int) -> RefStats | None:
    if cfg.reference == "shapes":
        return shapes_refstats(ext, cfg.ref_n, resolution, cfg.ref_seed, cfg.cache_dir, cfg.ref_compute,
                               batch_size=max(cfg.batch_size, 256))
    if cfg.reference == "coco":
        return coco_refstats(ext, cfg.coco_images, cfg.ref_n, resolution, cfg.cache_dir, cfg.ref_compute,
                             cfg.batch_size, cfg.workers)
    return npz_refstats(cfg.reference, ext)


def _load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def decode_chunks(chunks: list[list[Path]], workers: int, size: int | None = None,
                  mixed: bool = False) -> Iterator[np.ndarray | list[np.ndarray]]:
    """One uint8 (B, H, W, 3) array per chunk of paths, in order; the next chunk decodes in a thread pool while
    this one is used. With ``size``, an image that is not ``size`` x ``size`` raises ValueError naming it.
    A chunk of images of different sizes raises ValueError, or with ``mixed`` is yielded as a list of
    (H, W, 3) arrays."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        pending = deque([pool.submit(_load_rgb, p) for p in c] for c in chunks[:2])
        nxt = 2
        for chunk in chunks:
            futures = pending.popleft()
            if nxt < len(chunks):
                pending.append([pool.submit(_load_rgb, p) for p in chunks[nxt]])
                nxt += 1
            arrays = [f.result() for f in futures]
            if size is not None:
                for p, a in zip(chunk, arrays):
                    if a.shape[:2] != (size, size):
                        raise ValueError(f"{p} is {a.shape[1]}x{a.shape[0]}, the manifest says {size}x{size}: "
                                         "the file was replaced; delete it and resume the run to regenerate it")
            shapes = {a.shape for a in arrays}
            if len(shapes) > 1 and mixed:
                yield arrays
                continue
            if len(shapes) > 1:
                raise ValueError(f"images of different sizes {sorted(shapes)} in one run, e.g. {chunk[0]}")
            yield np.stack(arrays)


def _features(ext: FeatureExtractor, batch: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """``ext`` on a batch: one (B, H, W, 3) array, or a list of images of several sizes (each size's
    images go through ``ext`` together, in first-seen order; rows come back in batch order)."""
    if isinstance(batch, np.ndarray):
        return ext(torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()).numpy()
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, a in enumerate(batch):
        groups.setdefault(a.shape, []).append(i)
    out: np.ndarray | None = None
    for idx in groups.values():
        x = ext(torch.from_numpy(np.stack([batch[i] for i in idx])).permute(0, 3, 1, 2).contiguous()).numpy()
        if out is None:
            out = np.empty((len(batch), x.shape[1]), dtype=x.dtype)
        out[idx] = x
    assert out is not None
    return out


def _check_sizes(paths: list[Path], batch: np.ndarray | list[np.ndarray], sizes: list[tuple[int, int]]) -> None:
    """Every decoded image has the (width, height) its manifest row states."""
    for p, a, (w, h) in zip(paths, batch, sizes):
        if a.shape[:2] != (h, w):
            raise ValueError(f"{p} is {a.shape[1]}x{a.shape[0]}, the manifest says {w}x{h}: the file was replaced")


def _extract_all(run_dir: Path, man: pd.DataFrame, cfg: MetricsConfig, models: _Models, size: int,
                 cache: ImageCache, flush: Callable[[], None] | None = None,
                 ck: CacheKeys | None = None, mixed: bool = False) -> tuple[dict[str, np.ndarray], list[dict | None]]:
    """One pass over the images: features of every extractor, and the exact scorer's verdicts.

    Batches are fixed slices of the manifest order. A batch whose every feature and verdict is in
    ``cache`` (``bench.metrics.image_cache``) under the same key is not even decoded;
    what is computed goes into the cache, and ``flush`` saves it at most once a minute.
    With ``mixed`` (images of several sizes, see ``image_sizes``) each image keeps its size and each
    extractor resizes it by its own rule.
    """
    digests, scenes, ext_keys, spans, keys = ck or cache_keys(run_dir, man, cfg, models)
    paths = [run_dir / p for p in man["path"]]
    rows = man[["truth", "prompt"]].to_dict("records")
    n = len(paths)
    feats = {name: [None] * len(spans) for name in models.extractors}
    verdicts: list[dict | None] = [None] * n
    todo = []
    for j, (a, b) in enumerate(spans):
        for name, ek in ext_keys.items():
            got = [cache.feature(ek, d, keys[j]) for d in digests[a:b]]
            if all(x is not None for x in got):
                feats[name][j] = np.stack(got)
        for i in range(a, b):
            if scenes[i]:
                verdicts[i] = cache.verdict(digests[i], scenes[i])
        if any(feats[name][j] is None for name in feats) or any(scenes[i] and verdicts[i] is None
                                                                 for i in range(a, b)):
            todo.append(j)
    if len(todo) < len(spans):
        log.info("metrics: %d of %d images found in %s", n - sum(b - a for a, b in (spans[j] for j in todo)), n,
                 run_dir / rundir.IMAGE_CACHE)
    bar = tqdm(total=sum(spans[j][1] - spans[j][0] for j in todo), desc="metrics", unit="img", dynamic_ncols=True)
    last_flush = time.monotonic()
    wh = _manifest_sizes(man) if mixed and {"width", "height"} <= set(man.columns) else []
    chunks = [paths[slice(*spans[j])] for j in todo]
    for j, batch in zip(todo, decode_chunks(chunks, cfg.workers, None if mixed else size, mixed=mixed)):
        a, b = spans[j]
        if wh:
            _check_sizes(paths[a:b], batch, wh[a:b])
        for name, ext in models.extractors.items():
            if feats[name][j] is None:
                feats[name][j] = _features(ext, batch)
                for i in range(a, b):
                    cache.put_feature(ext_keys[name], digests[i], keys[j], feats[name][j][i - a])
        # the exact scorer stays on this thread: on a thread of its own beside torch's it was slower (2 cores)
        for i in range(a, b):
            if scenes[i] and verdicts[i] is None:
                verdicts[i] = _verdict(models.scorer, batch[i - a], rows[i])
                cache.put_verdict(digests[i], scenes[i], verdicts[i])
        bar.update(b - a)
        if flush is not None and cache.dirty and time.monotonic() - last_flush > FLUSH_S:
            flush()
            last_flush = time.monotonic()
    bar.close()
    return {k: np.concatenate(v) for k, v in feats.items()}, verdicts


CacheKeys = tuple[list[str], list[str], dict[str, str], list[tuple[int, int]], list[str]]


def cache_keys(run_dir: Path, man: pd.DataFrame, cfg: MetricsConfig, models: _Models) -> CacheKeys:
    """Image digests, scene keys ("" where no verdict is due), extractor keys, batch spans and batch keys."""
    paths = [run_dir / p for p in man["path"]]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} images listed in {run_dir / rundir.MANIFEST} are missing, "
                                f"e.g. {missing[0]}")
    digests = [rundir.file_sha256(p) for p in paths]
    version = code_digest(models.scorer) if models.scorer else ""
    scenes = [scene_key(p, t, version) if t and version else "" for p, t in zip(man["prompt"], man["truth"])]
    ext_keys = {name: extractor_key(ext) for name, ext in models.extractors.items()}
    n, bs = len(man), cfg.batch_size
    spans = [(i, min(i + bs, n)) for i in range(0, n, bs)]
    return digests, scenes, ext_keys, spans, [batch_key(digests[a:b], bs) for a, b in spans]


def remember(cache: ImageCache, run_dir: Path, man: pd.DataFrame, cfg: MetricsConfig, models: _Models,
             feats: dict[str, np.ndarray], verdicts: list[dict | None], ck: CacheKeys | None = None) -> None:
    """Put a finished image pass into ``cache``, keep only this run's images there, and save it if it changed."""
    digests, scenes, ext_keys, spans, keys = ck or cache_keys(run_dir, man, cfg, models)
    for j, (a, b) in enumerate(spans):
        for i in range(a, b):
            for name, ek in ext_keys.items():
                cache.put_feature(ek, digests[i], keys[j], feats[name][i])
            if scenes[i] and verdicts[i] is not None:
                cache.put_verdict(digests[i], scenes[i], verdicts[i])
    cache.keep_only(set(digests))
    if cache.dirty or not (run_dir / rundir.IMAGE_CACHE).is_file():
        cache.save(run_dir)


def _verdict(scorer: Callable | None, image: np.ndarray, row: dict[str, Any]) -> dict | None:
    if scorer is None or not row["truth"]:
        return None
    return scorer(image, Scene.from_json(row["truth"], row["prompt"]))


def _manifest_sizes(man: pd.DataFrame) -> list[tuple[int, int]]:
    return list(zip(man["width"].astype(int), man["height"].astype(int)))


@dataclass(frozen=True)
class ImageSizes:
    """The image sizes of a run: ``resolution`` is the side of its reference statistics; ``mixed`` when the
    images are not all one square size (then each extractor resizes each image by its own rule)."""

    resolution: int
    mixed: bool
    counts: dict[str, int]  # "WxH" -> number of images, most common first

    def describe(self) -> dict[str, Any]:
        """metrics.json's ``mixed_sizes`` entry."""
        return {"sizes": self.counts, "reference_resolution": self.resolution,
                "rule": "each image reaches every extractor at its own size and is resized by that extractor's "
                        "own rule (extractors.*.resize); images of one size are batched together within each "
                        "batch of batch_size; the exact shapes detector reads each image at its own size; "
                        f"reference statistics are at {self.resolution}x{self.resolution}, the shorter side of "
                        "the most common size"}


def image_sizes(run_dir: Path, man: pd.DataFrame) -> ImageSizes:
    """From the manifest's width / height (without them: the first image's size, for every image)."""
    if {"width", "height"} <= set(man.columns) and len(man):
        sizes = _manifest_sizes(man)
    else:
        h, w = _load_rgb(run_dir / man["path"].iloc[0]).shape[:2]
        sizes = [(w, h)] * len(man)
    counts: dict[tuple[int, int], int] = {}
    for s in sizes:
        counts[s] = counts.get(s, 0) + 1
    # most common first; ties: the larger size, then the earlier one in the manifest
    ranked = sorted(counts, key=lambda s: (-counts[s], -s[0] * s[1]))
    w, h = ranked[0]
    mixed = len(counts) > 1 or w != h
    return ImageSizes(min(w, h), mixed, {f"{w}x{h}": counts[(w, h)] for w, h in ranked})


class _Scorer:
    """Computes one metrics row from row indices, caching everything shared between rows."""

    def __init__(self, cfg: MetricsConfig, man: pd.DataFrame, models: _Models, feats: dict[str, np.ndarray],
                 verdicts: list[dict | None], refs: dict[str, RefStats], resolution: int) -> None:
        self.cfg, self.man, self.models, self.feats, self.verdicts = cfg, man, models, feats, verdicts
        self.refs, self.resolution = refs, resolution
        self.in_domain = (man["truth"] != "").to_numpy()
        self._fd_refs: dict[str, FrechetReference] = {}
        self._cmmd_refs: dict[str, CMMDReference] = {}
        self._kid_refs: dict[str, KIDReference] = {}
        self._prdc_refs: dict[str, PRDCReference | None] = {}
        self._fd_real: dict[tuple[str, int], tuple[float, float]] = {}
        self.clip_scores = self._clip_scores()

    def _clip_scores(self) -> np.ndarray | None:
        enc = self.models.clip
        if enc is None:
            return None
        prompts = sorted(set(self.man["prompt"]))
        text = enc.text_features(prompts).numpy()
        index = {p: i for i, p in enumerate(prompts)}
        text_per_image = text[[index[p] for p in self.man["prompt"]]]
        return clip_score_per_image(self.feats[enc.name], text_per_image)

    def row(self, w: float, category: str, idx: np.ndarray) -> dict[str, Any]:
        cfg = self.cfg
        ood = bool(not self.in_domain[idx].all())
        row: dict[str, Any] = {c: np.nan for c in COLUMNS}
        row.update(guidance_weight=w, category=category, num_images=int(idx.size), out_of_domain=ood,
                   fd_extractor="", fd_reference="", cmmd_estimator="", cmmd_model="", clip_model="")
        fd_ext, clip = self.models.fd, self.models.clip
        if fd_ext is not None:
            self._fd_columns(row, category, idx, fd_ext, ood)
        if clip is not None:
            label = clip.name + (OOD if ood and isinstance(clip, ShapesClipExtractor) else "")
            row["clip_model"] = label
            s = self.clip_scores[idx]
            row["clip_score"] = float(s.mean())
            row["clip_score_ci_low"], row["clip_score_ci_high"] = bootstrap_mean_ci(s, cfg.bootstrap, cfg.seed,
                                                                                    cfg.ci_level)
            if cfg.cmmd and "cmmd" in self.refs:
                row["cmmd_model"], row["cmmd_estimator"] = label, cfg.cmmd_estimator
                row["cmmd"], row["cmmd_ci_low"], row["cmmd_ci_high"] = self._cmmd_ref(category).distance_ci(
                    self.feats[clip.name][idx], cfg.ci_level)
        self._alignment_columns(row, idx)
        return row

    def _fd_columns(self, row: dict, category: str, idx: np.ndarray, ext: FeatureExtractor, ood: bool) -> None:
        cfg, ref = self.cfg, self.refs["fd"]
        group, stats = ref.stats(category)
        row["fd_extractor"] = ext.name + (OOD if ood and isinstance(ext, ShapesClipExtractor) else "")
        row["fd_reference"] = f"{ref.key.describe()} [{group}: n={stats.n}]"
        x = self.feats[ext.name][idx]
        if x.shape[0] >= 2:
            fref = self._fd_ref(group, stats)
            se, groups = self._fd_values(row, x, fref)
            if cfg.real_baseline and cfg.reference == "shapes" and not ood:
                self._floor_columns(row, group, ext, fref, se, groups)
        if ref.group_features(group) is not None:
            self._kid_columns(row, group, x)
            self._prdc_columns(row, group, x)

    def _fd_values(self, row: dict, x: np.ndarray, fref: FrechetReference) -> tuple[float, int]:
        """fd, its interval (``fd_interval``) and fd_inf; returns the jackknife's (se, G), (nan, 0) without it."""
        cfg = self.cfg
        se, groups = float("nan"), 0
        if cfg.fd_interval == "jackknife":
            row["fd"], row["fd_ci_low"], row["fd_ci_high"], se, groups = fd_jackknife(
                x, fref, cfg.fd_jackknife_groups, cfg.seed, cfg.ci_level)
        else:
            row["fd"] = fref.distance_features(x)
            row["fd_ci_low"], row["fd_ci_high"] = fd_bootstrap(x, fref, cfg.fd_bootstrap, cfg.seed, cfg.ci_level)
        if cfg.fd_inf:
            row["fd_inf"] = fd_inf(x, fref, cfg.fd_inf_min_n, cfg.seed)
        return se, groups

    def _floor_columns(self, row: dict, group: str, ext: FeatureExtractor, fref: FrechetReference, se: float,
                       groups: int) -> None:
        """fd_real (real images at this N), fd_excess = fd - fd_real, and its interval from both standard errors
        (independent image sets: se = sqrt(se_fd^2 + se_real^2); se_fd jackknife, se_real over the real sets)."""
        real, real_se = self._real_fd(group, int(row["num_images"]), ext, fref)
        row["fd_real"] = real
        row["fd_excess"] = row["fd"] - real
        if groups:
            row["fd_excess_ci_low"], row["fd_excess_ci_high"] = jackknife.interval(
                row["fd_excess"], float(np.hypot(se, real_se)), groups, self.cfg.ci_level)

    def _kid_columns(self, row: dict, group: str, x: np.ndarray) -> None:
        cfg = self.cfg
        if not cfg.kid:
            return
        if group not in self._kid_refs:
            self._kid_refs[group] = KIDReference(self.refs["fd"].group_features(group))
        kref = self._kid_refs[group]
        row["kid"], row["kid_std"], row["kid_subset_size"] = kref.kid(x, cfg.kid_subsets, cfg.kid_subset_size,
                                                                      cfg.seed)
        row["kid_se"] = kref.standard_error(x)

    def _prdc_columns(self, row: dict, group: str, x: np.ndarray) -> None:
        """precision, recall, density, coverage against the first ``prdc_ref_n`` reference images of the group."""
        if not self.cfg.prdc:
            return
        if group not in self._prdc_refs:
            ref, k = self.refs["fd"], self.cfg.prdc_k
            real = ref.group_features(group)[:self.cfg.prdc_ref_n].astype(np.float64)
            self._prdc_refs[group] = None if real.shape[0] <= k else PRDCReference(real, k, np.asarray(
                ref.derived_values(f"prdc_radii/{group}/k={k}/n={real.shape[0]}", lambda: knn_radii(real, k))))
        pref = self._prdc_refs[group]
        if pref is not None and x.shape[0] > pref.k:
            row.update(pref.compute(x), prdc_k=pref.k)

    def _fd_ref(self, group: str, stats: FrechetStats) -> FrechetReference:
        if group not in self._fd_refs:
            self._fd_refs[group] = FrechetReference.from_stats(stats)
        return self._fd_refs[group]

    def _cmmd_ref(self, category: str) -> CMMDReference:
        ref = self.refs["cmmd"]
        group, _ = ref.stats(category)
        if group not in self._cmmd_refs:
            feats, est = ref.group_features(group), self.cfg.cmmd_estimator
            k_yy = ref.derived(f"cmmd_k_yy/{group}/sigma={CMMD_SIGMA:g}/{est}",
                               lambda: reference_self_mean(feats, CMMD_SIGMA, est))
            self._cmmd_refs[group] = CMMDReference(feats, estimator=est, k_yy=k_yy)
        return self._cmmd_refs[group]

    def _real_fd(self, group: str, n: int, ext: FeatureExtractor, fref: FrechetReference) -> tuple[float, float]:
        """(expected FD of n real images against the reference group, its standard error): the mean over
        ``fd_real_draws`` independent real sets and sd / sqrt(draws); one set alone varies by about 17% at n = 60.
        A property of the reference, cached beside it."""
        if (group, n) not in self._fd_real:
            cfg = self.cfg
            streams = [f"{cfg.ref_seed}:{group}:{n}" + (f":{k}" if k else "") for k in range(cfg.fd_real_draws)]

            def compute() -> list[float]:
                return real_fd_floor(fref.distance_features, ext, n, self.resolution, streams,
                                     None if group == "all" else group, max(cfg.batch_size, 256)).tolist()

            name = f"fd_real/{group}/n={n}/streams={streams[0]}+{len(streams) - 1}"
            draws = np.asarray(self.refs["fd"].derived_values(name, compute))
            se = float(draws.std(ddof=1) / np.sqrt(len(draws)))
            self._fd_real[(group, n)] = (float(draws.mean()), se)
        return self._fd_real[(group, n)]

    def _alignment_columns(self, row: dict, idx: np.ndarray) -> None:
        vs = [self.verdicts[i] for i in idx if self.verdicts[i] is not None]
        if not vs:
            return
        correct = np.array([float(bool(v["correct"])) for v in vs])
        row["alignment"] = float(correct.mean())
        row["alignment_ci_low"], row["alignment_ci_high"] = bootstrap_mean_ci(correct, self.cfg.bootstrap,
                                                                              self.cfg.seed, self.cfg.ci_level)
        color = [float(bool(v["color_correct"])) for v in vs if "color_correct" in v]
        if color:
            row["color_alignment"] = float(np.mean(color))


def _references(cfg: MetricsConfig, models: _Models, resolution: int) -> dict[str, RefStats]:
    refs: dict[str, RefStats] = {}
    if models.fd is not None:
        refs["fd"] = _reference(cfg, models.fd, resolution)
    if cfg.cmmd and models.clip is not None:
        if models.fd is not None and models.clip.name == models.fd.name:
            refs["cmmd"] = refs["fd"]
        elif cfg.reference in ("shapes", "coco"):
            refs["cmmd"] = _reference(cfg, models.clip, resolution)
        else:
            log.warning("cmmd left empty: metrics.reference=%s holds %s features, not %s embeddings",
                        cfg.reference, refs["fd"].key.extractor if "fd" in refs else "other", models.clip.name)
        if "cmmd" in refs and refs["cmmd"].features is None:
            log.warning("cmmd left empty: the reference file has no per-image features")
            del refs["cmmd"]
    return refs


def score_run(run_dir: Path, cfg: MetricsConfig, dist: Dist | None = None) -> pd.DataFrame | None:
    """Compute the metrics table of a run; write ``RUN/metrics.csv``, ``metrics.json`` and ``image_scores.csv``
    atomically, and keep per-image results in ``RUN/image_metrics.safetensors`` for the next scoring.

    Under a process group (``dist``, default: the running one) the image pass (decoding, feature
    extraction, exact scorer) is split over ranks by whole batches of ``cfg.batch_size`` (every batch
    has the shape it has in one process), the per-image results are gathered to rank 0, and rank 0
    computes and writes the table, which equals a one-process scoring at the same thread count.
    Every rank builds the models first, so a missing weights file fails everywhere at once.
    Returns the table on rank 0, None elsewhere.
    """
    run_dir, dist = Path(run_dir), dist or current()
    man = rundir.read_manifest(run_dir, required=("path", "prompt", "category", "guidance_weight"))
    if len(man) == 0:
        raise ValueError(f"{run_dir / rundir.MANIFEST} lists no images")
    models = _build_models(cfg, needs_alignment=bool((man["truth"] != "").any()))
    sizes = image_sizes(run_dir, man)
    resolution = sizes.resolution
    refs = _references(cfg, models, resolution) if dist.world == 1 else None
    cache = ImageCache.load(run_dir)  # every rank reads the per-image results of an earlier scoring
    ck = cache_keys(run_dir, man, cfg, models) if dist.world == 1 else None  # image digests: hashed once
    mine = shard_indices(len(man), cfg.batch_size, dist)
    parts = dist.gather(_extract_part(run_dir, man, cfg, models, sizes, cache, mine, dist, ck))
    if not dist.is_main:
        return None
    feats, verdicts = _merge_parts(parts, len(man))
    remember(cache, run_dir, man, cfg, models, feats, verdicts, ck)
    refs = refs if refs is not None else _references(cfg, models, resolution)
    scorer = _Scorer(cfg, man, models, feats, verdicts, refs, resolution)
    return write_outputs(run_dir, cfg, models, refs, scorer, sizes)


def shard_indices(n: int, batch_size: int, d: Dist) -> np.ndarray:
    """Row indices of this rank: whole batches ``rank::world`` of the one-process batching."""
    starts = list(range(0, n, batch_size))[d.rank::d.world]
    return np.asarray([i for s in starts for i in range(s, min(s + batch_size, n))], dtype=np.int64)


Part = tuple[np.ndarray, dict[str, np.ndarray], list]


def _extract_part(run_dir: Path, man: pd.DataFrame, cfg: MetricsConfig, models: _Models, sizes: ImageSizes,
                  cache: ImageCache, mine: np.ndarray, dist: Dist, ck: CacheKeys | None = None) -> Part:
    """This rank's rows of the image pass. One process saves the cache while it goes (a killed metric phase
    resumes from its last save); ranks save once, on rank 0, at the end."""
    if not mine.size:
        return mine, {}, []
    if dist.world == 1:
        feats, verdicts = _extract_all(run_dir, man, cfg, models, sizes.resolution, cache,
                                       lambda: cache.save(run_dir), ck, mixed=sizes.mixed)
    else:
        feats, verdicts = _extract_all(run_dir, man.iloc[mine].reset_index(drop=True), cfg, models, sizes.resolution,
                                       cache, mixed=sizes.mixed)
    return mine, feats, verdicts


def _merge_parts(parts: list[Part], n: int) -> tuple[dict[str, np.ndarray], list[dict | None]]:
    feats: dict[str, np.ndarray] = {}
    verdicts: list[dict | None] = [None] * n
    for idx, part_feats, part_verdicts in parts:
        for name, x in part_feats.items():
            if name not in feats:
                feats[name] = np.empty((n, x.shape[1]), dtype=x.dtype)
            feats[name][idx] = x
        for i, v in zip(idx.tolist(), part_verdicts):
            verdicts[i] = v
    return feats, verdicts


def metrics_table(scorer: "_Scorer") -> pd.DataFrame:
    """One row per guidance weight: ``all``, then each category in sorted order."""
    man = scorer.man
    weights, cats = man["guidance_weight"].to_numpy(), man["category"].to_numpy()
    rows = []
    for w in sorted(set(weights)):
        at_w = weights == w
        rows.append(scorer.row(float(w), "all", np.flatnonzero(at_w)))
        for cat in sorted(set(cats[at_w])):
            rows.append(scorer.row(float(w), cat, np.flatnonzero(at_w & (cats == cat))))
    return pd.DataFrame(rows, columns=COLUMNS)


def image_scores(scorer: "_Scorer") -> pd.DataFrame:
    """One row per image, in manifest order: its CLIP score and the exact scorer's verdict (empty when none)."""
    man = scorer.man
    out = man[[c for c in ("path", "prompt_id", "guidance_weight", "category", "seed") if c in man.columns]].copy()
    out["clip_score"] = scorer.clip_scores if scorer.clip_scores is not None else np.nan
    for col in ("correct", "color_correct"):
        out[col] = pd.array([None if v is None or col not in v else bool(v[col]) for v in scorer.verdicts],
                            dtype="boolean")
    return out


def write_outputs(run_dir: Path, cfg: MetricsConfig, models: _Models, refs: dict[str, RefStats],
                  scorer: "_Scorer", sizes: ImageSizes | None = None) -> pd.DataFrame:
    table = metrics_table(scorer)
    rundir.atomic_write_text(image_scores(scorer).to_csv(index=False), run_dir / rundir.IMAGE_SCORES)
    rundir.write_metrics(run_dir, table)
    rundir.atomic_write_text(json.dumps(_describe(cfg, models, refs, sizes), indent=2),
                             run_dir / rundir.METRICS_JSON)
    return table


def _describe(cfg: MetricsConfig, models: _Models, refs: dict[str, RefStats],
              sizes: ImageSizes | None = None) -> dict[str, Any]:
    """What every number in metrics.csv is: config, backbones, resizes, references, definitions (and, for
    images of several sizes, how they were resized: ``mixed_sizes``)."""
    mixed = {"mixed_sizes": sizes.describe()} if sizes is not None and sizes.mixed else {}
    return {
        **mixed,
        "config": dataclasses.asdict(cfg),
        "extractors": {name: {"dim": e.dim, "resize": e.resize} for name, e in models.extractors.items()},
        "references": {k: json.loads(r.key.to_json()) for k, r in refs.items()},
        "definitions": definitions(cfg),
        "conventions": conventions(),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.metrics.score_run RUN_DIR [metrics.KEY=VALUE ...]``: (re)score a finished run.

    The run's own ``.hydra/config.yaml`` metrics group is the base when present; overrides follow.
    """
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(main.__doc__, file=sys.stderr)
        return 2
    run_dir = Path(args[0])
    base: dict[str, Any] = (rundir.read_config(run_dir) or {}).get("metrics", {}) or {}
    over = OmegaConf.to_container(OmegaConf.from_dotlist([a.removeprefix("metrics.") for a in args[1:]]))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    table = score_run(run_dir, MetricsConfig.from_dict({**base, **over}))
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
