"""Export DrawBench pairs for blinded side-by-side human rating.

    python -m bench.pairs a=RUN_DIR b=RUN_DIR out=DIR [k=4 seed=0 guidance_weight_a=W ...]
    python -m bench.pairs runs=[RUN_A,RUN_B,RUN_C,...] out=DIR [design=all|balanced per_prompt=M ...]

DrawBench is judged by people (Imagen, Saharia et al. 2022): raters see a
set of images from model A and a set from model B for the same prompt and answer two
questions, "which set is of higher quality?" and "which set better represents the
caption?", each with A / indifferent / B. This module pairs two runs' images by
``prompt_id`` and ``sample_index`` (the same per-image seeds when the runs used the same
seed), takes ``k`` images per side, randomises left/right per pair with ``seed`` and
writes, under ``DIR``:

- ``img/``: the images, re-encoded as plain PNG (metadata stripped) under names derived
  from their pixels only, so a name reveals nothing about the run;
- ``pairs.csv``: blinded (pair_id, prompt_id, prompt, category, left/right images);
- ``mturk.csv``: one row per pair with image URLs (``base_url`` + relative path);
- ``index.html``: a self-contained rating page (see ``bench/web/rate.html``);
- ``key.csv``: the unblinding key (which side is A). Keep it, and ``.hydra/``, away from
  raters: publish only ``index.html`` and ``img/``;
- ``key_images.csv``: which run image each shown image is (pair, side, position -> run, path),
  for comparing automatic per-image metrics with the raters; unblinding, like ``key.csv``;
- ``design.json``: the models (blinded labels A, B, ... -> run, guidance weight), the design and
  how many prompts compare each model pair; unblinding, like ``key.csv``.

With ``runs=[...]`` (K runs) the export compares the runs two at a time: every pair of models on
every prompt (``design=all``), or ``per_prompt`` model pairs per prompt, balanced so every model
pair is compared on the same number of prompts up to one (``design=balanced``,
``bench.rate.design``). ``key.csv`` names the two models of each pair (``left_model``,
``right_model``: A, B, C, ...), and ``a_side`` is the side of the pair's first model in that
order. ``runs=[X,Y]`` is the same export as ``a=X b=Y``.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import hydra
from omegaconf import DictConfig, ListConfig
from PIL import Image

from bench import rundir
from bench.cli import missing_arguments
from bench.rate.design import DesignError, Plan, model_label, plan

Side = Literal["left", "right"]

MANIFEST_COLUMNS = ("path", "prompt_id", "prompt", "category", "guidance_weight", "sample_index")
PAIRS_COLUMNS = ("pair_id", "prompt_id", "prompt", "category", "left_images", "right_images", "export_id")
KEY_COLUMNS = ("pair_id", "prompt_id", "a_side", "left_model", "right_model", "left_run",
               "left_guidance_weight", "right_run", "right_guidance_weight")
IMAGE_KEY_COLUMNS = ("pair_id", "side", "position", "image", "model", "run", "path", "guidance_weight",
                     "sample_index")
IMAGE_KEY = "key_images.csv"
DESIGN = "design.json"
CONNECT_PLACEHOLDER = "__CONNECT_SRC__"
JSON_PLACEHOLDER = "__PAIRS_JSON__"
TEMPLATE = Path(__file__).parent / "web" / "rate.html"  # package data
_MAX_LISTED = 10


class PairsError(ValueError):
    """A run directory or export cannot be paired; the message names the file and what to do."""


@dataclass(frozen=True)
class ManifestImage:
    """One manifest row of a run: the image's absolute ``path`` and where it came from."""

    path: Path
    prompt_id: str
    prompt: str
    category: str
    guidance_weight: float
    sample_index: int
    line: int


@dataclass(frozen=True)
class Pair:
    """One prompt's comparison: ``k`` images from run A and from run B, and the side A is shown on."""

    prompt_id: str
    prompt: str
    category: str
    a_images: tuple[ManifestImage, ...]
    b_images: tuple[ManifestImage, ...]
    a_side: Side


