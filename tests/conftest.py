"""Shared fixtures: a private cache directory and tiny stand-in cascade checkpoints; and the one Hydra
compose helper of the tests (``from conftest import compose_config, resolved``: pytest puts tests/ on
sys.path, it is not a package)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
TINY_BASE = {"image_size": 16, "channels": [8, 16], "num_res_blocks": 1, "attn_resolutions": [8],
             "text_dim": 384, "heads": 2, "self_attention": False}
TINY_SR = {"image_size": 32, "lowres_size": 16, "channels": [8, 16], "blocks": [1, 1], "text_dim": 384, "heads": 2}


def compose_config(name: str | None = "config", overrides: Sequence[str] = (), return_hydra_config: bool = False):
    """conf/NAME.yaml composed with ``overrides`` through Hydra's compose API, as the command line would
    (a DictConfig; ``name=None`` composes only the overrides, e.g. ``+prompts=shapes``)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides), return_hydra_config=return_hydra_config)


def resolved(name: str | None = "config", overrides: Sequence[str] = ()) -> dict[str, Any]:
    """``compose_config(name, overrides)`` with interpolations resolved, as a plain dict (what the jobs get)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose_config(name, overrides), resolve=True)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Tests never write to the user's cache; the text-embedding cache is shared within the session."""
    old = os.environ.get("IMAGEN_BENCH_CACHE")
    os.environ["IMAGEN_BENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    yield
    if old is None:
        os.environ.pop("IMAGEN_BENCH_CACHE", None)
    else:
        os.environ["IMAGEN_BENCH_CACHE"] = old


def _randomised(kind: str, arch: dict, seed: int) -> torch.nn.Module:
    from imagen.checkpoint import build_stage

    torch.manual_seed(seed)
    model = build_stage(kind, arch)
    with torch.no_grad():  # zero-initialised output layers would make every image ignore the text
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A tiny two-stage cascade with random (but non-degenerate) weights, saved as safetensors."""
    from imagen.checkpoint import save_stage

    d = tmp_path_factory.mktemp("ckpt")
    paths = {"base": d / "base.safetensors", "sr": d / "sr.safetensors"}
    save_stage(_randomised("base", TINY_BASE, 0), paths["base"], "base", prediction="v", image_size=16,
               lowres_size=0, dtype=torch.float32)
    save_stage(_randomised("sr", TINY_SR, 1), paths["sr"], "sr", prediction="v", image_size=32, lowres_size=16,
               dtype=torch.float32)
    return paths


@pytest.fixture(scope="session")
def tiny_cascade(tiny_checkpoints):
    from imagen.cascade import Cascade, StageConfig
    from imagen.text_encoder import TextEncoderConfig

    torch.set_num_threads(1)
    stages = [StageConfig("base", TINY_BASE, str(tiny_checkpoints["base"]), "v", 16, 0),
              StageConfig("sr", TINY_SR, str(tiny_checkpoints["sr"]), "v", 32, 16)]
    return Cascade.load(stages, TextEncoderConfig(kind="minilm", max_length=16), device="cpu", allow_random=False)


@pytest.fixture(scope="session")
def tiny_shapes_clip(tmp_path_factory):
    """A small shapes-CLIP (random weights, the real model class and MiniLM text side), saved as safetensors.
    Its random features already tell shapes renders from noise-like images (FD about 14x apart)."""
    import torch

    from bench.shapes_clip import ShapesClip, ShapesClipConfig, save_shapes_clip

    torch.manual_seed(0)
    model = ShapesClip(ShapesClipConfig(widths=(16, 16, 16, 16), depths=(1, 1, 1, 1), feature_dim=32, embed_dim=8,
                                        text_width=16, text_heads=2))
    path = tmp_path_factory.mktemp("sclip") / "shapes_clip.safetensors"
    save_shapes_clip(model.eval(), path, dtype=torch.float32)
    return path


CHROMIUM = os.environ.get("BENCH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright (installed by .ci/install-chromium.sh; never downloaded)."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"Chromium not found ({CHROMIUM}): run .ci/install-chromium.sh (installs Debian's chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright Python package is missing: pip install -e '.[test]' "
                    "(do not run `playwright install`; the test uses the system Chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
