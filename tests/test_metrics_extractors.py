"""Feature extractors through the paths a user takes: Inception from a weights file with torch-fidelity's
key layout, open_clip from a local config + weights file (CLIP score vs torchmetrics), shapes-CLIP."""
from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch

from bench.metrics.clip_score import clip_score, clip_score_per_image
from bench.metrics.extractors import (
    FeatureExtractor,
    ImageTextEncoder,
    InceptionExtractor,
    OpenClipExtractor,
    ShapesClipExtractor,
    build_extractor,
    file_sha8,
)

import metrics_support  # shared stand-ins; tests/ is on sys.path (not a package)


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


# ---- Inception ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def standin_inception(tmp_path_factory):
    """torch-fidelity's Inception module built without its download, randomised, saved as its state_dict."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    torch.manual_seed(0)
    with mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None):
        module = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    with torch.no_grad():
        for name, buf in module.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("inception") / "pt_inception-standin.pth"
    torch.save(module.state_dict(), path)
    return path, module


def test_inception_loads_a_standin_weights_file_with_torch_fidelity_keys(standin_inception):
    path, module = standin_inception
    ext = InceptionExtractor(str(path), device="cpu", batch_size=2)
    assert isinstance(ext, FeatureExtractor)
    assert ext.dim == 2048 and "299" in ext.resize
    assert ext.name.startswith("inception-v3-pool3[") and ext.name != "inception-v3-pool3"  # not the real weights
    images = _images(3, 32)
    feats = ext(images)
    assert feats.shape == (3, 2048) and feats.dtype == torch.float32
    with torch.no_grad():
        expected = module(images)[0]
    torch.testing.assert_close(feats, expected, rtol=1e-5, atol=1e-5)
    assert feats.std(0).mean() > 0  # features depend on the image


def test_inception_without_weights_fails_at_once_naming_file_and_key(tmp_path):
    t0 = time.time()
    for given in (None, tmp_path / "missing.pth"):
        with pytest.raises(FileNotFoundError) as e:
            build_extractor("inception", inception_weights=None if given is None else str(given))
        assert "metrics.inception_weights=/path/to/pt_inception-2015-12-05-6726825d.pth" in str(e.value)
    assert time.time() - t0 < 2.0


def test_inception_rejects_a_file_with_other_keys(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not a torch-fidelity Inception-v3 state_dict"):
        InceptionExtractor(str(bad))


# ---- open_clip ----------------------------------------------------------------------------------------

TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def tiny_clip_files(tmp_path_factory):
    """A tiny open_clip architecture (config JSON) with random weights saved to a local file."""
    import open_clip

    d = tmp_path_factory.mktemp("clip")
    cfg_path = d / "tiny-clip-test.json"
    cfg_path.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(cfg_path)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip-test", pretrained=None)
    weights = d / "tiny_clip.bin"
    torch.save(model.state_dict(), weights)
    return cfg_path, weights


def _tm_wrappers(ext: OpenClipExtractor):
    """torchmetrics' clip_score wants (model, processor) with HF's interface; wrap the loaded open_clip model."""
    class Model:
        config = SimpleNamespace()

        def to(self, device):
            return self

        def get_image_features(self, pixel_values):
            return ext.model.encode_image(pixel_values)

        def get_text_features(self, input_ids, attention_mask):
            return ext.model.encode_text(input_ids)

    def processor(images=None, text=None, return_tensors="pt", padding=True):
        if images is not None:
            return {"pixel_values": ext._preprocess(torch.stack(images))}
        ids = ext.tokenizer(text)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    return Model(), processor


def test_clip_score_equals_torchmetrics_formula_on_a_tiny_open_clip(tiny_clip_files):
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update
    from torchmetrics.functional.multimodal.clip_score import clip_score as tm_clip_score

    cfg_path, weights = tiny_clip_files
    ext = build_extractor("clip", clip_model=str(cfg_path), clip_pretrained=str(weights), device="cpu")
    assert isinstance(ext, ImageTextEncoder)
    assert ext.name.startswith("open_clip:tiny-clip-test/tiny_clip.bin#") and ext.dim == 16
    assert "to 32x32" in ext.resize and "0.4814" in ext.resize
    images = _images(6, 40, seed=1)
    texts = ["a red circle", "two blue squares", "a cat", "a green triangle above a red square", "x", "a dog"]
    img_f, txt_f = ext(images), ext.text_features(texts)
    ours = clip_score_per_image(img_f, txt_f)

    model, processor = _tm_wrappers(ext)
    with torch.no_grad():
        tm_per_image, n = _clip_score_update(list(images), texts, model, processor)
        tm_mean = tm_clip_score(list(images), texts, lambda: (model, processor))
    assert n == 6
    np.testing.assert_allclose(ours, np.maximum(tm_per_image.double().numpy(), 0), rtol=1e-5, atol=1e-4)
    assert clip_score(img_f, txt_f) == pytest.approx(float(np.maximum(tm_per_image.numpy(), 0).mean()), abs=1e-4)
    # torchmetrics' code clamps the mean, not each image; equal only when no cosine is negative
    assert float(tm_mean) == pytest.approx(max(float(tm_per_image.mean()), 0.0), abs=1e-5)


def test_clip_score_clamps_each_image_not_the_mean():
    img = np.array([[1.0, 0.0], [1.0, 0.0]])
    txt = np.array([[1.0, 0.0], [-1.0, 0.2]])  # second pair has a negative cosine
    per = clip_score_per_image(img, txt)
    assert per[0] == pytest.approx(100.0) and per[1] == 0.0
    assert clip_score(img, txt) == pytest.approx(50.0)  # torchmetrics' code would give max(mean(100 cos), 0) ~ 0.97


def test_open_clip_weights_missing_is_a_clear_error(tmp_path, tiny_clip_files):
    cfg_path, _ = tiny_clip_files
    with pytest.raises(ValueError, match="metrics.clip_pretrained=.*metrics.clip_model="):
        OpenClipExtractor("ViT-B-32", None)
    with pytest.raises(FileNotFoundError, match="metrics.clip_pretrained"):
        OpenClipExtractor(str(cfg_path), str(tmp_path / "nope.bin"))
    with pytest.raises(FileNotFoundError, match="metrics.clip_model"):
        OpenClipExtractor(str(tmp_path / "nope.json"), str(tmp_path / "nope.bin"))


# ---- shapes-CLIP ---------------------------------------------------------------------------------------

def test_shapes_clip_adapter_uses_the_lazy_module(monkeypatch):
    stub = metrics_support.install_stub_shapes_clip(monkeypatch)
    fd = build_extractor("shapes_clip", device="cpu")
    emb = fd.with_features("embedding")
    assert len(stub.loaded) == 1  # one model, two views
    assert (fd.name, fd.dim, emb.name, emb.dim) == ("stub-shapes-clip/fd", 16, "stub-shapes-clip", 8)
    assert fd.resize == stub.RESIZE
    images = _images(5, 24)
    assert fd(images).shape == (5, 16)
    e = emb(images)
    assert e.shape == (5, 8)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(5))
    assert emb.text_features(["a red circle"]).shape == (1, 8)
    with pytest.raises(ValueError, match="uint8"):
        fd(images.float())


def test_shapes_clip_adapter_with_the_real_module(tmp_path):
    """The real bench.shapes_clip model (random weights, saved and loaded the way a user's file is)."""
    from bench.shapes_clip.model import RESIZE, ShapesClip, save_shapes_clip

    torch.manual_seed(0)
    path = tmp_path / "shapes_clip.safetensors"
    save_shapes_clip(ShapesClip(), path, dtype=torch.float32)
    fd = build_extractor("shapes_clip", shapes_clip_path=str(path), device="cpu", batch_size=4)
    emb = fd.with_features("embedding")
    sha8 = file_sha8(path)  # not the shipped weights: their digest is part of the name (and reference keys)
    assert fd.name == f"shapes-clip-v1[{sha8}]/fd" and emb.name == f"shapes-clip-v1[{sha8}]" and fd.resize == RESIZE
    images = _images(6, 32)
    f, e = fd(images), emb(images)
    assert f.shape == (6, fd.dim) and e.shape == (6, emb.dim) and fd.dim != emb.dim
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(6))
    torch.testing.assert_close(f, fd.model.fd_features(images))


def test_shapes_clip_names_the_shipped_weights_plainly_and_others_by_digest(tmp_path):
    """A retrained shapes-CLIP under the same config name must not reuse the shipped weights' reference stats."""
    from bench.metrics.refstats import shapes_key
    from bench.shapes_clip.model import DEFAULT_WEIGHTS, ShapesClip, save_shapes_clip

    shipped = ShapesClipExtractor(None, "cpu")
    assert shipped.name == "shapes-clip-v1/fd"
    assert ShapesClipExtractor(DEFAULT_WEIGHTS, "cpu").name == shipped.name
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(Path(DEFAULT_WEIGHTS).read_bytes())
    assert ShapesClipExtractor(copy, "cpu").name == shipped.name  # same bytes, same weights
    torch.manual_seed(1)
    other = tmp_path / "retrained.safetensors"
    save_shapes_clip(ShapesClip(), other)
    retrained = ShapesClipExtractor(other, "cpu")
    assert retrained.name == f"shapes-clip-v1[{file_sha8(other)}]/fd"
    assert shapes_key(retrained, 100, 64).filename() != shapes_key(shipped, 100, 64).filename()