@dataclass(frozen=True)
class BlindPair:
    """A row of ``pairs.csv``: what raters may see (image paths relative to the export)."""

    pair_id: str
    prompt_id: str
    prompt: str
    category: str
    left_images: tuple[str, ...]
    right_images: tuple[str, ...]
    export_id: str


@dataclass(frozen=True)
class KeyRow:
    """A row of ``key.csv``: which side of a pair shows model A."""

    pair_id: str
    prompt_id: str
    a_side: Side
    left_run: str
    right_run: str
    left_guidance_weight: str = ""
    right_guidance_weight: str = ""
    left_model: str = ""
    right_model: str = ""

    def run_label(self, model: Literal["A", "B"]) -> str:
        """``RUN_DIR (w=W)`` of model A or B (the pair's first and second model)."""
        left = (model == "A") == (self.a_side == "left")
        run, w = (self.left_run, self.left_guidance_weight) if left else (self.right_run, self.right_guidance_weight)
        return f"{run} (w={w})" if w else run

    def models(self) -> tuple[str, str]:
        """The blinded labels of the pair's first model (shown on ``a_side``) and second model;
        A and B in a two-run export (and in a key.csv without model columns)."""
        left, right = self.left_model or None, self.right_model or None
        if left is None or right is None:
            return "A", "B"
        return (left, right) if self.a_side == "left" else (right, left)


@dataclass(frozen=True)
class Comparison:
    """One pair of any export: the images of its first and second model and the side the first is on."""

    prompt_id: str
    prompt: str
    category: str
    first: tuple[ManifestImage, ...]
    second: tuple[ManifestImage, ...]
    first_model: int
    second_model: int
    first_side: Side


@dataclass(frozen=True)
class Model:
    """One run of an export: its blinded label, run directory and guidance weight."""

    label: str
    run: Path
    guidance_weight: float

    def row(self) -> tuple[str, str]:
        return str(self.run.resolve()), f"{self.guidance_weight:g}"


@dataclass(frozen=True)
class Export:
    """What :func:`export_pairs` wrote."""

    out: Path
    export_id: str
    num_pairs: int
    k: int
    guidance_weight_a: float
    guidance_weight_b: float
    models: tuple[Model, ...] = ()
    design: str = "all"


# ---------------------------------------------------------------- reading runs

def read_manifest(run_dir: str | os.PathLike) -> list[ManifestImage]:
    """The rows of ``RUN/manifest.csv`` (``bench.rundir.read_manifest``); errors name the file and line."""
    run = Path(run_dir)
    path = run / rundir.MANIFEST
    try:
        man = rundir.read_manifest(run, required=MANIFEST_COLUMNS)
    except FileNotFoundError:
        raise PairsError(f"{path}: not found (is {run} a run directory written by bench.run?)") from None
    except rundir.ManifestError as e:
        raise PairsError(str(e)) from None
    rows: list[ManifestImage] = []
    for i, rec in enumerate(man.to_dict("records")):
        line = i + 2  # header, 1-based
        try:
            sample = int(rec["sample_index"])
        except ValueError:
            raise PairsError(f"{path}, line {line}: sample_index {rec['sample_index']!r} is not a number") from None
        if not rec["prompt_id"] or not rec["path"]:
            raise PairsError(f"{path}, line {line}: empty prompt_id or path")
        rows.append(ManifestImage(run / rec["path"], rec["prompt_id"], rec["prompt"], rec["category"],
                                  float(rec["guidance_weight"]), sample, line))
    if not rows:
        raise PairsError(f"{path}: no images")
    return rows


