"""A served campaign: the export's pairs, the database, and the raters' tokens and items in memory.

Tokens and sequences are cached; an unknown token is looked up again (at most once a second), so
raters invited while the server runs are served without a restart. Only the image names listed in
``pairs.csv`` are ever served, from ``DIR/img/`` (nothing else of the export: not the key, the
invitations or the database).
"""
from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.pairs import BlindPair, read_key, read_pairs
from bench.rate.store import Item, Rater, Store

IMAGE_NAME = re.compile(r"[0-9a-f]{24}\.png")
_RELOAD_EVERY_S = 1.0


@dataclass(frozen=True)
class Seat:
    """A rater with their items by item id (the ``pair_id`` a page posts)."""

    rater: Rater
    items: dict[str, Item]
    order: tuple[Item, ...]


class Campaign:
    def __init__(self, pairs_dir: str | os.PathLike, store: Store) -> None:
        self.dir = Path(pairs_dir)
        self.store = store
        self.pairs: dict[str, BlindPair] = {p.pair_id: p for p in read_pairs(self.dir)}
        self.key = read_key(self.dir)
        self.export_id = next(iter(self.pairs.values())).export_id if self.pairs else ""
        self.images = {Path(im).name for p in self.pairs.values() for im in p.left_images + p.right_images}
        self.admin_token = store.admin_token()
        self._seats: dict[str, Seat] = {}
        self._lock = threading.Lock()
        self._loaded_at = 0.0
        self.reload()

    def reload(self) -> None:
        """Read the raters and their sequences from the database again."""
        items = self.store.items()
        seats = {r.token: Seat(r, {i.item_id: i for i in items.get(r.rater_id, [])},
                               tuple(items.get(r.rater_id, []))) for r in self.store.raters()}
        with self._lock:
            self._seats = seats
            self._loaded_at = time.monotonic()

    def seat(self, token: str) -> Seat | None:
        """The rater holding ``token``, or None (then the server answers 403)."""
        seat = self._seats.get(token)
        if seat is None and time.monotonic() - self._loaded_at > _RELOAD_EVERY_S:
            self.reload()
            seat = self._seats.get(token)
        return seat

    def seats(self) -> list[Seat]:
        return sorted(self._seats.values(), key=lambda s: s.rater.rater_id)

    def image_path(self, name: str) -> Path | None:
        """``DIR/img/NAME`` if ``name`` is an image of this export's pairs, else None."""
        if not IMAGE_NAME.fullmatch(name) or name not in self.images:
            return None
        path = self.dir / "img" / name
        return path if path.is_file() else None
