"""A small, readable Imagen cascade (Saharia et al. 2022, arXiv 2205.11487).

Nothing happens at import time: no model loads, no network.
"""