def select_weight(rows: list[ManifestImage], weight: float | None, run_dir: str | os.PathLike,
                  key: str = "guidance_weight") -> float:
    """The guidance weight to use from a run: ``weight`` if the run has it, else the run's only one."""
    available = sorted({r.guidance_weight for r in rows})
    listed = ", ".join(f"{w:g}" for w in available)
    if weight is None:
        if len(available) == 1:
            return available[0]
        raise PairsError(f"run {run_dir} has images at several guidance weights ({listed}); "
                         f"choose one with {key}=W")
    for w in available:
        if math.isclose(w, float(weight), rel_tol=1e-9, abs_tol=1e-9):
            return w
    raise PairsError(f"{key}={weight:g}: run {run_dir} has no images at that weight (available: {listed})")


def _by_prompt(rows: list[ManifestImage], weight: float, run: str) -> dict[str, dict[int, ManifestImage]]:
    out: dict[str, dict[int, ManifestImage]] = {}
    for r in rows:
        if r.guidance_weight != weight:
            continue
        samples = out.setdefault(r.prompt_id, {})
        if r.sample_index in samples:
            raise PairsError(f"{run}/manifest.csv, line {r.line}: duplicate image for prompt {r.prompt_id!r}, "
                             f"sample_index {r.sample_index}, guidance_weight {weight:g} "
                             f"(first at line {samples[r.sample_index].line})")
        samples[r.sample_index] = r
    return out


def _listed(ids: list[str]) -> str:
    more = f" (and {len(ids) - _MAX_LISTED} more)" if len(ids) > _MAX_LISTED else ""
    return ", ".join(ids[:_MAX_LISTED]) + more


def build_pairs(a: str | os.PathLike, b: str | os.PathLike, *, k: int = 4, seed: int = 0,
                guidance_weight_a: float | None = None,
                guidance_weight_b: float | None = None) -> tuple[list[Pair], float, float]:
    """Pair runs ``a`` and ``b`` prompt by prompt, in a seeded random order with seeded sides.

    Each side gets the images of the ``k`` smallest sample indices both runs have for the
    prompt, in the same order (image i on the left and on the right share a sample index).
    Returns the pairs and the two guidance weights used.
    """
    if k < 1:
        raise PairsError(f"k={k}: need at least one image per side")
    rows_a, rows_b = read_manifest(a), read_manifest(b)
    w_a = select_weight(rows_a, guidance_weight_a, a, "guidance_weight_a")
    w_b = select_weight(rows_b, guidance_weight_b, b, "guidance_weight_b")
    pa, pb = _by_prompt(rows_a, w_a, str(a)), _by_prompt(rows_b, w_b, str(b))
    only_a = [p for p in pa if p not in pb]
    only_b = [p for p in pb if p not in pa]
    if only_a or only_b:
        parts = []
        if only_a:
            parts.append(f"{len(only_a)} prompt(s) of run A are missing from run B: {_listed(only_a)}")
        if only_b:
            parts.append(f"{len(only_b)} prompt(s) of run B are missing from run A: {_listed(only_b)}")
        raise PairsError(f"runs {a} and {b} do not cover the same prompts: " + "; ".join(parts))
    short, differ = [], []
    chosen: list[tuple[list[ManifestImage], list[ManifestImage]]] = []
    for pid, sa in pa.items():
        sb = pb[pid]
        common = sorted(set(sa) & set(sb))
        if len(common) < k:
            short.append(f"{pid} ({len(common)})")
        ia, ib = [sa[i] for i in common[:k]], [sb[i] for i in common[:k]]
        if ia and ib and ia[0].prompt != ib[0].prompt:
            differ.append(pid)
        chosen.append((ia, ib))
    if differ:
        raise PairsError(f"runs {a} and {b} give different prompt texts for the same prompt_id: {_listed(differ)}")
    if short:
        raise PairsError(f"k={k} images per side, but {len(short)} prompt(s) have fewer samples shared by both "
                         f"runs (count in brackets): {_listed(short)}; lower k or sample more images")
    rng = random.Random(seed)
    order = list(range(len(chosen)))
    rng.shuffle(order)
    pairs = []
    for i in order:
        ia, ib = chosen[i]
        side: Side = "left" if rng.random() < 0.5 else "right"
        pairs.append(Pair(ia[0].prompt_id, ia[0].prompt, ia[0].category, tuple(ia), tuple(ib), side))
    return pairs, w_a, w_b


