"""layerscope finetune: fine-tune on the source language, evaluate zero-shot on target languages."""

from __future__ import annotations

import argparse

from ._common import add_realign_conventions, command_line

HELP = "fine-tune for PoS, NER, NLI or QA and evaluate zero-shot transfer per language, over seeds"
DESCRIPTION = """\
Fine-tune a model with a task head on source-language (usually English) training data, then
evaluate it zero-shot on every target language given, once per seed. Optionally realign first
(--realign before: realign with a freeze policy, then fine-tune everything; as many realignment
steps as fine-tuning steps by default) or jointly (--realign during: task loss + 0.1 x the
realignment loss at every step, the freeze policy keeping the realignment gradient out of the
frozen blocks). AdamW, linear warm-up over 10% of the steps then linear decay, a batch of 32
(in one forward pass unless --micro-batch-size splits it), no gradient clipping; defaults per
task and model as the official AlignFreeze scripts set them (96 sub-tokens; lr 2e-5, 7.5e-6 for
XLM-R); deterministic on CPU for a seed.

Writes the per-seed table (one row per seed and method, final_eval_<lang>_<metric> columns, the
layout of the published AlignFreeze results), a tidy table (seed, method, lang, metric, score)
beside it as <name>.tidy.csv, and <name>.json (settings, provenance, loss histories). Both CSVs
are read by 'layerscope gains' and 'layerscope regress'."""
EPILOG = """\
tasks and data:
  pos   UD CoNLL-U files (UPOS tags on the first sub-token of each word)      token accuracy
  ner   WikiANN-style 'token<TAB>TAG' IOB2 files ('en:' prefixes removed)     entity F1, P, R, token accuracy
  nli   XNLI-style TSV: premise, hypothesis, label (header or XTREME layout;  accuracy
        an XNLI file with a 'language' column gives every language in it)
  qa    SQuAD / XQuAD JSON                                                     exact match and F1

--train / --eval / --dev specs (comma-separated):
  FILE                 language from the file name (fr_pud-ud-test.conllu, xquad.de.json)
  LANG=FILE            that file for LANG
  DIR                  every file of the task's format named with a language code
  hf:CONFIGS[@SPLIT]   Hugging Face datasets (pip install datasets; needs internet):
                       pos hf:en_ewt / hf:fr_pud,de_pud; ner and nli hf:en / hf:fr,de;
                       qa hf:squad (training) / hf:de,ru (XQuAD); hf:DATASET:CONFIGS for another dataset

methods (the 'method' column, as in the published results; --method overrides):
  baseline                               fine-tuning only (--baseline adds it to a realignment run)
  before_<aligner>                       --realign before --freeze none
  freeze_realign_unfreeze_<aligner>      --realign before --freeze lower   (AlignFreeze)
  freeze_realign_unfreeze_last_half_...  --realign before --freeze upper
  during_<aligner>, during_partial_freeze_front_/back_<aligner>   --realign during [--freeze lower|upper]
  aligner: dico (dict:DIR), eflomal, embed

examples:
  layerscope finetune base.pt --task pos --train en_ewt-ud-train.conllu --eval ud/pud/ --seeds 31,42,66 -o pos.csv
  layerscope finetune base.pt --task pos --train en_ewt.conllu --eval ud/pud/ --realign before \\
      --parallel tatoeba:tatoeba_challenge --pairs dict:muse/ --freeze lower --baseline -o pos_af.csv
  layerscope finetune xlm-roberta-base --task nli --train hf:en --eval hf:fr,de,ar,zh --epochs 2 -o xnli.csv
  layerscope finetune base.pt --task qa --train squad-train-v1.1.json --eval xquad/ --realign during \\
      --parallel flores:flores200/dev --pairs dict:muse/ -o xquad.csv
  layerscope gains pos_af.csv --method freeze_realign_unfreeze_dico
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="MODEL_OR_CKPT",
                        help="checkpoint (.pt), HF directory, hub id, or .safetensors/state_dict with --model")
    parser.add_argument("--task", required=True, help="pos | ner | nli | qa")
    parser.add_argument("--train", required=True, metavar="SPEC", help="source-language training data")
    parser.add_argument("--eval", required=True, metavar="SPEC", help="target-language evaluation data")
    parser.add_argument("--dev", metavar="SPEC", help="source-language evaluation data (the 'same' columns)")
    parser.add_argument("--source-lang", default="en",
                        help="language of a training file whose name names none (default: en)")
    parser.add_argument("--seeds", default="31,42,66", help="one run per seed (default: 31,42,66)")

    training = parser.add_argument_group("fine-tuning")
    training.add_argument("--epochs", type=float, help="epochs (default: 5 for pos, ner and qa, 2 for nli)")
    training.add_argument("--steps", type=int, help="optimiser steps (overrides --epochs)")
    training.add_argument("--batch-size", type=int, default=32, help="effective batch size (default: 32)")
    training.add_argument("--micro-batch-size", type=int,
                          help="examples per forward pass when memory is short; gradients accumulate to "
                               "--batch-size (default: the whole batch in one pass, per process)")
    training.add_argument("--lr", type=float,
                          help="AdamW peak learning rate (default: 2e-5; 7.5e-6 for XLM-R, from the config's "
                               "model_type)")
    training.add_argument("--warmup", type=float, default=0.1,
                          help="fraction of steps of linear warm-up (default: 0.1)")
    training.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default: 0)")
    training.add_argument("--max-grad-norm", type=float, default=0.0, metavar="NORM",
                          help="clip the gradient norm to NORM (default: 0 = no clipping, as published)")
    training.add_argument("--max-length", type=int, help="sub-tokens per input (default: 96)")
    training.add_argument("--labels", help="ner label set, comma-separated (default: those of the training file)")
    training.add_argument("--limit", type=int, metavar="N", help="use at most N training examples")
    training.add_argument("--eval-limit", type=int, metavar="N", help="use at most N examples per evaluation language")

    realign = parser.add_argument_group("realignment")
    realign.add_argument("--realign", choices=["none", "before", "during"], default="none",
                         help="schedule: none (default), before, during")
    realign.add_argument("--baseline", action="store_true", help="also run plain fine-tuning (method 'baseline')")
    realign.add_argument("--method", help="method label in the tables (default: the published naming)")
    realign.add_argument("--parallel", metavar="SPEC",
                         help="parallel corpus: tatoeba:DIR, flores:DIR, tsv:FILE, pud:DIR or sample")
    realign.add_argument("--pairs", metavar="SOURCE", help="word pairs: dict:DIR | eflomal | embed[:LAYER]")
    realign.add_argument("--realign-langs", metavar="CODES", help="realignment languages (default: all in the corpus)")
    realign.add_argument("--freeze", metavar="POLICY",
                         help="none | lower | upper | embeddings | block ranges (default: lower for before, "
                              "none for during)")
    realign.add_argument("--realign-steps", type=int, help="realignment steps (default: as many as fine-tuning)")
    realign.add_argument("--realign-lr", type=float, help="realignment learning rate (default: 2e-5; 7.5e-6 XLM-R)")
    realign.add_argument("--realign-layer", type=int,
                         help="realignment layer (default: the last, L; -2 = L-1, what the official code realigns)")
    realign.add_argument("--realign-batch-size", type=int, default=16, help="sentence pairs per batch (default: 16)")
    add_realign_conventions(realign, prefix="realign-")
    realign.add_argument("--during-weight", type=float, default=0.1,
                         help="weight of the realignment loss in --realign during (default: 0.1)")

    runtime = parser.add_argument_group("model and output")
    runtime.add_argument("--model", metavar="HUB_ID_OR_DIR",
                         help="architecture and tokenizer for bare weights (.safetensors or a state_dict .pt)")
    runtime.add_argument("--model-name", help="the 'model' column (default: the checkpoint's name)")
    runtime.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                         help="where to train (default: auto = cuda if available)")
    runtime.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                         help="forward-pass autocast (default: auto = bf16 on a GPU or a CPU with native bf16, "
                              "else fp32; losses and optimiser states stay float32)")
    runtime.add_argument("--kernels", default="auto", choices=["auto", "fast", "torch"],
                         help="training kernels (default: auto = fast on a CPU: cheaper dropout masks, attention "
                              "with dropout in the autocast dtype, shared casts; torch = PyTorch's own)")
    runtime.add_argument("--trust-remote-code", action="store_true",
                         help="allow model code from the hub (off by default: it runs arbitrary code)")
    runtime.add_argument("-o", "--output", required=True, metavar="RESULTS.csv",
                         help="per-seed CSV to write; <name>.tidy.csv and <name>.json go beside it")
    runtime.add_argument("--force", action="store_true", help="replace existing output files")


def run(args: argparse.Namespace) -> int:
    from ..tasks import finetune

    labels = [x.strip() for x in args.labels.split(",") if x.strip()] if args.labels else None
    result = finetune(
        args.source,
        task=args.task,
        train=args.train,
        eval=args.eval,
        dev=args.dev,
        seeds=args.seeds,
        source_lang=args.source_lang,
        realign=None if args.realign == "none" else args.realign,
        include_baseline=args.baseline,
        method=args.method,
        epochs=args.epochs,
        steps=args.steps,
        batch_size=args.batch_size,
        micro_batch_size=args.micro_batch_size,
        lr=args.lr,
        warmup=args.warmup,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        max_length=args.max_length,
        labels=labels,
        limit=args.limit,
        eval_limit=args.eval_limit,
        parallel=args.parallel,
        pairs=args.pairs,
        realign_langs=args.realign_langs,
        freeze=args.freeze,
        realign_steps=args.realign_steps,
        realign_lr=args.realign_lr,
        realign_layer=args.realign_layer,
        realign_batch_size=args.realign_batch_size,
        realign_negatives=args.realign_negatives,
        realign_keep_space_tokens=args.realign_keep_space_tokens,
        realign_casefold=args.realign_casefold,
        during_weight=args.during_weight,
        model=args.model,
        model_name=args.model_name,
        device=args.device,
        precision=args.precision,
        kernels=args.kernels,
        trust_remote_code=args.trust_remote_code,
        output=args.output,
        force=args.force,
        command=command_line(),
    )
    from ..distributed import workers

    if not workers(args.device).is_main:
        return 0
    print(result.format_summary())
    print("wrote " + ", ".join(str(p) for p in result.paths.values()))
    return 0
