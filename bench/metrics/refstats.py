"""Reference statistics: an explicit, named artifact, computed once per key and never silently recomputed.

A key names everything the numbers depend on: dataset, split, N, resolution, extractor (backbone),
resize, the source images' identity (shapes: the scene-sampler and renderer versions; COCO: a digest
of the names and sizes of the N files read), the extractor's weights digest (the shipped shapes-CLIP
file included), device type and dtype. Any change gives another key, so another file: statistics
are computed afresh, and files written under older keys are simply never read again. The file ``<cache>/<dataset>-<split>-n<N>-<res>px-<extractor>-<hash>.npz``
holds, in float64, ``n``, ``sum``, ``sum_outer``, ``mu`` and ``sigma`` per group (``all`` and, for
shapes, each category), the per-image features (float32, for KID and CMMD), their group labels,
and the key as JSON. The cache lives outside the package: ``~/.cache/imagen-bench/refstats``, or
``$IMAGEN_BENCH_CACHE/refstats``.

    python -m bench.metrics.refstats --dataset shapes --n 5000 --resolution 64 --extractor shapes_clip
    python -m bench.metrics.refstats --dataset coco --coco-images /data/val2014 --n 30000 --resolution 256 \
        --extractor inception --inception-weights /path/to/pt_inception-2015-12-05-6726825d.pth
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.rundir import write_json
from bench.shapes import render_batch, sample_scene
from bench.shapes.render import RENDER_VERSION
from bench.shapes.scene import SCENE_VERSION

from .extractors import FeatureExtractor, build_extractor
from .frechet import FrechetStats, atomic_savez

log = logging.getLogger(__name__)

Batches = Iterable[tuple[torch.Tensor, list[str] | None]]  # uint8 (B, 3, H, W) and per-image group labels
COCO_HINT = ("a local folder of MS-COCO val2014 images (COCO_val2014_*.jpg, from "
             "http://images.cocodataset.org/zips/val2014.zip): set metrics.coco_images=/path/to/val2014, "
             "or give precomputed statistics with metrics.reference=/path/to/stats.npz")


def cache_dir(override: str | Path | None = None) -> Path:
    """``override``, else ``$IMAGEN_BENCH_CACHE/refstats``, else ``~/.cache/imagen-bench/refstats``."""
    if override:
        return Path(override).expanduser()
    root = os.environ.get("IMAGEN_BENCH_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "imagen-bench") / "refstats"


@dataclass(frozen=True)
class RefKey:
    """What reference statistics depend on; two keys are equal exactly when the numbers are interchangeable."""

    dataset: str
    split: str
    n: int
    resolution: int
    extractor: str
    resize: str
    # the fields below came later; a file written before them has "" there (and lies under another name)
    source: str = ""   # which images: shapes "scene-v1 render-v1"; COCO "names+sizes sha256:<16 hex>" of the N files
    weights: str = ""  # the extractor's weights: "sha256:<16 hex>" of the file, or the tag naming them
    device: str = ""   # device type the features were computed on: cpu, cuda, mps
    dtype: str = ""    # dtype the extractor computes in (its parameters'): float32, float16, ...

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "RefKey":
        return RefKey(**json.loads(text))

    @staticmethod
    def make(dataset: str, split: str, n: int, resolution: int, extractor: FeatureExtractor, resize: str,
             source: str) -> "RefKey":
        """The key for ``extractor``'s features of these images: its name, weights, device type and dtype."""
        return RefKey(dataset, split, n, resolution, extractor.name, resize, source, **extractor_identity(extractor))

    def filename(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9.]+", "_", self.extractor).strip("_")[:60]
        digest = hashlib.sha256(self.to_json().encode()).hexdigest()[:10]
        return f"{self.dataset}-{self.split}-n{self.n}-{self.resolution}px-{slug}-{digest}.npz"

    def describe(self) -> str:
        return f"{self.dataset}/{self.split} n={self.n} {self.resolution}px"


