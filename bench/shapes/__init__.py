"""The synthetic shapes domain: scenes, captions, renderer and exact scorer."""
from .scene import COLORS, SHAPES, RELATIONS, Scene, ShapeObject, sample_scene, scene_caption
from .render import render, render_batch

__all__ = ["COLORS", "SHAPES", "RELATIONS", "Scene", "ShapeObject", "sample_scene", "scene_caption",
           "render", "render_batch"]
