"""``python -m bench.rate serve``: the campaign's server on uvicorn.

Requests are not logged (the rater links hold tokens); the admin link is printed once at start.
"""
from __future__ import annotations

import uvicorn

from bench.pairs import read_pairs
from bench.rate.app import build_app
from bench.rate.campaign import Campaign
from bench.rate.config import RateConfig
from bench.rate.live import LiveSummary
from bench.rate.store import Store


def open_campaign(cfg: RateConfig, create: bool = True) -> Campaign:
    """The export ``cfg.pairs`` with its database (created if new, unless ``create`` is False)."""
    pairs = read_pairs(cfg.pairs)
    store = Store(cfg.db, pairs[0].export_id if pairs else None, create=create)
    return Campaign(cfg.pairs, store)


def serve(cfg: RateConfig) -> None:
    campaign = open_campaign(cfg)
    live = LiveSummary(campaign, n_boot=cfg.live_n_boot, ci=cfg.ci, every_s=cfg.live_every_s)
    app = build_app(campaign, max_body_bytes=cfg.max_body_bytes, live=live)
    raters = campaign.seats()
    print(f"serving export {campaign.export_id} ({len(campaign.pairs)} pairs) from {cfg.pairs}; "
          f"database {campaign.store.engine.url.render_as_string(hide_password=True)}")
    print(f"{len(raters)} rater(s) invited" + ("" if raters else
          f"; invite some with: python -m bench.rate invite pairs={cfg.pairs} n=N"))
    print(f"admin page: {cfg.link_base}/admin/{campaign.admin_token}  (do not share)", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, access_log=False, log_level=cfg.log_level)