# ---------------------------------------------------------------- writing the export

def _load_rgb(src: Path) -> Image.Image:
    try:
        with Image.open(src) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as e:
        raise PairsError(f"{src}: cannot read image ({e})") from None


def opaque_name(img: Image.Image) -> str:
    """The export's name for an image: a hash of its size and RGB pixels alone."""
    digest = hashlib.sha256(f"{img.width}x{img.height}:".encode() + img.convert("RGB").tobytes()).hexdigest()
    return f"{digest[:24]}.png"


def _plain_png(img: Image.Image) -> bytes:
    """``img`` as a PNG without metadata (no text chunks naming a model)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _csv_text(header: tuple[str, ...] | list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def script_json(data: object) -> str:
    """JSON safe inside an HTML ``<script>`` element: ``<``, ``>`` and ``&`` are \\u-escaped,
    so no string (e.g. a prompt holding ``</script>``) can close the element."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_rating_page(pairs: list[BlindPair], export_id: str) -> str:
    """The self-contained rating page (``bench/web/rate.html``) with the pairs embedded."""
    data = {"export_id": export_id,
            "pairs": [{"pair_id": p.pair_id, "prompt": p.prompt, "left": list(p.left_images),
                       "right": list(p.right_images)} for p in pairs]}
    return render_page_data(data)


def render_page_data(data: dict, connect_src: str = "'none'") -> str:
    """``bench/web/rate.html`` with ``data`` embedded; ``connect_src`` is the page's CSP connect-src
    (``'none'`` for the static page, which makes no requests; ``'self'`` for the served page)."""
    template = TEMPLATE.read_text(encoding="utf-8")
    for placeholder in (JSON_PLACEHOLDER, CONNECT_PLACEHOLDER):
        if template.count(placeholder) != 1:
            raise RuntimeError(f"bench/web/rate.html must contain {placeholder} exactly once")
    return template.replace(CONNECT_PLACEHOLDER, connect_src).replace(JSON_PLACEHOLDER, script_json(data))


def _join_url(base_url: str, rel: str) -> str:
    return base_url.rstrip("/") + "/" + rel if base_url else rel


def export_pairs(a: str | os.PathLike, b: str | os.PathLike, out: str | os.PathLike, *, k: int = 4,
                 seed: int = 0, guidance_weight_a: float | None = None, guidance_weight_b: float | None = None,
                 base_url: str = "", overwrite: bool = False) -> Export:
    """Write the blinded export of runs ``a`` vs ``b`` into ``out`` (see the module docstring).

    The same inputs and seed give byte-identical files. An existing, different export in
    ``out`` is kept unless ``overwrite`` (ratings collected on it would no longer match).
    """
    pairs, w_a, w_b = build_pairs(a, b, k=k, seed=seed, guidance_weight_a=guidance_weight_a,
                                  guidance_weight_b=guidance_weight_b)
    models = (Model("A", Path(a), w_a), Model("B", Path(b), w_b))
    comparisons = [Comparison(p.prompt_id, p.prompt, p.category, p.a_images, p.b_images, 0, 1, p.a_side)
                   for p in pairs]
    design = {"design": "all", "per_prompt": 1, "k": k, "seed": seed}
    return write_export(comparisons, models, out, design, base_url=base_url, overwrite=overwrite)