@dataclass
class RefStats:
    """Reference statistics: additive Fréchet states per group, and the features behind them."""

    key: RefKey
    groups: dict[str, FrechetStats]
    features: np.ndarray | None = None  # float32 (n, dim)
    labels: np.ndarray | None = None    # (n,) group label per image
    path: Path | None = None            # the cache file, when loaded from or saved to one

    def derived(self, name: str, compute: Callable[[], float]) -> float:
        """A number that depends on this reference only (e.g. the FD of N real images against it, or
        the CMMD self-kernel mean), computed once and kept beside the cache file in
        ``<file>.derived.json``; without a cache file it is computed every time."""
        return float(self._derived(name, lambda: float(compute())))

    def derived_values(self, name: str, compute: Callable[[], Iterable[float]]) -> list[float]:
        """Like ``derived``, for a list of numbers (e.g. the k-NN radii of the reference images for PRDC)."""
        return [float(v) for v in self._derived(name, lambda: [float(v) for v in compute()])]

    def _derived(self, name: str, compute: Callable[[], Any]) -> Any:
        if self.path is None:
            return compute()
        side = self.path.with_name(self.path.name + ".derived.json")
        known = _read_json_or_empty(side)
        if name in known:
            return known[name]
        value = compute()
        # read again: another process sharing the cache may have added values meanwhile
        write_json(side, {**_read_json_or_empty(side), name: value})
        return value

    def stats(self, group: str = "all") -> tuple[str, FrechetStats]:
        """(the group used, its stats): the group's own stats when the reference has them, else ``all``."""
        return (group, self.groups[group]) if group in self.groups else ("all", self.groups["all"])

    def group_features(self, group: str = "all") -> np.ndarray | None:
        if self.features is None:
            return None
        if group == "all" or self.labels is None or group not in self.groups:
            return self.features
        return self.features[self.labels == group]

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {"key": np.asarray(self.key.to_json()),
                                         "groups": np.asarray(sorted(self.groups))}
        for name, st in self.groups.items():
            arrays.update(st.to_arrays(f"{name}/"))
            if st.n >= 2:
                arrays[f"{name}/mu"], arrays[f"{name}/sigma"] = st.mu, st.sigma
        a = self.groups["all"]
        arrays.update(n=np.asarray(a.n), mu=a.mu, sigma=a.sigma)
        if self.features is not None:
            arrays["features"] = self.features.astype(np.float32)
        if self.labels is not None:
            arrays["labels"] = self.labels.astype(str)
        atomic_savez(path, arrays)

    @staticmethod
    def load(path: Path) -> "RefStats":
        """Our format, or a plain ``mu`` / ``sigma`` .npz (pytorch-fid, edm): then no features, key from its name."""
        with np.load(path, allow_pickle=False) as z:
            if "key" not in z.files:
                if not {"mu", "sigma"} <= set(z.files):
                    raise ValueError(f"{path}: neither imagen-bench reference stats nor a mu/sigma .npz")
                return RefStats._from_mu_sigma(path, z)
            key = RefKey.from_json(str(z["key"]))
            groups = {str(g): FrechetStats.from_arrays(z, f"{g}/") for g in z["groups"]}
            feats = np.asarray(z["features"]) if "features" in z.files else None
            labels = np.asarray(z["labels"]) if "labels" in z.files else None
        return RefStats(key, groups, feats, labels)

    @staticmethod
    def _from_mu_sigma(path: Path, z: Any) -> "RefStats":
        mu, sigma = np.asarray(z["mu"], np.float64), np.asarray(z["sigma"], np.float64)
        n = int(z["n"]) if "n" in z.files else 0
        m = max(n, 2)  # n only scales the additive state; mu and sigma come back unchanged
        st = FrechetStats(mu.shape[0])
        st.n, st.sum, st.sum_outer = m, m * mu, (m - 1) * sigma + m * np.outer(mu, mu)
        key = RefKey("external", path.stem, n, 0, "unknown (plain mu/sigma file)", "unknown")
        return RefStats(key, {"all": st})


def extractor_identity(extractor: FeatureExtractor) -> dict[str, str]:
    """What, beyond its name, changes an extractor's numbers: ``weights`` (its ``weights`` attribute, "" when it
    has none), ``device`` (the type of its ``device``; cpu when it has none) and ``dtype`` (its ``dtype``; float32)."""
    device = getattr(extractor, "device", None) or "cpu"
    return {"weights": str(getattr(extractor, "weights", "") or ""),
            "device": torch.device(device).type,
            "dtype": str(getattr(extractor, "dtype", None) or "float32").removeprefix("torch.")}


