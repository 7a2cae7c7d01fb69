"""Bad input fails with a clear message (asserted), and a run directory's finished work survives it.

Covered: malformed prompt files, prompts longer than the encoder's token limit, bad guidance lists,
odd reference images (sizes, modes, unreadable files), replaced run images, corrupted or mismatched
checkpoints, and NaN / Inf appearing while sampling.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.generate import NonFiniteSampleError
from bench.prompts.errors import MAX_PROMPT_CHARS, PromptFileError
from bench.run import run
from imagen.cascade import Cascade, StageConfig
from imagen.checkpoint import CheckpointError, load_stage, read_meta, save_stage
from imagen.text_encoder import TextEncoder, TextEncoderConfig

from conftest import resolved  # the shared Hydra compose helper; tests/ is on sys.path (not a package)

REPO = Path(__file__).resolve().parents[1]
LONG_PROMPT = "a red circle left of a blue square " * 8  # about 64 MiniLM tokens, imagen_tiny keeps 16
PROMPTS = ["a green triangle above a yellow circle", LONG_PROMPT]


def config(overrides: list[str]) -> dict:
    """The resolved config ``python -m bench.run`` would get, as a plain dict."""
    return resolved("config", overrides)


def tiny(ckpt: dict[str, Path], prompt_file: Path, *extra: str) -> dict:
    return config(["model=imagen_tiny", f"model.stages.0.checkpoint={ckpt['base']}",
                   f"model.stages.1.checkpoint={ckpt['sr']}", "prompts=file", f"prompts.path={prompt_file}",
                   "guidance.weights=[1,3]", "sampler.steps=2", "sampler.sr_steps=2", "sampler.micro_batch=2",
                   "metrics=none", "device=cpu", "threads=1", *extra])


def digests(run_dir: Path) -> dict[str, str]:
    """sha256 of every file of the run that holds finished work (images, manifest, settings)."""
    files = [*(run_dir / "images").rglob("*.png"), run_dir / "manifest.csv", run_dir / "generation.json"]
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(files)}


@pytest.fixture(scope="module")
def finished(tiny_checkpoints, tmp_path_factory) -> tuple[Path, dict]:
    """A finished tiny run (2 prompts x 2 weights, one prompt longer than the token limit) and its info."""
    d = tmp_path_factory.mktemp("finished")
    prompt_file = d / "prompts.txt"
    prompt_file.write_text("\n".join(PROMPTS) + "\n")
    run_dir = d / "run"
    result = run(tiny(tiny_checkpoints, prompt_file), run_dir)
    return run_dir, result["info"]


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(finished[0], dst)
    return dst


# ---------------------------------------------------------------- prompt files

HUGE = 10 * 1024 * 1024


@pytest.mark.parametrize("name, content, expected, line", [
    ("missing_column.csv", b"text,category\na red circle,user\n", "missing column(s) 'prompt'", 1),
    ("empty_prompt.csv", b"prompt\na red circle\n   \n", "empty prompt", 3),
    ("blank_line.txt", b"a red circle\n\na blue square\n", "empty prompt (blank line)", 2),
    ("latin1.txt", "a red circle\nun caf\u00e9 rouge\n".encode("latin-1"), "not valid UTF-8", 2),
    ("huge.txt", b"a" * HUGE + b"\n", f"prompt of {HUGE:,} characters; the limit is {MAX_PROMPT_CHARS:,}", 1),
    ("huge.csv", b"prompt\n" + b"a" * HUGE + b"\n", "field larger than field limit", 2),
    ("duplicate_ids.csv", b"prompt,id\na red circle,p1\na blue square,p1\n",
     "duplicate prompt id 'p1' (first on line 2)", 3),
])
def test_malformed_prompt_file_fails_clearly_and_keeps_the_run(run_copy, tiny_checkpoints, tmp_path, name,
                                                               content, expected, line):
    bad = tmp_path / name
    bad.write_bytes(content)
    before = digests(run_copy)
    with pytest.raises(PromptFileError) as err:
        run(tiny(tiny_checkpoints, bad), run_copy)
    msg = str(err.value)
    assert expected in msg and f"{bad}:{line}:" in msg, msg
    assert digests(run_copy) == before  # finished images, manifest and settings untouched
    assert len(msg) < 500  # the 10 MB prompt is not echoed back


def test_long_prompt_is_truncated_with_a_warning_that_counts_tokens(tmp_path, caplog):
    text = LONG_PROMPT
    enc = TextEncoder(TextEncoderConfig(kind="minilm", max_length=8, cache_dir=str(tmp_path / "text")))
    with caplog.at_level(logging.WARNING, logger="imagen.text_encoder"):
        tokens, mask = enc.encode([text, "a red circle"])
    n = len(enc._tokenizer(text)["input_ids"])  # [CLS] ... [SEP]
    assert n > 8
    assert f"prompt truncated by {n - 8} of {n} tokens (text_encoder.max_length=8)" in caplog.text
    assert enc.truncated == [(text, n - 8)]
    assert tokens.shape == (2, 8, 384) and bool(mask[0].all()) and not bool(mask[1].all())
    # a later run reads the embedding from the disk cache: it still says so
    caplog.clear()
    again = TextEncoder(TextEncoderConfig(kind="minilm", max_length=8, cache_dir=str(tmp_path / "text")))
    with caplog.at_level(logging.WARNING, logger="imagen.text_encoder"):
        cached, _ = again.encode([text])
    assert again._model is None  # served from the cache, no model load
    assert f"prompt truncated by {n - 8} of {n} tokens" in caplog.text and again.truncated == [(text, n - 8)]
    assert torch.equal(cached[0], tokens[0])


def test_run_info_counts_truncated_prompts(finished):
    _, info = finished
    assert info["truncated_prompts"] == 1 and info["text_encoder"].endswith(":L16")


# ---------------------------------------------------------------- guidance lists

@pytest.mark.parametrize("weights, expected", [
    ("[]", "guidance.weights is empty"),
    ("[-1,3]", "guidance weights must be finite and >= 0"),
    ("[3,3]", "guidance weights repeat"),
])
def test_bad_guidance_list_fails_and_keeps_the_run(run_copy, finished, tiny_checkpoints, weights, expected):
    prompt_file = finished[0].parent / "prompts.txt"
    before = digests(run_copy)
    with pytest.raises(ValueError, match=expected.replace("[", r"\[").replace("(", r"\(")):
        run(tiny(tiny_checkpoints, prompt_file, f"guidance.weights={weights}"), run_copy)
    assert digests(run_copy) == before


# ---------------------------------------------------------------- reference images

class RecordingExtractor:
    """A stand-in feature extractor: mean colour per image; keeps what it was given."""

    name, resize, dim = "recording", "none", 3

    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.batches.append(images.clone())
        return images.float().mean((2, 3))


def _save(path: Path, im: Image.Image, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kw)


def test_reference_folder_with_odd_sizes_and_modes_is_normalised(tmp_path):
    from bench.metrics.refstats import coco_refstats

    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (30, 30), np.uint8)
    folder = tmp_path / "val2014"
    _save(folder / "a_rgb_wide.jpg", Image.fromarray(rng.integers(0, 256, (48, 64, 3), np.uint8)), quality=95)
    _save(folder / "b_gray.png", Image.fromarray(gray, "L"))
    _save(folder / "c_gray_as_rgb.png", Image.fromarray(np.repeat(gray[..., None], 3, -1), "RGB"))
    _save(folder / "d_rgba_tall.png", Image.fromarray(rng.integers(0, 256, (70, 50, 4), np.uint8), "RGBA"))
    _save(folder / "e_palette.png", Image.fromarray(rng.integers(0, 256, (20, 20, 3), np.uint8)).convert("P"))
    _save(folder / "f_cmyk.jpg", Image.fromarray(rng.integers(0, 256, (40, 40, 3), np.uint8)).convert("CMYK"))
    _save(folder / "g_tiny.png", Image.fromarray(rng.integers(0, 256, (3, 5, 3), np.uint8)))
    ext = RecordingExtractor()
    ref = coco_refstats(ext, folder, n=7, resolution=8, cache=tmp_path / "cache", batch_size=4)
    images = torch.cat(ext.batches)
    assert images.shape == (7, 3, 8, 8) and images.dtype == torch.uint8
    assert torch.equal(images[1], images[2])  # greyscale is replicated to RGB, not treated differently
    assert ref.groups["all"].n == 7 and np.isfinite(ref.groups["all"].mu).all()


@pytest.mark.parametrize("name, write, expected", [
    ("h_16bit.png", lambda p: _save(p, Image.fromarray(np.full((16, 16), 40000, np.uint16))), "mode I;16"),
    ("h_not_an_image.jpg", lambda p: p.write_bytes(b"<html>404 not found</html>"), "cannot identify image file"),
    ("h_truncated.jpg", lambda p: p.write_bytes(_jpeg_bytes()[:300]), "is unusable"),
])
def test_unusable_reference_image_is_named(tmp_path, name, write, expected):
    from bench.metrics.refstats import coco_refstats

    folder = tmp_path / "val2014"
    for i in range(3):
        _save(folder / f"ok_{i}.png", Image.fromarray(np.full((12, 12, 3), 40 * i, np.uint8)))
    write(folder / name)
    with pytest.raises(ValueError) as err:
        coco_refstats(RecordingExtractor(), folder, n=4, resolution=8, cache=tmp_path / "cache", batch_size=2)
    msg = str(err.value)
    assert f"reference image {folder / name} is unusable" in msg and expected in msg, msg
    assert "metrics.coco_images" in msg
    assert not list((tmp_path / "cache").glob("*.npz"))  # no reference statistics half made


def _jpeg_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _metrics(tmp_path: Path, **kw):
    from bench.metrics.score_run import MetricsConfig

    return MetricsConfig(**{**dict(ref_n=8, cache_dir=str(tmp_path / "refcache"), bootstrap=20, fd_bootstrap=2,
                                   kid_subsets=2, batch_size=4, workers=1, device="cpu", real_baseline=False), **kw})


def test_coco_reference_failure_keeps_the_run_and_writes_no_metrics(run_copy, tmp_path):
    from bench.metrics.score_run import score_run

    folder = tmp_path / "val2014"
    for i in range(8):
        _save(folder / f"COCO_val2014_{i:012d}.jpg", Image.fromarray(np.full((20, 30, 3), 30 * i, np.uint8)))
    (folder / "COCO_val2014_000000000003.jpg").write_bytes(b"\x00" * 100)  # a failed download
    before = digests(run_copy)
    with pytest.raises(ValueError, match="COCO_val2014_000000000003.jpg is unusable"):
        score_run(run_copy, _metrics(tmp_path, reference="coco", coco_images=str(folder)))
    assert digests(run_copy) == before and not (run_copy / "metrics.csv").exists()


def test_replaced_run_image_of_another_size_is_named_and_resume_repairs_it(run_copy, finished, tiny_checkpoints,
                                                                           tmp_path):
    from bench.metrics.score_run import score_run

    target = run_copy / "images" / "w3" / "user-0002_s0.png"
    original = target.read_bytes()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(target)
    with pytest.raises(ValueError, match=r"user-0002_s0.png is 20x20, the manifest says 32x32"):
        score_run(run_copy, _metrics(tmp_path, batch_size=1))
    info = run(tiny(tiny_checkpoints, finished[0].parent / "prompts.txt"), run_copy)["info"]
    assert (info["images_generated"], info["images_resumed"]) == (1, 3)
    assert target.read_bytes() == original


# ---------------------------------------------------------------- checkpoints

def _variant(src: Path, dst: Path, *, scale: dict[str, float] | None = None, nan: str | None = None,
             **meta_changes) -> Path:
    """A copy of the stage file ``src`` with some tensors scaled / poisoned or its metadata changed."""
    from safetensors.torch import load_file

    from imagen.checkpoint import atomic_save

    tensors = load_file(str(src))
    for key, factor in (scale or {}).items():
        tensors[key] = tensors[key] * factor
    if nan:
        tensors[nan] = tensors[nan].clone()
        tensors[nan].view(-1)[0] = float("nan")
    meta = {**read_meta(src), **meta_changes}
    atomic_save(tensors, dst, meta)
    return dst


def _load(base: Path, sr: Path, max_length: int = 16) -> Cascade:
    stages = [StageConfig("base", {}, str(base), "v", 16, 0), StageConfig("sr", {}, str(sr), "v", 32, 16)]
    return Cascade.load(stages, TextEncoderConfig(kind="minilm", max_length=max_length), device="cpu",
                        allow_random=False)


def test_truncated_and_garbage_checkpoints(tiny_checkpoints, tmp_path):
    data = tiny_checkpoints["base"].read_bytes()
    for name, content in [("cut.safetensors", data[: len(data) * 2 // 3]), ("cut_end.safetensors", data[:-1]),
                          ("garbage.safetensors", b"\x93NUMPY" + bytes(range(256)) * 4)]:
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(CheckpointError, match=f"{bad}: not a readable safetensors file"):
            _load(bad, tiny_checkpoints["sr"])


def test_tensor_shapes_must_match_the_architecture(tiny_checkpoints, tmp_path):
    from imagen.checkpoint import atomic_save, build_stage

    meta = read_meta(tiny_checkpoints["base"])
    wide = build_stage("base", {**meta["arch"], "channels": [8, 32]})
    bad = tmp_path / "wide_weights.safetensors"
    atomic_save(wide.state_dict(), bad, meta)  # metadata says channels [8, 16]
    with pytest.raises(CheckpointError, match=f"{bad}: weights do not match the architecture in its metadata"):
        load_stage(bad)
    odd_meta = tmp_path / "odd_meta.safetensors"
    _variant(tiny_checkpoints["base"], odd_meta, arch={**meta["arch"], "dropout_rate": 0.1})
    with pytest.raises(CheckpointError, match="its metadata does not describe a stage"):
        load_stage(odd_meta)


def test_stages_that_do_not_fit_the_configured_cascade(tiny_checkpoints, tmp_path):
    meta = read_meta(tiny_checkpoints["sr"])
    small_sr = tmp_path / "sr_from_8px.safetensors"
    model = load_stage(tiny_checkpoints["sr"])[0]
    model.cfg.lowres_size = 8  # an SR stage trained on 8px inputs (the weights do not depend on it)
    save_stage(model, small_sr, "sr", dtype=torch.float32, prediction="v", image_size=32, lowres_size=8)
    with pytest.raises(CheckpointError, match=r"stage 1 \(sr\) takes 8x8 input, but stage 0 .* makes 16x16 images"):
        _load(tiny_checkpoints["base"], small_sr)
    assert meta["lowres_size"] == 16

    from imagen.checkpoint import build_stage

    base_meta = read_meta(tiny_checkpoints["base"])
    narrow = build_stage("base", {**base_meta["arch"], "text_dim": 64})
    t5_small_base = tmp_path / "base_text64.safetensors"
    save_stage(narrow, t5_small_base, "base", dtype=torch.float32, prediction="v", image_size=16, lowres_size=0)
    with pytest.raises(CheckpointError, match=r"reads 64-d text tokens, but the text encoder minilm:.* gives 384-d"):
        _load(t5_small_base, tiny_checkpoints["sr"])
    with pytest.raises(CheckpointError, match=r"a 'sr' stage where the config expects 'base'"):
        _load(tiny_checkpoints["sr"], tiny_checkpoints["sr"])


def test_non_finite_weights_are_refused(tiny_checkpoints, tmp_path):
    bad = _variant(tiny_checkpoints["sr"], tmp_path / "nan.safetensors", nan="out.weight")
    with pytest.raises(CheckpointError, match=f"{bad}: non-finite values in .*out.weight"):
        _load(tiny_checkpoints["base"], bad)


def test_checkpoint_corrupted_after_a_run_fails_and_keeps_the_run(tiny_checkpoints, tmp_path):
    ckpt = {k: tmp_path / f"{k}.safetensors" for k in ("base", "sr")}
    for k, p in ckpt.items():
        shutil.copy(tiny_checkpoints[k], p)
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text(PROMPTS[0] + "\n")
    run_dir = tmp_path / "run"
    run(tiny(ckpt, prompt_file), run_dir)
    before = digests(run_dir)
    ckpt["base"].write_bytes(ckpt["base"].read_bytes()[:5000])  # e.g. a disk filled up while training saved
    with pytest.raises(CheckpointError, match=f"{ckpt['base']}: not a readable safetensors file"):
        run(tiny(ckpt, prompt_file), run_dir)
    assert digests(run_dir) == before


# ---------------------------------------------------------------- NaN / Inf while sampling

def test_overflowing_weights_give_nan_samples_and_the_run_fails_before_scoring(tiny_checkpoints, tmp_path):
    # finite weights (they load) that overflow to Inf, then NaN, inside the base U-Net
    ckpt = {"base": _variant(tiny_checkpoints["base"], tmp_path / "hot.safetensors",
                             scale={"stem.weight": 1e30, "out.weight": 1e30}),
            "sr": tiny_checkpoints["sr"]}
    load_stage(ckpt["base"])  # finite: passes the load-time check
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text(PROMPTS[0] + "\n")
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteSampleError) as err:
        run(tiny(ckpt, prompt_file, "metrics=default"), run_dir)
    msg = str(err.value)
    assert "prompt 'user-0001'" in msg and repr(PROMPTS[0]) in msg and "seed " in msg and "w=" in msg, msg
    assert not (run_dir / "metrics.csv").exists() and not (run_dir / "manifest.csv").exists()
    assert not list(run_dir.rglob("*.png"))


def test_nan_in_a_later_micro_batch_keeps_earlier_images(finished, tiny_checkpoints, monkeypatch, tmp_path):
    prompt_file = finished[0].parent / "prompts.txt"
    fresh = tmp_path / "fresh"
    calls = []
    real_sample = Cascade.sample

    def nan_on_second_call(self, tokens, *a, **k):
        calls.append(1)
        x = real_sample(self, tokens, *a, **k).clone()
        if len(calls) == 2:
            x[1, 0, 5, 5] = float("inf")
        return x

    monkeypatch.setattr(Cascade, "sample", nan_on_second_call)
    with pytest.raises(NonFiniteSampleError) as err:
        run(tiny(tiny_checkpoints, prompt_file, "metrics=default"), fresh)
    # micro-batches of 2: [w=1: user-0001, user-0002], [w=3: user-0001, user-0002]; row 1 of the second is bad
    assert "prompt 'user-0002'" in str(err.value) and "w=3" in str(err.value)
    done = sorted(str(p.relative_to(fresh)) for p in fresh.rglob("*.png"))
    assert done == ["images/w1/user-0001_s0.png", "images/w1/user-0002_s0.png"]
    assert not (fresh / "metrics.csv").exists() and not (fresh / "manifest.csv").exists()
    monkeypatch.setattr(Cascade, "sample", real_sample)
    info = run(tiny(tiny_checkpoints, prompt_file), fresh)["info"]
    assert (info["images_generated"], info["images_resumed"]) == (2, 2)
    ref = digests(finished[0])
    assert {k: v for k, v in digests(fresh).items() if k.endswith(".png")} == \
        {k: v for k, v in ref.items() if k.endswith(".png")}
