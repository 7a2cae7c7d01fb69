"""Prompt sets: DrawBench, MS-COCO captions, PartiPrompts and the synthetic shapes set."""
from .coco import coco_image_id, coco_prompt_id
from .errors import PromptDownloadError, PromptFileError
from .fetch import data_dir
from .records import PromptRecord
from .registry import PROMPT_SETS, PromptSetName, load_prompts, read_prompt_file
from .shapes_set import shapes_prompts

__all__ = ["PromptRecord", "PromptFileError", "PromptDownloadError", "PROMPT_SETS", "PromptSetName",
           "load_prompts", "read_prompt_file", "shapes_prompts", "data_dir", "coco_image_id", "coco_prompt_id"]
