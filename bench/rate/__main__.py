"""``python -m bench.rate serve|invite|export key=value ...`` (see ``bench.rate.cli``)."""
from bench.rate.cli import main

main()
