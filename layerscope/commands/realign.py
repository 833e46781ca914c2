"""layerscope realign: AlignFreeze realignment of a multilingual model on word pairs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_realign_conventions

HELP = "realign a multilingual model on word pairs with part of its layers frozen (AlignFreeze)"
DESCRIPTION = """\
Find word pairs between English and each target language in a parallel corpus (a bilingual
dictionary, the eflomal aligner, or the model's own embeddings), then train the model so that
the vectors of translated words agree: the first sub-token's hidden state at the realignment
layer goes through a projection head into a contrastive loss (temperature 0.1, every other word
of the batch's sentences as a negative, both directions), batches of 16 sentence pairs drawn round-robin
over the languages, Adam with a constant learning rate. The freeze policy holds blocks fixed
during realignment only; the checkpoint written has every parameter trainable again and
records policy, steps, languages, pair counts and sources, seed and the parent's hash."""
EPILOG = """\
pair sources:
  dict:DIR             MUSE dictionaries DIR/en-xx.txt ('en_word xx_word' per line); a pair is kept
                       only if exactly one translation of the English word occurs exactly once in the
                       target sentence and translates no other word there
  eflomal              the eflomal aligner (pip install eflomal), grow-diag-final-and symmetrised
  embed[:LAYER]        the model's own word vectors at LAYER, mutual argmax (SimAlign)

freeze policies (L blocks, 0-based):
  none                 full realignment
  lower                blocks 0 .. L/2-1 frozen (AlignFreeze, front-freezing)
  upper                blocks L/2 .. L-1 frozen (back-freezing)
  embeddings           the embedding layer frozen
  0-5 | 0-2,7          explicit block ranges; combine with '+', e.g. lower+embeddings

examples:
  layerscope realign base.pt --parallel tatoeba:tatoeba_challenge --pairs dict:muse/ \\
      --langs fr,ja,ar --freeze lower --steps 2000 -o realigned.pt
  layerscope realign xlm-roberta-base --parallel flores:flores200/dev --pairs eflomal --freeze upper -o r.pt
  layerscope realign base.pt --parallel sample --pairs embed:3 --freeze none --steps 200 -o r.pt
  layerscope realign base.pt --parallel sample --pairs dict:muse/ -o r.pt --checkpoint-every 100
  layerscope realign base.pt --parallel sample --pairs dict:muse/ -o r.pt --checkpoint-every 100 --resume
  layerscope realign xlm-roberta-base --parallel tatoeba:tatoeba_challenge --pairs dict:muse/ --layer -2 \\
      --steps-from-finetune pos=en_ewt-ud-train.conllu -o r.pt
                       # then: layerscope finetune r.pt --task pos --train en_ewt-ud-train.conllu ...
                       # the published 'before' schedule: as many realignment as fine-tuning steps

data parallel (Hugging Face Accelerate; each process draws its own share of every batch, gradients
are all-reduced, one process writes the checkpoint):
  accelerate launch --multi_gpu --num_processes 4 -m layerscope realign base.pt --parallel sample \\
      --pairs dict:muse/ --batch-size 4 -o r.pt        # effective batch 16 over 4 GPUs
  layerscope realign base.pt --parallel sample --pairs dict:muse/ --batch-size 4 --grad-accumulation 4 -o r.pt
                                                         # the same steps on one device
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="MODEL_OR_CKPT",
                        help="checkpoint (.pt), HF directory, hub id, or .safetensors/state_dict with --model")
    parser.add_argument("--parallel", required=True, metavar="SPEC",
                        help="parallel corpus: tatoeba:DIR, flores:DIR, tsv:FILE, pud:DIR or sample")
    parser.add_argument("--pairs", required=True, metavar="SOURCE", help="dict:DIR | eflomal | embed[:LAYER]")
    parser.add_argument("--langs", metavar="CODES", help="target languages, e.g. fr,ja,ar (default: all in the corpus)")
    parser.add_argument("--pivot", default="en", help="pivot language of the corpus and dictionaries (default: en)")
    parser.add_argument("--freeze", default="lower", metavar="POLICY",
                        help="none | lower | upper | embeddings | block ranges like 0-5 (default: lower)")
    steps = parser.add_mutually_exclusive_group()
    steps.add_argument("--steps", type=int, metavar="N",
                       help="optimizer steps (default: one pass over the sentence pairs; the paper uses "
                            "as many as the fine-tuning run: see --steps-from-finetune)")
    steps.add_argument("--steps-from-finetune", metavar="TASK=TRAIN",
                       help="as many steps as 'layerscope finetune --task TASK --train TRAIN' takes with its "
                            "defaults (the published 'before' schedule), e.g. pos=en_ewt-ud-train.conllu")
    parser.add_argument("--batch-size", type=int, default=16, help="sentence pairs per batch (default: 16)")
    parser.add_argument("--grad-accumulation", type=int, default=1, metavar="K",
                        help="micro-batches per optimiser step (default: 1); the effective batch is "
                             "batch size × K × processes")
    parser.add_argument("--lr", type=float, help="constant Adam learning rate (default: 2e-5; 7.5e-6 for XLM-R)")
    parser.add_argument("--layer", type=int, metavar="I",
                        help="realignment layer: 0 = embeddings ... L = last block, negative from the end "
                             "(default: L; -2 = L-1 is what the official code realigns)")
    add_realign_conventions(parser)
    parser.add_argument("--max-length", type=int, default=96, help="sub-tokens per sentence (default: 96)")
    parser.add_argument("--limit", type=int, metavar="N", help="use at most N sentence pairs per language")
    parser.add_argument("--held-out", type=int, default=0, metavar="N",
                        help="keep the last N sentence pairs per language away from realignment (default: 0)")
    parser.add_argument("--segmenter", metavar="NAME",
                        help="word segmenter for zh/ja/th (default: one word per character; 'jieba' if installed)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the head, dropout and batch order (default: 0)")
    parser.add_argument("--checkpoint-every", type=int, metavar="N",
                        help="save a resumable state (OUTPUT stem + .partial.pt) every N steps")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from its partial state")
    parser.add_argument("--model", metavar="HUB_ID_OR_DIR",
                        help="architecture and tokenizer for bare weights (.safetensors or a state_dict .pt)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where to train (default: auto = cuda if available)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="forward-pass precision (default: auto = bf16 autocast on a GPU or a CPU with "
                             "native bf16, else fp32; the loss and Adam states stay float32)")
    parser.add_argument("--kernels", default="auto", choices=["auto", "fast", "torch"],
                        help="training kernels (default: auto = fast on a CPU: cheaper dropout masks, attention "
                             "with dropout in the autocast dtype, shared casts; torch = PyTorch's own)")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="realigned checkpoint to write (.pt)")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")


def run(args: argparse.Namespace) -> int:
    from ..errors import LayerscopeError

    from ..probes.activations import resolve_device
    from ..models.encoder import load_encoder
    from ..realign import realign
    from ..realign.job import partial_path

    output = Path(args.output)
    resumable = args.resume and partial_path(output).exists()
    if output.exists() and not (args.force or resumable):
        raise LayerscopeError("exists; pass --force to replace it", source=output)

    source = args.source
    if args.model is not None or args.steps_from_finetune:
        source = load_encoder(args.source, model=args.model, device=resolve_device(args.device))
    steps = args.steps
    if args.steps_from_finetune:
        steps = steps_from_finetune(source.tokenizer, args.steps_from_finetune)
    result = realign(
        source,
        parallel=args.parallel,
        pairs=args.pairs,
        langs=args.langs,
        freeze=args.freeze,
        steps=steps,
        batch_size=args.batch_size,
        accumulation=args.grad_accumulation,
        lr=args.lr,
        layer=args.layer,
        max_length=args.max_length,
        seed=args.seed,
        output=output,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        pivot=args.pivot,
        device=args.device,
        precision=args.precision,
        kernels=args.kernels,
        held_out=args.held_out,
        limit=args.limit,
        segmenter=args.segmenter,
        negatives=args.negatives,
        keep_space_tokens=args.keep_space_tokens,
        casefold=args.casefold,
        inplace=True,
    )
    from ..distributed import workers

    if not workers(args.device).is_main:
        return 0
    meta = result.checkpoint.meta
    print(f"realigned {meta['parent']} ({meta['freeze']['description']}) at layer {result.layer} "
          f"for {len(result.history)} steps ({meta['precision']})")
    print(f"loss {meta['first_loss']:.3f} -> {meta['final_loss']:.3f}")
    counts = ", ".join(f"{lang} {n}" for lang, n in result.pair_counts.items())
    print(f"word pairs ({meta['pairs']['source']}): {counts}")
    print(f"wrote {result.path}")
    return 0


def steps_from_finetune(tokenizer, spec: str) -> int:
    """``TASK=TRAIN`` -> the optimiser steps of ``layerscope finetune --task TASK --train TRAIN``
    with its defaults (epochs, batch size 32, max length of the task)."""
    from ..errors import LayerscopeError
    from ..tasks import finetune_steps

    task, sep, train = spec.partition("=")
    if not sep or not task.strip() or not train.strip():
        raise LayerscopeError(f"--steps-from-finetune takes TASK=TRAIN (e.g. pos=en_ewt-ud-train.conllu), got {spec!r}")
    steps = finetune_steps(tokenizer, task=task.strip(), train=train.strip())
    print(f"{steps} realignment steps: as many as fine-tuning {task.strip()} on {train.strip()} takes")
    return steps
