"""The command line of ``python -m bench.rate``: a verb, then Hydra-style ``key=value`` overrides of
``conf/rate.yaml`` (composed with Hydra's compose API, so nothing is written beside the export)."""
from __future__ import annotations

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from bench.cli import missing_arguments
from bench.pairs import PairsError, read_pairs
from bench.rate.config import RateConfig, from_hydra
from bench.rate.engine import DatabaseURLError
from bench.rate.export import write_ratings
from bench.rate.invite import INVITES, invite
from bench.rate.serve import open_campaign, serve
from bench.rate.store import Store, StoreError

CONF = Path(__file__).resolve().parents[2] / "conf"
USAGE = """usage: python -m bench.rate serve  pairs=DIR [db=URL] [host=127.0.0.1] [port=8000]
       python -m bench.rate invite pairs=DIR n=N [ratings_per_pair=3 attention_checks=3 seed=0 base_url=URL]
       python -m bench.rate export pairs=DIR out=FILE [db=URL]"""
REQUIRED = {"serve": ("pairs",), "invite": ("pairs", "n"), "export": ("pairs", "out")}


def load_config(overrides: list[str]) -> RateConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg: DictConfig = compose(config_name="rate", overrides=overrides)
    return from_hydra(cfg)


def run_invite(cfg: RateConfig) -> None:
    pairs = read_pairs(cfg.pairs)
    store = Store(cfg.db, pairs[0].export_id if pairs else None)
    try:
        new = invite(cfg.pairs, store, int(cfg.n or 0), base=cfg.link_base, ratings_per_pair=cfg.ratings_per_pair,
                     attention_checks=cfg.attention_checks, seed=cfg.seed)
    finally:
        store.close()
    for i in new:
        print(f"{i.rater_id}  {i.url}  ({i.items} items)")
    print(f"{len(new)} rater(s) invited; every link so far: {cfg.pairs / INVITES} (keep it private)")


def run_export(cfg: RateConfig) -> None:
    campaign = open_campaign(cfg, create=False)  # a mistyped db= is an error, not a new empty campaign
    try:
        n = write_ratings(campaign.store, list(campaign.pairs.values()), cfg.out or "")
    finally:
        campaign.store.close()
    print(f"{n} ratings written to {cfg.out}")


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in REQUIRED:
        raise SystemExit(USAGE)
    verb, overrides = args[0], args[1:]
    missing = missing_arguments(overrides, REQUIRED[verb])
    if missing:
        raise SystemExit(f"bench.rate {verb}: missing {', '.join(missing)}\n{USAGE}")
    try:
        cfg = load_config(overrides)
        {"serve": serve, "invite": run_invite, "export": run_export}[verb](cfg)
    except (HydraException, OmegaConfBaseException) as e:
        raise SystemExit(f"bench.rate {verb}: {e}\n{USAGE}") from None
    except (PairsError, StoreError, DatabaseURLError, ValueError) as e:
        raise SystemExit(f"bench.rate {verb}: {e}") from None
