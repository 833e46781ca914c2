"""layerscope info: what a checkpoint holds."""

from __future__ import annotations

import argparse

from ._common import add_model_loading

HELP = "print a checkpoint's architecture, layers, parameters, meta and content hash"
DESCRIPTION = HELP
EPILOG = """\
examples:
  layerscope info base.pt
  layerscope info realigned.pt --json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="layerscope checkpoint, HF directory, hub id, or weights with --model")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_model_loading(parser)


def describe(encoder) -> dict:
    groups = encoder.parameter_groups()
    params = dict(encoder.model.named_parameters())
    count = lambda names: int(sum(params[n].numel() for n in names))  # noqa: E731
    return {
        "name": encoder.name,
        "architecture": encoder.model.config.model_type,
        "model_class": type(encoder.model).__name__,
        "blocks": encoder.num_layers,
        "layers_with_embeddings": encoder.num_layers + 1,
        "hidden_size": encoder.hidden_size,
        "block_paths": f"{encoder.block_paths[0]} … {encoder.block_paths[-1]}",
        "parameters": count(params),
        "parameters_embeddings": count(groups["embeddings"]),
        "parameters_per_block": count(groups["block.0"]),
        "vocab_size": len(encoder.tokenizer),
        "content_hash": encoder.source_hash,
        "meta": encoder.checkpoint_meta,
    }


def run(args: argparse.Namespace) -> int:
    import json

    from ..models.encoder import load_encoder

    encoder = load_encoder(args.checkpoint, model=args.model, device="cpu", trust_remote_code=args.trust_remote_code)
    info = describe(encoder)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    for key, value in info.items():
        if key == "meta":
            continue
        print(f"{key:<24}{value:,}" if isinstance(value, int) else f"{key:<24}{value}")
    meta = info["meta"] or {}
    if meta:
        print("meta:")
        for key, value in meta.items():
            text = json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)
            print(f"  {key:<22}{text if len(text) < 200 else text[:197] + '...'}")
    return 0
