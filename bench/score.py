"""Score a folder of images made elsewhere: a normal run directory, without generating anything.

    python -m bench.score images=DIR prompts=NAME [prompts.limit=N metrics.KEY=VALUE hydra.run.dir=OUT]

Images are matched to prompts by ``DIR/manifest.csv`` (columns ``path``, ``prompt``; optional
``prompt_id``, ``category``, ``seed``, ``guidance_weight``, ``sample_index``; an empty cell is a
value not given), or, without a manifest, by GenEval's layout ``DIR/00000/samples/0000.png``
(folder number = prompt index in the set ``prompts=``; a ``DIR/00000/metadata.jsonl`` must name
the same prompt). A manifest prompt found in the prompt set takes the set's id, category and
ground truth (exact alignment for shapes prompts); other prompts keep the manifest's prompt_id
and category (else ids ``user-0001``, ... in order of first appearance, and category ``user``).

A folder states no guidance weight unless its manifest has ``guidance_weight``: its images are
then one unnamed setting, written as ``guidance_weight`` = ``UNNAMED_WEIGHT`` (0), a number every
reader of the run directory groups, plots and pairs like any other weight.

The images are copied byte for byte into ``OUT/images/w{w}/{prompt_id}_s{k}{ext}`` (the run
directory is self-contained; ``source`` in its manifest names the original file), then scored by
``bench.metrics.score_run`` and reported by ``bench.report``. ``DIR`` is only read. Bad input
(an unlisted / unreadable / non-image file, a manifest without ``path`` or ``prompt``, an empty
folder, a GenEval folder beyond the prompt set) raises ``FolderError`` naming the file; the
command exits 2. ``generation.json`` holds the digest of the listed images, so an ``OUT`` made
from other images is refused; rescoring the same folder into it is fast (the image cache).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from tqdm import tqdm

from bench import rundir
from bench.cli import missing_arguments
from bench.distributed import Dist, agree_run_dir, current, process_group
from bench.metrics.refstats import EIGHT_BIT_MODES
from bench.metrics.score_run import MetricsConfig, score_run
from bench.prompts.records import PromptRecord
from bench.prompts.registry import USER_CATEGORY, load_prompts
from bench.report import write_run_outputs
from bench.rundir import RunConfigMismatch
from bench.runinfo import git_revision, peak_memory_mib, versions
from imagen.cascade import REPO_ROOT

log = logging.getLogger("bench.score")

UNNAMED_WEIGHT = 0.0      # guidance_weight of images whose manifest states none (one unnamed setting)
DEFAULT_OUT_ROOT = "results/scored"  # where conf/score.yaml puts run directories without hydra.run.dir
FOLDER_MANIFEST = rundir.MANIFEST  # DIR/manifest.csv: the folder's own listing, named like a run directory's
GENEVAL_METADATA = "metadata.jsonl"
PROGRESS_MIN = 100        # a progress bar from this many images on
USAGE = "usage: python -m bench.score images=DIR prompts=NAME [prompts.limit=N hydra.run.dir=OUT ...]"

__all__ = ["FolderError", "FolderImage", "UNNAMED_WEIGHT", "read_folder", "inspect_images", "source_digest",
           "score_folder", "main"]


class FolderError(ValueError):
    """A folder of images that cannot be scored; the message names the file and the problem."""


@dataclass(frozen=True)
class FolderImage:
    """One listed image: where it is (``src``; ``rel`` relative to the folder), what it shows, and, once
    inspected, its sha256 and size. ``where`` names its listing (manifest line or GenEval folder)."""

    src: Path
    rel: str
    where: str
    prompt: PromptRecord
    guidance_weight: float
    sample_index: int
    seed: str = ""
    weight_given: bool = False  # the manifest states this image's guidance weight
    sha256: str = ""
    width: int = 0
    height: int = 0
    ext: str = ""

    @property
    def dest(self) -> str:
        """Its path in the run directory (relative to it)."""
        return f"images/w{self.guidance_weight:g}/{self.prompt.id}_s{self.sample_index}{self.ext}"


# ---------------------------------------------------------------- listing the folder


def _inside(path: Path, root: Path) -> bool:
    """``path`` is ``root`` or below it (lexically: a symlink inside the folder counts as inside)."""
    p, r = os.path.normpath(path), os.path.normpath(root)
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


def _overlap(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return _inside(a, b) or _inside(b, a)


def read_folder(source: str | os.PathLike, prompts: list[PromptRecord]) -> tuple[list[FolderImage], str]:
    """The images a folder lists, matched to ``prompts``, and its layout ("manifest" or "geneval").
    Nothing is read but the listing (``inspect_images`` reads the images)."""
    source = Path(source)
    if not source.is_dir():
        raise FolderError(f"{source}: no such folder (images=DIR)")
    if not any(source.iterdir()):
        raise FolderError(f"{source}: the folder is empty; it needs {FOLDER_MANIFEST} (columns path, prompt) "
                          "or GenEval's layout DIR/00000/samples/0000.png")
    if (source / FOLDER_MANIFEST).is_file():
        return _from_manifest(source, prompts), "manifest"
    numbered = sorted(d for d in source.iterdir() if d.is_dir() and d.name.isdigit())
    if not numbered:
        raise FolderError(f"{source}: neither {FOLDER_MANIFEST} (columns path, prompt) nor GenEval's layout "
                          "(numbered folders DIR/00000/samples/0000.png)")
    return _from_geneval(source, numbered, prompts), "geneval"


def _cell(row: dict[str, Any], key: str) -> str:
    v = row.get(key)
    return "" if v is None else str(v).strip()


def _from_manifest(source: Path, prompts: list[PromptRecord]) -> list[FolderImage]:
    path = source / FOLDER_MANIFEST
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            rows = [(reader.line_num, row) for row in reader]
    except UnicodeDecodeError as e:
        raise FolderError(f"{path}: not UTF-8 text ({e})") from None
    except (OSError, csv.Error) as e:
        raise FolderError(f"{path}: unreadable ({e})") from None
    missing = [c for c in ("path", "prompt") if c not in header]
    if missing:
        raise FolderError(f"{path}: no column {' or '.join(missing)} (columns: {', '.join(header) or 'none'}); "
                          "a folder manifest needs path and prompt")
    if not rows:
        raise FolderError(f"{path}: lists no images")
    by_text = {}
    for r in prompts:
        by_text.setdefault(r.text.strip(), r)
    taken = {r.id for r in prompts}
    user: dict[str, PromptRecord] = {}
    out, seen = [], {}
    counters: dict[tuple[str, float], int] = {}
    for line, row in rows:
        where = f"{path}, line {line}"
        rel, text = _cell(row, "path"), _cell(row, "prompt")
        if not rel or not text:
            raise FolderError(f"{where}: empty {'path' if not rel else 'prompt'}")
        src = Path(rel) if Path(rel).is_absolute() else source / rel
        if not _inside(src, source):
            raise FolderError(f"{where}: {rel!r} is outside {source}; list images inside the folder")
        rec = by_text.get(text) or _user_prompt(where, text, row, user, taken)
        w = _number(where, "guidance_weight", _cell(row, "guidance_weight"), float, UNNAMED_WEIGHT)
        k_text = _cell(row, "sample_index")
        k = _number(where, "sample_index", k_text, int, counters.get((rec.id, w), 0))
        counters[(rec.id, w)] = max(counters.get((rec.id, w), 0), k + 1)
        seed = _cell(row, "seed")
        if seed:
            _number(where, "seed", seed, int, 0)
        key = (rec.id, w, k)
        if key in seen:
            raise FolderError(f"{where}: a second image of prompt {rec.id!r} ({rec.text!r}) at guidance_weight "
                              f"{w:g} with sample_index {k} (first at line {seen[key]}); give each image of a "
                              "prompt its own sample_index")
        seen[key] = line
        rel_posix = Path(os.path.relpath(os.path.normpath(src), os.path.normpath(source))).as_posix()
        out.append(FolderImage(src, rel_posix, where, rec, w, k, seed, bool(_cell(row, "guidance_weight"))))
    return out


def _user_prompt(where: str, text: str, row: dict[str, Any], user: dict[str, PromptRecord],
                 taken: set[str]) -> PromptRecord:
    """The record of a prompt outside the prompt set: the manifest's prompt_id (else the next free
    ``user-NNNN``) and category (else ``user``); one id per text and one text per id."""
    given = _cell(row, "prompt_id")
    if text in user:
        if given and given != user[text].id:
            raise FolderError(f"{where}: prompt_id {given!r} for {text!r}, which an earlier row calls "
                              f"{user[text].id!r}")
        return user[text]
    if given in taken:
        raise FolderError(f"{where}: prompt_id {given!r} already names another prompt (of the prompt set or of an "
                          "earlier row); give each prompt its own id")
    pid, n = given, 1
    while not pid:
        pid = f"{USER_CATEGORY}-{n:04d}" if f"{USER_CATEGORY}-{n:04d}" not in taken else ""
        n += 1
    try:
        rec = PromptRecord(pid, text, _cell(row, "category") or USER_CATEGORY)
    except ValueError as e:
        raise FolderError(f"{where}: {e}") from None
    taken.add(pid)
    user[text] = rec
    return rec


def _number(where: str, column: str, text: str, kind: type, default: Any) -> Any:
    if not text:
        return default
    try:
        v = kind(text)
    except ValueError:
        raise FolderError(f"{where}: {column} {text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if kind is float and not math.isfinite(v):
        raise FolderError(f"{where}: {column} {text!r} is not a finite number")
    if kind is int and column == "sample_index" and v < 0:
        raise FolderError(f"{where}: sample_index {text!r} is negative")
    return v


def _from_geneval(source: Path, numbered: list[Path], prompts: list[PromptRecord]) -> list[FolderImage]:
    out = []
    for d in numbered:
        i = int(d.name)
        if i >= len(prompts):
            raise FolderError(f"{d}: GenEval folder {i} is beyond the prompt set ({len(prompts)} prompts, "
                              f"indices 0..{len(prompts) - 1}); check prompts= and prompts.limit")
        rec = prompts[i]
        meta = d / GENEVAL_METADATA
        if meta.is_file():
            _check_metadata(meta, rec)
        samples = d / "samples"
        if not samples.is_dir():
            raise FolderError(f"{d}: no samples/ folder (GenEval layout: {d}/samples/0000.png)")
        files = sorted(p for p in samples.iterdir() if not p.name.startswith("."))
        if not files:
            raise FolderError(f"{samples}: no images")
        numeric = all(p.stem.isdigit() for p in files)
        for j, p in enumerate(files):
            out.append(FolderImage(p, p.relative_to(source).as_posix(), str(p), rec, UNNAMED_WEIGHT,
                                   int(p.stem) if numeric else j))
    return out


def _check_metadata(meta: Path, rec: PromptRecord) -> None:
    try:
        lines = [ln for ln in meta.read_text(encoding="utf-8").splitlines() if ln.strip()]
        data = json.loads(lines[0]) if lines else None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise FolderError(f"{meta}: unreadable ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("prompt"), str):
        raise FolderError(f"{meta}: expected a JSON object with a \"prompt\" on its first line")
    if data["prompt"].strip() != rec.text.strip():
        raise FolderError(f"{meta}: prompt {data['prompt']!r}, but prompt {rec.id} of the prompt set is "
                          f"{rec.text!r}; the folder was made with another prompt set (check prompts=)")


# ---------------------------------------------------------------- reading the images


def _image_facts(data: bytes, name: Path) -> tuple[int, int, str]:
    """(width, height, format) of an encoded image; FolderError naming ``name`` when it is not a usable image."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format or ""
            if im.mode not in EIGHT_BIT_MODES:
                raise FolderError(f"{name}: image mode {im.mode} is not 8 bits per channel")
            im.load()  # decodes every pixel: a truncated file fails here
            return im.width, im.height, fmt
    except FolderError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        if isinstance(e, Image.UnidentifiedImageError):
            raise FolderError(f"{name}: not an image (no image format Pillow reads)") from None
        raise FolderError(f"{name}: unreadable image ({e})") from None