def export_runs(runs: list[str | os.PathLike], out: str | os.PathLike, *, k: int = 4, seed: int = 0,
                guidance_weights: list[float | None] | None = None, design: str = "all",
                per_prompt: int | None = None, base_url: str = "", overwrite: bool = False) -> Export:
    """The export of K runs compared two at a time (module docstring); two runs with ``design=all``
    give exactly the export of :func:`export_pairs`."""
    weights = list(guidance_weights) if guidance_weights is not None else [None] * len(runs)
    if len(weights) != len(runs):
        raise PairsError(f"guidance_weights has {len(weights)} entries for {len(runs)} runs")
    if len(runs) == 2 and design == "all":
        return export_pairs(runs[0], runs[1], out, k=k, seed=seed, guidance_weight_a=weights[0],
                            guidance_weight_b=weights[1], base_url=base_url, overwrite=overwrite)
    comparisons, models, pl = build_comparisons(runs, k=k, seed=seed, guidance_weights=weights, design=design,
                                                per_prompt=per_prompt)
    info = {"design": pl.design, "per_prompt": pl.per_prompt, "k": k, "seed": seed}
    return write_export(comparisons, models, out, info, base_url=base_url, overwrite=overwrite)


def _same_prompts(runs: list[str | os.PathLike], by_prompt: list[dict[str, dict[int, ManifestImage]]]) -> None:
    parts = []
    for i in range(1, len(runs)):
        only_first = [p for p in by_prompt[0] if p not in by_prompt[i]]
        only_other = [p for p in by_prompt[i] if p not in by_prompt[0]]
        if only_first:
            parts.append(f"{len(only_first)} prompt(s) of run {runs[0]} are missing from run {runs[i]}: "
                         f"{_listed(only_first)}")
        if only_other:
            parts.append(f"{len(only_other)} prompt(s) of run {runs[i]} are missing from run {runs[0]}: "
                         f"{_listed(only_other)}")
    if parts:
        raise PairsError("the runs do not cover the same prompts: " + "; ".join(parts))


def _shared_samples(by_prompt: list[dict[str, dict[int, ManifestImage]]], k: int
                    ) -> dict[str, list[tuple[ManifestImage, ...]]]:
    """Per prompt, each run's images at the ``k`` smallest sample indices all runs have."""
    short, differ, chosen = [], [], {}
    for pid in by_prompt[0]:
        common = sorted(set.intersection(*(set(bp[pid]) for bp in by_prompt)))
        if len(common) < k:
            short.append(f"{pid} ({len(common)})")
        images = [tuple(bp[pid][i] for i in common[:k]) for bp in by_prompt]
        if common and len({im[0].prompt for im in images}) > 1:
            differ.append(pid)
        chosen[pid] = images
    if differ:
        raise PairsError(f"the runs give different prompt texts for the same prompt_id: {_listed(differ)}")
    if short:
        raise PairsError(f"k={k} images per side, but {len(short)} prompt(s) have fewer samples shared by all "
                         f"runs (count in brackets): {_listed(short)}; lower k or sample more images")
    return chosen


def build_comparisons(runs: list[str | os.PathLike], *, k: int = 4, seed: int = 0,
                      guidance_weights: list[float | None] | None = None, design: str = "all",
                      per_prompt: int | None = None) -> tuple[list[Comparison], tuple[Model, ...], Plan]:
    """The comparisons of K runs by ``design`` (``bench.rate.design``), in a seeded random order
    with seeded sides; image i of either side shares a sample index."""
    if k < 1:
        raise PairsError(f"k={k}: need at least one image per side")
    if len(runs) < 2:
        raise PairsError(f"runs: {len(runs)} run(s) given, need at least two to compare")
    weights = list(guidance_weights or [None] * len(runs))
    models, by_prompt = [], []
    for i, (run, w) in enumerate(zip(runs, weights)):
        rows = read_manifest(run)
        chosen_w = select_weight(rows, w, run, f"guidance_weights[{i}]")
        models.append(Model(model_label(i), Path(run), chosen_w))
        by_prompt.append(_by_prompt(rows, chosen_w, str(run)))
    _same_prompts(runs, by_prompt)
    images = _shared_samples(by_prompt, k)
    rng = random.Random(seed)
    try:
        pl = plan(len(images), len(runs), design, per_prompt, rng)
    except DesignError as e:
        raise PairsError(str(e)) from None
    todo = [(pid, i, j) for pid, per in zip(images, pl.pairs_per_prompt) for i, j in per]
    rng.shuffle(todo)
    out = []
    for pid, i, j in todo:
        side: Side = "left" if rng.random() < 0.5 else "right"
        first, second = images[pid][i], images[pid][j]
        out.append(Comparison(pid, first[0].prompt, first[0].category, first, second, i, j, side))
    return out, tuple(models), pl