def _read_json_or_empty(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; {} when it is missing or unreadable (its values are then recomputed)."""
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def compute_refstats(key: RefKey, batches: Batches, extractor: FeatureExtractor) -> RefStats:
    """Extract features for every reference batch and accumulate the per-group states."""
    feats, labels = [], []
    for images, batch_labels in batches:
        feats.append(extractor(images).double().numpy())
        labels.extend(batch_labels if batch_labels is not None else ["all"] * images.shape[0])
    x = np.concatenate(feats)
    lab = np.asarray(labels)
    if x.shape[0] != key.n:
        raise ValueError(f"reference produced {x.shape[0]} images, key says n={key.n}")
    groups = {"all": FrechetStats.from_features(x)}
    for g in sorted(set(labels) - {"all"}):
        groups[g] = FrechetStats.from_features(x[lab == g])
    return RefStats(key, groups, x.astype(np.float32), lab if len(groups) > 1 else None)


def load_or_compute(key: RefKey, make_batches: Callable[[], Batches], extractor: FeatureExtractor,
                    cache: str | Path | None = None, allow_compute: bool = True) -> RefStats:
    """Load the stats stored under ``key``; compute and store them only when no file exists for the key."""
    path = cache_dir(cache) / key.filename()
    if path.exists():
        ref = RefStats.load(path)
        if ref.key != key:
            raise ValueError(f"{path} holds reference stats for {ref.key}, not {key}: remove the file or use "
                             f"another cache dir (metrics.cache_dir); it is never recomputed silently")
        log.info("reference stats: loaded %s (%s)", path, key.describe())
        ref.path = path
        return ref
    if not allow_compute:
        raise FileNotFoundError(f"no reference stats for {key} at {path}; compute them with "
                                f"python -m bench.metrics.refstats (or allow it: metrics.ref_compute=true)")
    log.warning("reference stats: computing %s with %s -> %s (once; later runs load the file)",
                key.describe(), key.extractor, path)
    ref = compute_refstats(key, make_batches(), extractor)
    ref.save(path)
    path.with_name(path.name + ".derived.json").unlink(missing_ok=True)  # values derived from a former file
    ref.path = path
    return ref


# ---- shapes: held-out scenes rendered at the run's resolution -------------------------------------------

def _shapes_batches(rng: random.Random, n: int, resolution: int, batch_size: int,
                    category: str | None = None) -> Iterator[tuple[torch.Tensor, list[str]]]:
    done = 0
    while done < n:
        scenes = [sample_scene(rng, category) for _ in range(min(batch_size, n - done))]
        done += len(scenes)
        images = torch.from_numpy(render_batch(scenes, resolution)).permute(0, 3, 1, 2).contiguous()
        yield images, [s.category for s in scenes]


def shapes_source() -> str:
    """The shapes images' identity: the versions of the scene sampler and of the renderer (explicit constants,
    bumped when scenes or pixels change; a digest of their source would change on every edit, comments too)."""
    return f"scene-v{SCENE_VERSION} render-v{RENDER_VERSION}"


def shapes_key(extractor: FeatureExtractor, n: int, resolution: int, seed: int = 0) -> RefKey:
    return RefKey.make("shapes", f"heldout-seed{seed}", n, resolution, extractor, extractor.resize, shapes_source())


def shapes_refstats(extractor: FeatureExtractor, n: int, resolution: int, seed: int = 0,
                    cache: str | Path | None = None, allow_compute: bool = True, batch_size: int = 256) -> RefStats:
    """Stats of ``n`` held-out shapes scenes (``random.Random(f"shapes-ref:{seed}")``, the shapes category mix)."""
    key = shapes_key(extractor, n, resolution, seed)
    return load_or_compute(
        key, lambda: _shapes_batches(random.Random(f"shapes-ref:{seed}"), n, resolution, batch_size),
        extractor, cache, allow_compute)


def shapes_real_features(extractor: FeatureExtractor, n: int, resolution: int, stream: str,
                         category: str | None = None, batch_size: int = 256) -> np.ndarray:
    """Features of ``n`` real shapes images from the independent stream ``random.Random(f"shapes-real:{stream}")``."""
    rng = random.Random(f"shapes-real:{stream}")
    return np.concatenate([extractor(x).double().numpy()
                           for x, _ in _shapes_batches(rng, n, resolution, batch_size, category)])


def real_fd_floor(fd: Callable[[np.ndarray], float], extractor: FeatureExtractor, n: int, resolution: int,
                  streams: list[str], category: str | None = None, batch_size: int = 256) -> np.ndarray:
    """FD (``fd``: features -> FD against the reference) of one set of ``n`` real images per stream: draws of
    the floor at this N. Their mean is the expected floor; one draw alone varies by about 17% at n = 60."""
    return np.array([fd(shapes_real_features(extractor, n, resolution, s, category, batch_size)) for s in streams])


def real_vs_real(extractor: FeatureExtractor, n: int, resolution: int, seed: int = 0,
                 category: str | None = None, batch_size: int = 256) -> float:
    """FD between two independent real shapes sets of ``n`` images each: the FD a perfect model gets at this N."""
    a = FrechetStats.from_features(shapes_real_features(extractor, n, resolution, f"{seed}:a", category, batch_size))
    b = FrechetStats.from_features(shapes_real_features(extractor, n, resolution, f"{seed}:b", category, batch_size))
    return a.compute(b)


# ---- COCO: a local val2014 folder ------------------------------------------------------------------------

def coco_image_paths(image_dir: str | Path | None, n: int) -> list[Path]:
    """The first ``n`` images (sorted by name) of a local val2014 folder; a clear error when missing."""
    if not image_dir:
        raise FileNotFoundError(f"COCO reference statistics need {COCO_HINT}")
    folder = Path(image_dir).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"COCO image folder {folder} does not exist; need {COCO_HINT}")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(paths) < n:
        raise FileNotFoundError(f"COCO image folder {folder} has {len(paths)} images, the reference needs "
                                f"n={n} (metrics.ref_n); need {COCO_HINT}")
    return paths[:n]


def coco_source(paths: list[Path]) -> str:
    """The COCO images' identity: sha256 over the names and byte sizes of the files read, in order.

    Names and sizes, not contents: hashing 40k JPEGs (~6 GB) on every run would cost minutes, while
    listing them costs milliseconds. Another folder of other images (same N, same resolution) differs
    in names or sizes; the same images copied elsewhere keep the key. An image edited in place to
    exactly the same size would go unnoticed.
    """
    h = hashlib.sha256()
    for p in paths:
        h.update(f"{p.name}\0{p.stat().st_size}\n".encode())
    return f"names+sizes sha256:{h.hexdigest()[:16]}"


def coco_key(extractor: FeatureExtractor, paths: list[Path], resolution: int) -> RefKey:
    """The key for the reference images ``paths`` (``coco_image_paths``), at ``resolution``."""
    return RefKey.make("coco", "val2014", len(paths), resolution, extractor,
                       f"centre-crop, PIL bicubic to {resolution}; {extractor.resize}", coco_source(paths))


def _cached_coco_key(extractor: FeatureExtractor, n: int, resolution: int, cache: str | Path | None) -> RefKey:
    """Without an image folder: the key of the one cached COCO reference that matches in all but the folder."""
    want = RefKey.make("coco", "val2014", n, resolution, extractor,
                       f"centre-crop, PIL bicubic to {resolution}; {extractor.resize}", "")
    stem = want.filename().rsplit("-", 1)[0]
    found = []
    for path in sorted(cache_dir(cache).glob(f"{stem}-*.npz")):
        try:
            with np.load(path, allow_pickle=False) as z:
                key = RefKey.from_json(str(z["key"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if key.source and key == RefKey(**{**asdict(want), "source": key.source}):
            found.append(key)
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(f"COCO reference statistics need {COCO_HINT}")
    raise ValueError(f"{len(found)} cached COCO references (other image folders) match n={n}, {resolution}px, "
                     f"{extractor.name}: give the image folder (metrics.coco_images) to choose one")


EIGHT_BIT_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr")


def _load_square(path: Path, resolution: int) -> np.ndarray:
    """Any 8-bit image (greyscale, palette, RGBA, CMYK: converted to RGB) of any size, centre-cropped
    square and resized; an unreadable file or a 16-bit / float image raises ValueError naming the file."""
    try:
        with Image.open(path) as im:
            if im.mode not in EIGHT_BIT_MODES:
                raise ValueError(f"mode {im.mode} (not 8 bits per channel: converting it to RGB would clip it)")
            im = im.convert("RGB")
            w, h = im.size
            s = min(w, h)
            im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
            return np.asarray(im.resize((resolution, resolution), Image.Resampling.BICUBIC))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"reference image {path} is unusable: {e}; remove or replace it "
                         f"(metrics.coco_images)") from e


def coco_refstats(extractor: FeatureExtractor, image_dir: str | Path | None, n: int, resolution: int,
                  cache: str | Path | None = None, allow_compute: bool = True, batch_size: int = 64,
                  workers: int = 2) -> RefStats:
    """Stats of the first ``n`` val2014 images, centre-cropped square and PIL-bicubic resized to ``resolution``.

    The key holds a digest of those files' names and sizes (``coco_source``): another folder is read, not served
    the first one's statistics. Without a folder, the one cached reference matching everything else is loaded."""
    if image_dir:
        paths = coco_image_paths(image_dir, n)
        key = coco_key(extractor, paths, resolution)
    else:
        paths, key = [], _cached_coco_key(extractor, n, resolution, cache)

    def batches() -> Iterator[tuple[torch.Tensor, None]]:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for start in range(0, n, batch_size):
                arrs = list(pool.map(lambda p: _load_square(p, resolution), paths[start:start + batch_size]))
                yield torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous(), None

    return load_or_compute(key, batches, extractor, cache, allow_compute)