def _read(img: FolderImage) -> bytes:
    if not img.src.exists():
        raise FolderError(f"{img.src}: listed ({img.where}) but missing")
    if not img.src.is_file():
        raise FolderError(f"{img.src}: listed ({img.where}) but not a file")
    try:
        return img.src.read_bytes()
    except OSError as e:
        raise FolderError(f"{img.src}: unreadable ({e.strerror or e})") from None


def _extension(src: Path, fmt: str) -> str:
    ext = src.suffix.lower()
    if ext and Image.registered_extensions().get(ext) == fmt:
        return ext
    known = [e for e, f in Image.registered_extensions().items() if f == fmt]
    return ".jpg" if fmt == "JPEG" else (known[0] if known else ext or ".img")


def _inspect_one(img: FolderImage) -> FolderImage:
    data = _read(img)
    w, h, fmt = _image_facts(data, img.src)
    return replace(img, sha256=hashlib.sha256(data).hexdigest(), width=w, height=h, ext=_extension(img.src, fmt))


def inspect_images(images: list[FolderImage], workers: int = 2, progress: bool = True) -> list[FolderImage]:
    """Every listed image read, decoded and hashed (sha256, width, height, extension), in order;
    the first missing, unreadable or non-image file raises FolderError naming it."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        it = pool.map(_inspect_one, images)
        try:
            return list(tqdm(it, total=len(images), desc="reading images", unit="img", dynamic_ncols=True,
                             disable=not progress or len(images) < PROGRESS_MIN))
        except BaseException:
            pool.shutdown(cancel_futures=True)  # report the first bad file without reading the rest
            raise


def source_digest(images: Iterable[FolderImage]) -> str:
    """sha256 over the sorted (relative path, file sha256) pairs of the listed images."""
    h = hashlib.sha256()
    for rel, sha in sorted({(i.rel, i.sha256) for i in images}):
        h.update(f"{rel}\0{sha}\n".encode())
    return h.hexdigest()


# ---------------------------------------------------------------- the run directory


def _check_run_dir(run_dir: Path, source: Path) -> None:
    if _overlap(run_dir, source):
        raise FolderError(f"hydra.run.dir={run_dir} and images={source} overlap: the run directory must be "
                          "outside the source folder (which is never written) and must not contain it")
    if not (run_dir / rundir.GENERATION).is_file():
        theirs = [n for n in (rundir.MANIFEST, "images") if (run_dir / n).exists()]
        if theirs:
            raise FolderError(f"{run_dir} holds {', '.join(theirs)} but no {rundir.GENERATION}: not a run directory "
                              "written by bench.score; choose another hydra.run.dir")


def _copy(images: list[FolderImage], run_dir: Path, progress: bool) -> tuple[int, int]:
    """Copy each image byte for byte to its place in the run directory (kept when already there); remove
    files under RUN/images/ that this listing does not name. Returns (copied, kept)."""
    copied = kept = 0
    for img in tqdm(images, desc="copying images", unit="img", dynamic_ncols=True,
                    disable=not progress or len(images) < PROGRESS_MIN):
        dest = run_dir / img.dest
        if dest.is_file() and rundir.file_sha256(dest) == img.sha256:
            kept += 1
            continue
        data = _read(img)
        if hashlib.sha256(data).hexdigest() != img.sha256:
            raise FolderError(f"{img.src}: changed while being scored; run again once the folder is complete")
        rundir.atomic_write_bytes(data, dest)
        copied += 1
    listed = {os.path.normpath(run_dir / i.dest) for i in images}
    root = run_dir / "images"
    for p in sorted(root.rglob("*"), reverse=True) if root.is_dir() else []:
        if p.is_file() and os.path.normpath(p) not in listed:
            log.info("removing %s (not in this listing)", p)
            p.unlink()
        elif p.is_dir() and not any(p.iterdir()):
            p.rmdir()
    return copied, kept


def manifest_rows(images: list[FolderImage]) -> list[dict[str, Any]]:
    """RUN/manifest.csv rows (``bench.rundir.MANIFEST_COLUMNS``, then ``source``: the path in the folder)."""
    return [{"path": i.dest, "prompt_id": i.prompt.id, "prompt": i.prompt.text, "category": i.prompt.category,
             "seed": i.seed, "guidance_weight": f"{i.guidance_weight:g}", "sample_index": i.sample_index,
             "image_index": n, "truth": i.prompt.truth or "", "width": i.width, "height": i.height,
             "source": i.rel} for n, i in enumerate(images)]


def _prepare(cfg: dict[str, Any], run_dir: Path, source: Path) -> dict[str, Any]:
    """List, check, hash and copy the images; write generation.json and manifest.csv (rank 0)."""
    try:
        prompts = load_prompts(**cfg["prompts"])
    except (ValueError, FileNotFoundError) as e:
        raise FolderError(f"prompts={cfg['prompts'].get('name')}: {e}") from None
    listed, layout = read_folder(source, prompts)
    workers = int((cfg.get("metrics") or {}).get("workers", 2) or 2)
    t0 = time.time()
    images = inspect_images(listed, workers)
    digest = source_digest(images)
    gen = {"generator.kind": "folder", "source": str(source), "source_digest": digest}
    before = rundir.read_json(run_dir / rundir.GENERATION).get("source")
    try:
        rundir.check_generation(run_dir, gen, bool(cfg.get("resume", True)), may_differ=("source",))
    except RunConfigMismatch as e:
        raise RunConfigMismatch(f"{e} It was scored from {before}; {source} lists other images "
                                "(source_digest: the listed files' paths and sha256).") from None
    rundir.write_generation(run_dir, gen)
    copied, kept = _copy(images, run_dir, progress=True)
    rundir.write_manifest(run_dir, manifest_rows(images))
    in_set = {r.id for r in prompts}
    return {"layout": layout, "digest": digest, "num_images": len(images), "copied": copied, "kept": kept,
            "num_prompts": len({i.prompt.id for i in images}), "seconds": time.time() - t0,
            "in_prompt_set": sum(1 for i in images if i.prompt.id in in_set),
            "sizes": sorted({f"{i.width}x{i.height}" for i in images}),
            "weights_given": sum(1 for i in images if i.weight_given)}


def score_folder(cfg: dict[str, Any], run_dir: str | os.PathLike, dist: Dist | None = None,
                 overrides: list[str] | None = None) -> dict[str, Any]:
    """Make ``run_dir`` a scored run directory of the folder ``cfg["images"]``; returns {"info", "metrics"}.

    ``cfg`` is the resolved ``conf/score.yaml`` (keys images, prompts, metrics, resume, threads). Outside
    a Hydra app, ``.hydra/config.yaml`` is written from ``cfg`` (and ``overrides``) so that bench.compare,
    bench.regress and ``python -m bench.metrics.score_run`` read the settings as for any run.
    """
    dist = dist or current()
    run_dir = Path(run_dir)
    if not cfg.get("images"):
        raise FolderError(f"no folder given: images=DIR; {USAGE}")
    source = Path(str(cfg["images"])).expanduser().absolute()
    if not source.is_dir():
        raise FolderError(f"{source}: no such folder (images=DIR)")
    _check_run_dir(run_dir, source)
    run_dir.mkdir(parents=True, exist_ok=True)
    with rundir.run_lock(run_dir, dist):
        return _score_folder(cfg, run_dir, source, dist, overrides)


def _score_folder(cfg: dict[str, Any], run_dir: Path, source: Path, dist: Dist,
                  overrides: list[str] | None) -> dict[str, Any]:
    t_start = time.time()
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    if dist.is_main and not (run_dir / rundir.HYDRA_CONFIG).is_file():
        rundir.write_hydra_files(run_dir, cfg, list(overrides or []))
    prep = dist.on_main(_prepare, cfg, run_dir, source)
    table, t_metrics = None, 0.0
    if (cfg.get("metrics") or {}).get("enabled", False):
        t0 = time.time()
        table = score_run(run_dir, MetricsConfig.from_dict(cfg["metrics"]), dist)
        t_metrics = time.time() - t0
    unnamed = f"not given: {UNNAMED_WEIGHT:g} stands for the folder's one unnamed setting"
    weight_note = ("from the folder's manifest" if prep["weights_given"] == prep["num_images"] else
                   f"{unnamed} (for {prep['num_images'] - prep['weights_given']} images)" if prep["weights_given"]
                   else unnamed)
    info = {
        "versions": versions(),
        "git_revision": git_revision(REPO_ROOT),
        "command": " ".join(sys.argv),
        "source": str(source),
        "num_prompts": prep["num_prompts"],
        "num_images": prep["num_images"],
        "random_weights": False,
        "generator": {"kind": "folder", "source": str(source), "source_digest": prep["digest"],
                      "layout": prep["layout"], "guidance_weight": weight_note},
        "images_in_prompt_set": prep["in_prompt_set"],
        "image_sizes": prep["sizes"],
        "images_generated": 0,
        "images_resumed": prep["kept"],  # already in the run directory from an earlier scoring
        "images_copied": prep["copied"],
        "threads": torch.get_num_threads(),
        "world_size": dist.world,
        "wall_time_s": {k: round(v, 2) for k, v in (("copy", prep["seconds"]), ("metrics", t_metrics),
                                                     ("total", time.time() - t_start))},
        "peak_memory_mib": round(peak_memory_mib(), 1),
    }
    if dist.is_main:
        rundir.write_json(run_dir / rundir.RUN_INFO, info)
        write_run_outputs(run_dir, info)
    return {"info": info, "metrics": table}


# ---------------------------------------------------------------- command line


def _print_summary(result: dict[str, Any], run_dir: Path) -> None:
    info, table = result["info"], result["metrics"]
    if table is not None and len(table):
        cols = [c for c in ("guidance_weight", "category", "num_images", "alignment", "clip_score", "fd") if c in table]
        print(table[table["category"] == "all"][cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"run dir: {run_dir}\nimages: {info['num_images']} from {info['source']} ({info['generator']['layout']}; "
          f"{info['images_copied']} copied, {info['images_resumed']} already there), {info['num_prompts']} prompts "
          f"({info['images_in_prompt_set']} images matched to the prompt set)\n"
          f"wall time: {info['wall_time_s']['total']:.1f} s")


def _given(argv: list[str], key: str) -> str | None:
    for a in argv:
        if a.lstrip("+").startswith(f"{key}="):
            return a.split("=", 1)[1]
    return None


def _hydra_snapshot(out: str | None) -> dict[Path, bytes]:
    """The files of OUT/.hydra/ before Hydra rewrites them: a refused scoring puts them back, so that an
    existing run directory keeps the configuration that made it."""
    d = Path(out).expanduser() / rundir.HYDRA_DIR if out else None
    return {p: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()} if d and d.is_dir() else {}


def _fail(message: str) -> None:
    print(f"bench.score: {message}", file=sys.stderr)
    raise SystemExit(2)


def main() -> None:
    argv = sys.argv[1:]
    hydra_files = _hydra_snapshot(_given(argv, "hydra.run.dir"))
    if not any(a.startswith("-") for a in argv):  # leave --help, --cfg ... to Hydra
        missing = missing_arguments(argv, ("images", "prompts"))
        if missing:
            _fail(f"missing {', '.join(missing)}; {USAGE}")
        images, out = _given(argv, "images"), _given(argv, "hydra.run.dir") or DEFAULT_OUT_ROOT
        if images and _overlap(Path(out).expanduser().resolve(), Path(images).expanduser().resolve()):
            # checked before Hydra creates OUT/.hydra: the source folder is never written
            _fail(f"hydra.run.dir={out} and images={images} overlap: the run directory must be outside the "
                  "source folder (which is never written) and must not contain it")

    @hydra.main(version_base="1.3", config_path="../conf", config_name="score")
    def _main(cfg: DictConfig) -> None:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        plain = OmegaConf.to_container(cfg, resolve=True)
        with process_group(str(plain.get("device", "auto"))) as dist:
            run_dir = agree_run_dir(dist, run_dir)
            try:
                result = score_folder(plain, run_dir, dist)
            except (FolderError, RunConfigMismatch, rundir.RunLockedError) as e:
                for path, data in hydra_files.items():
                    rundir.atomic_write_bytes(data, path)
                _fail(str(e))
            if dist.is_main:
                _print_summary(result, run_dir)

    _main()


if __name__ == "__main__":
    main()