def _sides(c: Comparison, rel: dict[Path, str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    first, second = tuple(rel[i.path] for i in c.first), tuple(rel[i.path] for i in c.second)
    return (first, second) if c.first_side == "left" else (second, first)


def _key_rows(blind: list[BlindPair], comparisons: list[Comparison], models: tuple[Model, ...]) -> list[list[str]]:
    rows = []
    for q, c in zip(blind, comparisons):
        left, right = ((c.first_model, c.second_model) if c.first_side == "left"
                       else (c.second_model, c.first_model))
        rows.append([q.pair_id, q.prompt_id, c.first_side, models[left].label, models[right].label,
                     *models[left].row(), *models[right].row()])
    return rows


def _image_key_rows(blind: list[BlindPair], comparisons: list[Comparison], models: tuple[Model, ...],
                    rel: dict[Path, str]) -> list[list[str]]:
    rows = []
    for q, c in zip(blind, comparisons):
        second_side = "right" if c.first_side == "left" else "left"
        for side, m, images in ((c.first_side, c.first_model, c.first), (second_side, c.second_model, c.second)):
            model = models[m]
            for n, im in enumerate(images):
                rows.append([q.pair_id, side, str(n), rel[im.path], model.label, model.row()[0],
                             im.path.relative_to(model.run).as_posix(), f"{im.guidance_weight:g}",
                             str(im.sample_index)])
    rows.sort(key=lambda r: (r[0], r[1], int(r[2])))
    return rows


def _design_json(export_id: str, blind: list[BlindPair], comparisons: list[Comparison],
                 models: tuple[Model, ...], info: dict) -> str:
    counts: dict[tuple[str, str], int] = {}
    for c in comparisons:
        pair = (models[c.first_model].label, models[c.second_model].label)
        counts[pair] = counts.get(pair, 0) + 1
    doc = {"export_id": export_id, **info, "num_pairs": len(blind),
           "models": [{"label": m.label, "run": m.row()[0], "guidance_weight": m.guidance_weight} for m in models],
           "prompts_per_model_pair": [{"first": a, "second": b, "prompts": n} for (a, b), n in sorted(counts.items())]}
    return json.dumps(doc, indent=2) + "\n"


def _blind(comparisons: list[Comparison], rel: dict[Path, str]) -> tuple[str, list[BlindPair]]:
    sides = [_sides(c, rel) for c in comparisons]
    content = [[c.prompt_id, c.prompt, c.category, list(left), list(right)]
               for c, (left, right) in zip(comparisons, sides)]
    export_id = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
    blind = [BlindPair(f"{export_id[:8]}-{n:03d}", c.prompt_id, c.prompt, c.category, left, right, export_id)
             for n, (c, (left, right)) in enumerate(zip(comparisons, sides), start=1)]
    return export_id, blind


def _write_images(out: Path, names: dict[Path, str]) -> None:
    img_dir = out / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    for src, name in names.items():
        if not (img_dir / name).is_file():
            rundir.atomic_write_bytes(_plain_png(_load_rgb(src)), img_dir / name)
    keep = set(names.values())
    for stale in img_dir.glob("*.png"):  # images of a previous export that was overwritten
        if stale.name not in keep:
            stale.unlink()


def write_export(comparisons: list[Comparison], models: tuple[Model, ...], out: str | os.PathLike, info: dict, *,
                 base_url: str = "", overwrite: bool = False) -> Export:
    """Write the files of an export (module docstring) for ``comparisons`` among ``models``."""
    out = Path(out)
    names: dict[Path, str] = {}
    for c in comparisons:
        for im in c.first + c.second:
            if im.path not in names:
                names[im.path] = opaque_name(_load_rgb(im.path))
    rel = {src: f"img/{name}" for src, name in names.items()}
    export_id, blind = _blind(comparisons, rel)
    pairs_csv = _csv_text(PAIRS_COLUMNS, [[q.pair_id, q.prompt_id, q.prompt, q.category, " ".join(q.left_images),
                                           " ".join(q.right_images), export_id] for q in blind])
    old = out / "pairs.csv"
    if old.is_file() and old.read_text(encoding="utf-8") != pairs_csv and not overwrite:
        raise PairsError(f"{out} already holds a different export (ratings collected on it would no longer "
                         f"match its pairs); choose another out=DIR or pass overwrite=true")
    _write_images(out, names)
    k = int(info["k"])
    mturk_header = ["pair_id", "prompt"] + [f"left_image_{i}" for i in range(1, k + 1)] + \
                   [f"right_image_{i}" for i in range(1, k + 1)]
    mturk_rows = [[q.pair_id, q.prompt] + [_join_url(base_url, r) for r in q.left_images + q.right_images]
                  for q in blind]
    rundir.atomic_write_text(pairs_csv, out / "pairs.csv")
    rundir.atomic_write_text(_csv_text(mturk_header, mturk_rows), out / "mturk.csv")
    rundir.atomic_write_text(render_rating_page(blind, export_id), out / "index.html")
    rundir.atomic_write_text(_csv_text(KEY_COLUMNS, _key_rows(blind, comparisons, models)), out / "key.csv")
    rundir.atomic_write_text(_csv_text(IMAGE_KEY_COLUMNS, _image_key_rows(blind, comparisons, models, rel)),
                             out / IMAGE_KEY)
    rundir.atomic_write_text(_design_json(export_id, blind, comparisons, models, info), out / DESIGN)
    weights = [m.guidance_weight for m in models]
    return Export(out, export_id, len(blind), k, weights[0], weights[1], models, str(info["design"]))


# ---------------------------------------------------------------- reading an export

def read_pairs(out: str | os.PathLike) -> list[BlindPair]:
    """The blinded pairs of an export directory (``DIR/pairs.csv``)."""
    path = Path(out) / "pairs.csv"
    if not path.is_file():
        raise PairsError(f"{path}: not found (is {out} a directory written by bench.pairs?)")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in PAIRS_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise PairsError(f"{path}: missing column(s) {', '.join(missing)}")
        return [BlindPair(r["pair_id"], r["prompt_id"], r["prompt"], r["category"],
                          tuple(r["left_images"].split()), tuple(r["right_images"].split()), r["export_id"])
                for r in reader]


def read_key(out: str | os.PathLike) -> dict[str, KeyRow]:
    """The unblinding key of an export directory (``DIR/key.csv``), by pair id."""
    path = Path(out) / "key.csv"
    if not path.is_file():
        raise PairsError(f"{path}: not found; the unblinding key is needed to turn left/right into A/B")
    key: dict[str, KeyRow] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("pair_id", "a_side", "left_run", "right_run") if c not in (reader.fieldnames or [])]
        if missing:
            raise PairsError(f"{path}: missing column(s) {', '.join(missing)}")
        for r in reader:
            if r["a_side"] not in ("left", "right"):
                raise PairsError(f"{path}, line {reader.line_num}: a_side must be left or right, "
                                 f"got {r['a_side']!r}")
            key[r["pair_id"]] = KeyRow(r["pair_id"], r.get("prompt_id", ""), r["a_side"],  # type: ignore[arg-type]
                                       r["left_run"], r["right_run"], r.get("left_guidance_weight", ""),
                                       r.get("right_guidance_weight", ""), r.get("left_model") or "",
                                       r.get("right_model") or "")
    return key


@dataclass(frozen=True)
class ImageSource:
    """A row of ``key_images.csv``: which run image is shown at ``position`` on ``side`` of a pair."""

    pair_id: str
    side: str
    position: int
    image: str
    model: str
    run: str
    path: str
    guidance_weight: float


def read_image_key(out: str | os.PathLike) -> list[ImageSource] | None:
    """The rows of ``DIR/key_images.csv``, or None for an export written before it existed."""
    path = Path(out) / IMAGE_KEY
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in IMAGE_KEY_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise PairsError(f"{path}: missing column(s) {', '.join(missing)}")
        try:
            return [ImageSource(r["pair_id"], r["side"], int(r["position"]), r["image"], r["model"], r["run"],
                                r["path"], float(r["guidance_weight"])) for r in reader]
        except ValueError as e:
            raise PairsError(f"{path}, line {reader.line_num}: {e}") from None


def _usage() -> str:
    return ("usage: python -m bench.pairs a=RUN_DIR b=RUN_DIR out=DIR [k=4 seed=0 ...]\n"
            "   or: python -m bench.pairs runs=[RUN_A,RUN_B,RUN_C,...] out=DIR [design=all|balanced per_prompt=M ...]")


def _export(cfg: DictConfig) -> Export:
    common = dict(k=int(cfg.k), seed=int(cfg.seed), base_url=str(cfg.base_url or ""), overwrite=bool(cfg.overwrite))
    if cfg.runs is not None:
        if cfg.a is not None or cfg.b is not None:
            raise PairsError("give either runs=[...] or a= and b=, not both")
        runs = [str(r) for r in cfg.runs] if isinstance(cfg.runs, ListConfig) else [str(cfg.runs)]
        weights = list(cfg.guidance_weights) if cfg.guidance_weights is not None else None
        return export_runs(runs, str(cfg.out), guidance_weights=weights, design=str(cfg.design),
                           per_prompt=cfg.per_prompt, **common)
    if cfg.a is None or cfg.b is None:
        raise PairsError("missing a= and b= (or runs=[...]); " + _usage())
    return export_pairs(str(cfg.a), str(cfg.b), str(cfg.out), guidance_weight_a=cfg.guidance_weight_a,
                        guidance_weight_b=cfg.guidance_weight_b, **common)


def main() -> None:
    argv = sys.argv[1:]
    missing = missing_arguments(argv, ("out",)) + \
        (missing_arguments(argv, ("a", "b")) if missing_arguments(argv, ("runs",)) else [])
    if missing and not any(a.startswith("-") for a in argv):  # leave --help, --cfg ... to Hydra
        raise SystemExit(f"bench.pairs: missing {', '.join(missing)}; " + _usage())

    @hydra.main(version_base="1.3", config_path="../conf", config_name="pairs")
    def _main(cfg: DictConfig) -> None:
        try:
            ex = _export(cfg)
        except PairsError as e:
            raise SystemExit(f"bench.pairs: {e}") from None
        if len(ex.models) > 2 or ex.design != "all":
            runs = ", ".join(f"{m.label} = {m.run} (w={m.guidance_weight:g})" for m in ex.models)
            print(f"{ex.num_pairs} pairs among {len(ex.models)} runs, design {ex.design} ({ex.k} images per side), "
                  f"export {ex.export_id}\n{runs}\nprompts per model pair: {ex.out / DESIGN}")
        else:
            print(f"{ex.num_pairs} pairs ({ex.k} images per side; A at w={ex.guidance_weight_a:g}, "
                  f"B at w={ex.guidance_weight_b:g}), export {ex.export_id}")
        print(f"rating page: {(ex.out / 'index.html').resolve().as_uri()}")
        print(f"unblinding key: {ex.out / 'key.csv'}, {ex.out / IMAGE_KEY} and {ex.out / DESIGN} "
              "(do not share with raters)")

    _main()


if __name__ == "__main__":
    main()
