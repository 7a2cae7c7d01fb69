"""shapes-CLIP: a small image-text encoder trained on the shapes domain (CLIP score and FD features)."""
from .model import MODEL_NAME, ShapesClip, ShapesClipConfig, load_shapes_clip, resize_images, save_shapes_clip

__all__ = ["MODEL_NAME", "ShapesClip", "ShapesClipConfig", "load_shapes_clip", "resize_images", "save_shapes_clip"]
