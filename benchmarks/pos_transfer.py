"""Real check of ``layerscope finetune``: zero-shot PoS transfer of a tiny model to the PUD languages.

1. Train a WordPiece tokenizer and pretrain a 4-layer BERT (width 128) briefly with masked
   language modelling on FLORES-200 devtest text of English and the 20 other PUD languages
   (1012 sentences each; multilingual text only, no labels, no parallel signal).
2. Fine-tune it for UPOS tagging on UD English-EWT **dev** (2001 sentences; the train file is
   not in the shared data) with :func:`layerscope.finetune`: AdamW, linear warm-up over 10% of
   the steps then linear decay, effective batch 32 (micro-batches of 16), several seeds.
3. Evaluate zero-shot on the 21 PUD treebanks (1000 sentences each; English PUD is the
   in-language check) and compare with the majority-tag baseline (the most frequent tag of the
   English training data, NOUN, predicted for every word).

Run: ``python benchmarks/pos_transfer.py [--out runs/pos_transfer]`` (45 minutes on 2 CPU cores
shared with other jobs: 15 of pretraining, 10 per seed; ``--quick`` for a 15-minute smoke run).
The result is in ``docs/finetuning.md``. Reads
``$LAYERSCOPE_TEST_DATA`` or ``../shared/data`` and exits 0 with a message when it is absent.
Writes ``pos.csv`` (per seed), ``pos.tidy.csv``, ``pos.json`` and ``table.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from _data import find_data_dir  # noqa: E402

FLORES = {"en": "eng_Latn", "ar": "arb_Arab", "cs": "ces_Latn", "de": "deu_Latn", "es": "spa_Latn",
          "fi": "fin_Latn", "fr": "fra_Latn", "gl": "glg_Latn", "hi": "hin_Deva", "id": "ind_Latn",
          "is": "isl_Latn", "it": "ita_Latn", "ja": "jpn_Jpan", "ko": "kor_Hang", "pl": "pol_Latn",
          "pt": "por_Latn", "ru": "rus_Cyrl", "sv": "swe_Latn", "th": "tha_Thai", "tr": "tur_Latn",
          "zh": "zho_Hans"}


def pretrain(data: Path, *, steps: int, seed: int, width: int, layers: int, vocab_size: int):
    """A tokenizer and a briefly MLM-pretrained BERT on FLORES devtest text of the PUD languages."""
    import torch
    from transformers import AutoModel

    from layerscope.models import state_dict_hash
    from layerscope.models.encoder import _finish
    from layerscope.models.pretrain import pretrain_mlm
    from layerscope.models.toymodels import tiny_config, train_tokenizer

    texts: list[str] = []
    for code in FLORES.values():
        path = data / "flores200" / "devtest" / f"{code}.devtest"
        texts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    tokenizer = train_tokenizer(texts, arch="bert", vocab_size=vocab_size)
    config = tiny_config("bert", len(tokenizer), layers=layers, width=width, heads=4, max_positions=256,
                         tokenizer=tokenizer)
    trained = pretrain_mlm(config, tokenizer, texts, steps=steps, batch_size=32, lr=5e-4, max_length=64, seed=seed)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config)
    model.load_state_dict(trained.state_dict(), strict=False)  # the pooler is not trained by MLM
    return _finish(model, tokenizer, name=f"tiny-bert-{layers}x{width}-flores-mlm{steps}",
                   source_hash=state_dict_hash(model.state_dict()), meta={}, tokenizer_name=None, device="cpu")


def markdown(result) -> str:
    summary = result.summary()
    lines = ["| lang | accuracy (mean ± std over seeds) | majority tag | Δ |", "|---|---|---|---|"]
    for row in summary.itertuples():
        std = f" ± {100 * row.std:.1f}" if row.n_seeds > 1 else ""
        lines.append(f"| {row.lang} | {100 * row.mean:.1f}{std} | {100 * row.majority:.1f} | "
                     f"{100 * (row.mean - row.majority):+.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/pos_transfer", help="output directory (default: runs/pos_transfer)")
    parser.add_argument("--seeds", default="31,42,66")
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--eval-limit", type=int, help="sentences per PUD language (default: all 1000)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 200 pretraining steps, 1 seed, 1 epoch, 200 sentences per language")
    args = parser.parse_args(argv)

    data = find_data_dir("ud/pud", "flores200/devtest")
    if data is None:
        print("pos_transfer: no shared data (set LAYERSCOPE_TEST_DATA or put ../shared/data beside the repo); skipped")
        return 0
    if args.quick:
        args.pretrain_steps, args.seeds, args.epochs, args.eval_limit = 200, "31", 1, args.eval_limit or 200
    import torch

    import layerscope
    from layerscope.outputs import atomic_write_text

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    encoder = pretrain(data, steps=args.pretrain_steps, seed=0, width=args.width, layers=args.layers,
                       vocab_size=args.vocab_size)
    pretrain_seconds = time.perf_counter() - started
    result = layerscope.finetune(
        encoder, task="pos", train=data / "ud" / "en_ewt" / "en_ewt-ud-dev.conllu", eval=data / "ud" / "pud",
        seeds=args.seeds, epochs=args.epochs, lr=args.lr, micro_batch_size=16, eval_limit=args.eval_limit,
        max_length=128, max_grad_norm=1.0,  # the settings of the figures in docs/finetuning.md
        device="cpu", output=out / "pos.csv", force=True,
        command=["python", "benchmarks/pos_transfer.py", *(argv if argv is not None else sys.argv[1:])],
    )
    total = time.perf_counter() - started
    table = markdown(result)
    english = result.summary().set_index("lang").loc["en"]
    verdict = "beats" if english["mean"] > english["majority"] else "does NOT beat"
    header = (f"{encoder.name}: fine-tuned on en_ewt dev ({result.run['train']['examples']} sentences, "
              f"{result.run['finetuning_steps']} steps of 32, lr {args.lr}, seeds {args.seeds}); "
              f"pretraining {pretrain_seconds / 60:.1f} min, total {total / 60:.1f} min on {args.threads} "
              f"CPU threads.\nEnglish PUD: {100 * english['mean']:.1f} vs majority tag "
              f"{100 * english['majority']:.1f} ({verdict} it).")
    atomic_write_text(out / "table.md", header + "\n\n" + table + "\n")
    print(header)
    print()
    print(table)
    return 0 if english["mean"] > english["majority"] else 1


if __name__ == "__main__":
    sys.exit(main())
