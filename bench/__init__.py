"""imagen-bench: evaluation harness for text-to-image diffusion. Nothing happens at import time."""