def npz_refstats(path: str | Path, extractor: FeatureExtractor) -> RefStats:
    """Stats from a given .npz; refused when it was computed with another extractor or resize."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"reference stats file {p} not found (metrics.reference)")
    ref = RefStats.load(p)
    if ref.key.dataset != "external" and (ref.key.extractor, ref.key.resize) != (extractor.name, extractor.resize):
        raise ValueError(f"{p} was computed with {ref.key.extractor!r} ({ref.key.resize}); this run extracts "
                         f"{extractor.name!r} ({extractor.resize}): the numbers would not be comparable")
    weights = extractor_identity(extractor)["weights"]
    if ref.key.dataset != "external" and ref.key.weights and weights and ref.key.weights != weights:
        raise ValueError(f"{p} was computed with {ref.key.extractor!r} weights {ref.key.weights}; this run's are "
                         f"{weights}: the numbers would not be comparable")
    if ref.groups["all"].dim != extractor.dim:
        raise ValueError(f"{p} has {ref.groups['all'].dim}-d stats, {extractor.name} gives {extractor.dim}-d")
    return ref


# ---- CLI ------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.metrics.refstats", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=["shapes", "coco"], default="shapes")
    p.add_argument("--n", type=int, default=5000, help="number of reference images")
    p.add_argument("--resolution", type=int, default=64, help="the generated images' resolution")
    p.add_argument("--extractor", choices=["shapes_clip", "inception", "clip"], default="shapes_clip")
    p.add_argument("--seed", type=int, default=0, help="shapes: held-out scene stream shapes-ref:<seed>")
    p.add_argument("--shapes-clip", default=None, help="shapes-CLIP weights (default: the shipped ones)")
    p.add_argument("--inception-weights", default=None, help="pt_inception-2015-12-05-6726825d.pth")
    p.add_argument("--clip-model", default="ViT-B-32")
    p.add_argument("--clip-pretrained", default=None, help="open_clip tag or local weights file")
    p.add_argument("--coco-images", default=None, help="local MS-COCO val2014 image folder")
    p.add_argument("--cache-dir", default=None,
                   help="default $IMAGEN_BENCH_CACHE/refstats or ~/.cache/imagen-bench/refstats")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--real-vs-real", action="store_true", help="shapes: also print FD between two real sets of --n")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        ext = build_extractor(a.extractor, inception_weights=a.inception_weights, clip_model=a.clip_model,
                              clip_pretrained=a.clip_pretrained, shapes_clip_path=a.shapes_clip, device=a.device,
                              batch_size=a.batch_size)
        if a.dataset == "shapes":
            ref = shapes_refstats(ext, a.n, a.resolution, a.seed, a.cache_dir, batch_size=a.batch_size)
        else:
            ref = coco_refstats(ext, a.coco_images, a.n, a.resolution, a.cache_dir, batch_size=a.batch_size)
    except (FileNotFoundError, ValueError, ImportError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{cache_dir(a.cache_dir) / ref.key.filename()}\n{ref.key.to_json()}")
    if a.real_vs_real:
        if a.dataset != "shapes":
            print("error: --real-vs-real is defined for shapes only", file=sys.stderr)
            return 2
        print(f"real_vs_real_fd(n={a.n}) = {real_vs_real(ext, a.n, a.resolution, a.seed):.6g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
