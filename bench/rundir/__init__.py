"""The run directory: the one place that names its files, reads and writes them, and locks it.

    RUN/
      images/w{w}/{prompt_id}_s{k}.png   written by the generator through ``atomic_write_bytes``
      manifest.csv                       MANIFEST_COLUMNS, one row per image: read_manifest / write_manifest
      generation.json                    settings that change pixels: check_generation / write_generation
      metrics.csv                        METRICS_COLUMNS, one row per (w, category): read_metrics / write_metrics
      metrics.json, image_scores.csv     what the metrics are; per-image scores
      image_metrics.safetensors          per-image features and verdicts (bench.metrics.image_cache)
      run_info.json                      versions, revision, seeds, timings: write_json
      .hydra/config.yaml                 the resolved configuration: read_config
      .lock                              RunLock: one run writes a run directory at a time

Every write goes to a process-unique temporary name and is renamed into place, so a reader
never sees half a file and a killed process never leaves one.
"""
from .files import (GENERATION, HYDRA_CONFIG, HYDRA_DIR, IMAGE_CACHE, IMAGE_SCORES, MANIFEST, METRICS, METRICS_JSON,
                    RANDOM_WEIGHTS, REPORT_HTML, REPORT_MD, RUN_INFO, atomic_write_bytes, atomic_write_text,
                    file_sha256, is_run_dir, read_json, save_figure, write_json)
from .lock import LOCK_NAME, RunLock, RunLockedError, run_lock
from .tables import (ADDED_GENERATION_KEYS, MANIFEST_COLUMNS, METRICS_COLUMNS, METRICS_TEXT_COLUMNS, ManifestError,
                     RunConfigMismatch, check_generation, differing_keys, read_config, read_config_text, read_hydra_file,
                     read_manifest, read_metrics, with_added_keys, write_generation, write_hydra_files,
                     write_manifest, write_metrics)

__all__ = [
    "GENERATION", "HYDRA_CONFIG", "HYDRA_DIR", "IMAGE_CACHE", "IMAGE_SCORES", "MANIFEST", "METRICS", "METRICS_JSON",
    "RANDOM_WEIGHTS", "REPORT_HTML", "REPORT_MD", "RUN_INFO", "atomic_write_bytes", "atomic_write_text",
    "file_sha256", "is_run_dir", "read_json", "save_figure", "write_json",
    "LOCK_NAME", "RunLock", "RunLockedError", "run_lock",
    "ADDED_GENERATION_KEYS", "MANIFEST_COLUMNS", "METRICS_COLUMNS", "METRICS_TEXT_COLUMNS", "ManifestError",
    "RunConfigMismatch", "check_generation", "differing_keys", "with_added_keys", "read_config", "read_config_text", "read_hydra_file",
    "read_manifest", "read_metrics",
    "write_generation", "write_hydra_files", "write_manifest", "write_metrics",
]
