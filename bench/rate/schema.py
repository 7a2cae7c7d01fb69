"""The tables of a rating campaign.

- ``campaign``: key/value facts (the export id it belongs to, the admin token, settings);
- ``raters``: one row per invited rater, with their token;
- ``assignments``: each rater's items in the order shown; an item is a pair of the export, or an
  attention check (``swapped``: the same pair again with the sides exchanged, item id ``PAIR/swap``);
- ``answer_history``: every answer and every undo (``answer`` NULL) as it arrived, never changed;
- ``answers``: the latest answer of each rater to each item and question (what analysis reads).
"""
from __future__ import annotations

from sqlalchemy import Boolean, Column, ForeignKey, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

campaign = Table(
    "campaign", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

raters = Table(
    "raters", metadata,
    Column("rater_id", String(64), primary_key=True),
    Column("token", String(128), nullable=False, unique=True),
    Column("invited_at", String(32), nullable=False),
    Column("round", Integer, nullable=False),
)

assignments = Table(
    "assignments", metadata,
    Column("rater_id", String(64), ForeignKey("raters.rater_id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("item_id", String(160), nullable=False),
    Column("pair_id", String(128), nullable=False),
    Column("swapped", Boolean, nullable=False),
)
Index("assignments_item", assignments.c.rater_id, assignments.c.item_id, unique=True)

answer_history = Table(
    "answer_history", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rater_id", String(64), ForeignKey("raters.rater_id"), nullable=False),
    Column("item_id", String(160), nullable=False),
    Column("pair_id", String(128), nullable=False),
    Column("swapped", Boolean, nullable=False),
    Column("question", String(16), nullable=False),
    Column("answer", String(16), nullable=True),
    Column("received_at", String(32), nullable=False),
)

answers = Table(
    "answers", metadata,
    Column("rater_id", String(64), ForeignKey("raters.rater_id"), primary_key=True),
    Column("item_id", String(160), primary_key=True),
    Column("question", String(16), primary_key=True),
    Column("pair_id", String(128), nullable=False),
    Column("swapped", Boolean, nullable=False),
    Column("answer", String(16), nullable=False),
    Column("received_at", String(32), nullable=False),
)
