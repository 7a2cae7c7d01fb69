"""Performance benchmark of imagen-bench: one module per measurement over ``benchmarks.common``.

``python -m benchmarks.run`` runs them all and writes ``benchmarks/results.json`` (see
benchmarks/README.md). Importing any module of this package changes neither ``os.environ`` nor
``sys.path``; the entry points set the offline defaults in their ``main()``.
"""
