"""DrawBench rating campaigns: the rating server and what the analysis needs beside it.

    python -m bench.rate serve  pairs=DIR [db=URL] [host=127.0.0.1] [port=8000]
    python -m bench.rate invite pairs=DIR n=N
    python -m bench.rate export pairs=DIR out=FILE

One concept per module:

- ``config``: the campaign settings (``conf/rate.yaml``) as a typed value;
- ``engine``, ``schema``, ``store``: the database (SQLite by default, PostgreSQL by URL), its
  tables, and every read and write of answers, raters and assignments;
- ``assign``: which pairs each rater sees, in which order, and the attention checks;
- ``invite``: new raters (random tokens), ``DIR/invites.csv``;
- ``payload``: the checks on a posted answer; ``app``: the HTTP routes; ``pages``: the HTML;
- ``live``: the admin page's numbers (progress, agreement, preference, consistency);
- ``export``: the rating CSV the static page downloads, from the database;
- ``design``, ``bradley_terry``, ``metric_agreement``: several models in one export, their
  Bradley-Terry strengths, and whether the automatic metrics agree with the raters.

This ``__init__`` imports nothing, so ``bench.pairs`` and ``bench.ratings`` can use the pure
modules without loading the server.
"""
