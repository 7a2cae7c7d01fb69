"""The synthetic shapes domain: scenes, captions, renderer and exact scorer."""
from .scene import (COLORS, EXCHANGES, KINDS, SHAPES, RELATIONS, Scene, ShapeObject, binding_swap, count_twin, drop_twin,
                    positional_relations, probe_scenes, reading_order, sample_scene, scene_caption, swapped_scene)
from .render import render, render_batch, render_kinds

__all__ = ["COLORS", "SHAPES", "RELATIONS", "Scene", "ShapeObject", "sample_scene", "scene_caption",
           "render", "render_batch", "render_kinds", "KINDS", "binding_swap", "swapped_scene", "EXCHANGES",
           "positional_relations", "reading_order", "count_twin", "drop_twin", "probe_scenes"]
