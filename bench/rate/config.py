"""The settings of ``python -m bench.rate`` (``conf/rate.yaml``) as a typed value."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from bench.rate.engine import default_url


@dataclass(frozen=True)
class RateConfig:
    pairs: Path
    db: str
    host: str = "127.0.0.1"
    port: int = 8000
    base_url: str = ""
    n: int | None = None
    out: Path | None = None
    ratings_per_pair: int = 3
    attention_checks: int = 3
    seed: int = 0
    max_body_bytes: int = 4096
    live_n_boot: int = 500
    live_every_s: float = 2.0
    ci: float = 0.95
    log_level: str = "info"

    @property
    def link_base(self) -> str:
        """How raters reach the server: ``base_url``, else ``http://host:port``."""
        return (self.base_url or f"http://{self.host}:{self.port}").rstrip("/")


def from_hydra(cfg: DictConfig) -> RateConfig:
    pairs = Path(str(cfg.pairs))
    return RateConfig(
        pairs=pairs, db=str(cfg.db) if cfg.db else default_url(pairs), host=str(cfg.host), port=int(cfg.port),
        base_url=str(cfg.base_url or ""), n=None if cfg.n is None else int(cfg.n),
        out=None if cfg.out is None else Path(str(cfg.out)), ratings_per_pair=int(cfg.ratings_per_pair),
        attention_checks=int(cfg.attention_checks), seed=int(cfg.seed), max_body_bytes=int(cfg.max_body_bytes),
        live_n_boot=int(cfg.live_n_boot), live_every_s=float(cfg.live_every_s), ci=float(cfg.ci),
        log_level=str(cfg.log_level))
