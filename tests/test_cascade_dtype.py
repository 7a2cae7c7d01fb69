"""model.dtype for the built-in cascade: bfloat16 U-Net forwards under autocast, sampler math in float32."""
import numpy as np
import pytest
import torch

from bench import rundir
from bench.generators import CascadeGenerator, SamplerSettings
from bench.run import generation_settings
from imagen.cascade import Cascade, to_uint8


def _sample(cascade: Cascade, dtype: str) -> torch.Tensor:
    cascade.dtype = dtype
    tokens, mask = cascade.text_encoder.encode(["a red circle", "two blue squares"])
    try:
        return cascade.sample(tokens, mask, torch.tensor([1.0, 4.0]), [3, 4], steps=4, sr_steps=3, kind="dpmpp_2m")
    finally:
        cascade.dtype = "float32"


def test_bf16_sampling_returns_float32_images_close_to_float32(tiny_cascade):
    x32, x32_again, x16 = _sample(tiny_cascade, "float32"), _sample(tiny_cascade, "float32"), _sample(tiny_cascade, "bfloat16")
    assert x16.dtype == torch.float32 and torch.isfinite(x16).all()
    assert torch.equal(x32, x32_again)                     # float32 stays deterministic
    diff = np.abs(to_uint8(x32).astype(int) - to_uint8(x16).astype(int))
    assert 0 < diff.max()                                  # the forwards did run in bf16 ...
    assert diff.mean() < 8                                 # ... and stay near the float32 images


def test_unknown_dtype_is_refused(tiny_cascade):
    with pytest.raises(ValueError, match="model.dtype"):
        Cascade(tiny_cascade.stages, tiny_cascade.text_encoder, tiny_cascade.device, "float16")


def test_identity_names_dtype_only_when_not_float32(tiny_cascade):
    gen = CascadeGenerator(tiny_cascade, SamplerSettings(steps=2))
    assert "dtype" not in gen.identity()                    # float32 run directories keep their identity
    bf = CascadeGenerator(Cascade(tiny_cascade.stages, tiny_cascade.text_encoder, tiny_cascade.device, "bfloat16"),
                          SamplerSettings(steps=2))
    assert bf.identity()["dtype"] == "bfloat16" and bf.info()["dtype"] == "bfloat16"


def test_auto_is_bf16_only_on_a_cpu_with_native_bf16(monkeypatch):
    from imagen import device

    assert device.native_bf16("processor\t: 0\nflags\t\t: fpu avx2 fma avx512f avx512_bf16\n")
    assert device.native_bf16("flags\t\t: fpu amx_tile amx_bf16\n")
    assert not device.native_bf16("flags\t\t: fpu avx2 fma avx512f avx512bw\n")   # emulated bf16: slower
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(device, "native_bf16", lambda cpuinfo=None: True)
    assert device.resolve_dtype("auto", cpu) == "bfloat16" and device.resolve_dtype("auto", gpu) == "float32"
    monkeypatch.setattr(device, "native_bf16", lambda cpuinfo=None: False)
    assert device.resolve_dtype("auto", cpu) == "float32"
    assert device.resolve_dtype("bfloat16", cpu) == "bfloat16" and device.resolve_dtype("float32", cpu) == "float32"


def test_run_directories_from_before_model_dtype_resume_in_float32_only(tmp_path):
    """generation.json written before ``model.dtype`` existed holds float32 images: a float32 run resumes
    it, a bf16 one (what ``auto`` resolves to on a CPU with native bf16) is refused by name."""
    old = {"sampler.kind": "dpmpp_2m", "sampler.steps": 12, "seed": 0}
    rundir.write_generation(tmp_path, old)
    rundir.check_generation(tmp_path, {**old, "model.dtype": "float32"}, True)
    with pytest.raises(rundir.RunConfigMismatch, match="model.dtype"):
        rundir.check_generation(tmp_path, {**old, "model.dtype": "bfloat16", "generator.dtype": "bfloat16"}, True)


def test_generation_settings_hold_the_resolved_dtype(tiny_cascade):
    cfg = {"model": {"name": "imagen_tiny", "dtype": "auto"}, "guidance": {"weights": [1.0]}, "sampler": {"steps": 2},
           "seed": 0, "samples_per_prompt": 1}
    settings = generation_settings(cfg, CascadeGenerator(tiny_cascade, SamplerSettings(steps=2)))
    assert settings["model.dtype"] == "float32"               # tiny_cascade is float32: "auto" is not stored
