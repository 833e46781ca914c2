"""Word-pair sources measured against gold word alignments: precision, recall, AER.

    python benchmarks/pair_sources.py                              # dict + eflomal
    python benchmarks/pair_sources.py --model runs/rb/base.pt --model runs/rb/realigned-none.pt

Gold sets (from ``../shared/data/word_align`` or ``$LAYERSCOPE_TEST_DATA/word_align``):
awesome-align's en-fr, ja-en, ro-en, zh-en (sure ``i-j`` and possible ``ipj`` links) and the
XL-WA test sets English–{bg da es et hu it nl pt ru sl} (sure links only). Every source gets
the gold tokenisation. Two rows per aligner:

* ``raw``: the aligner's own links (eflomal: grow-diag-final-and; embed: mutual argmax);
* ``pairs``: what realignment trains on — one-to-one links, identical strings dropped.

The dictionary source only exists in its filtered form. Recall of the ``pairs`` rows is low by
design (many-to-many links, punctuation and names are dropped); precision is what matters
for realignment. eflomal is unsupervised, so each gold set is aligned together with up to
``--extra`` Tatoeba-Challenge sentence pairs of the same language (not for zh/ja, whose gold
files are word-segmented while the extra text would fall back to characters).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _data import require_data_dir  # noqa: E402
from layerscope.corpora import languages  # noqa: E402
from layerscope.realign.links import alignment_scores, finalize_links
from layerscope.realign.pairs import DictionarySource, EflomalSource, EmbeddingSource
from layerscope.realign.words import Words, split_words, words_from_tokens  # noqa: E402

AWESOME = {"enfr": ("en", "fr", False), "jaen": ("ja", "en", True), "roen": ("ro", "en", True),
           "zhen": ("zh", "en", True)}
XL_WA = ("bg", "da", "es", "et", "hu", "it", "nl", "pt", "ru", "sl")


def _gold_links(text: str, one_based: bool) -> tuple[list, list]:
    sure, possible = [], []
    offset = 1 if one_based else 0
    for item in text.split():
        match = re.fullmatch(r"(\d+)([-p])(\d+)", item)
        if not match:
            raise ValueError(f"bad gold link {item!r}")
        link = (int(match.group(1)) - offset, int(match.group(3)) - offset)
        (sure if match.group(2) == "-" else possible).append(link)
    return sure, possible


def read_gold(root: Path) -> dict[str, dict]:
    """{name: {lang, en: [Words], xx: [Words], sure, possible}} with English always first."""
    sets = {}
    for name, (src_lang, tgt_lang, swap) in AWESOME.items():
        lines = (root / "awesome_align" / f"{name}.src-tgt").read_text(encoding="utf-8").splitlines()
        gold = (root / "awesome_align" / f"{name}.gold").read_text(encoding="utf-8").splitlines()
        lang = tgt_lang if src_lang == "en" else src_lang
        joiner = "" if languages.get(lang).spaceless else " "
        en_side, xx_side, sure, possible = [], [], [], []
        for line, links in zip(lines, gold):
            left, right = (part.split() for part in line.split(" ||| "))
            s, p = _gold_links(links, one_based=True)
            if swap:
                left, right = right, left
                s, p = [(j, i) for i, j in s], [(j, i) for i, j in p]
            en_side.append(words_from_tokens(left))
            xx_side.append(words_from_tokens(right, joiner=joiner))
            sure.append(s)
            possible.append(p)
        sets[f"awesome {lang}"] = dict(lang=lang, en=en_side, xx=xx_side, sure=sure, possible=possible)
    for lang in XL_WA:
        path = root / "xl_wa" / lang / "test.tsv"
        en_side, xx_side, sure = [], [], []
        for row in path.read_text(encoding="utf-8").splitlines():
            fields = row.split("\t")
            if len(fields) < 3:
                continue
            en_side.append(words_from_tokens(fields[0].split()))
            xx_side.append(words_from_tokens(fields[1].split()))
            sure.append(_gold_links(fields[2], one_based=False)[0])
        sets[f"xl-wa {lang}"] = dict(lang=lang, en=en_side, xx=xx_side, sure=sure, possible=None)
    return sets


def extra_pairs(root: Path, lang: str, n: int) -> tuple[list[Words], list[Words]]:
    if n <= 0 or languages.get(lang).spaceless:
        return [], []
    iso3 = languages.get(lang).iso3
    base = root / "tatoeba_challenge" / f"eng-{iso3}"
    en_path, xx_path = base.with_suffix(".eng"), base.with_suffix(f".{iso3}")
    if not en_path.exists():
        return [], []
    en = en_path.read_text(encoding="utf-8").splitlines()[:n]
    xx = xx_path.read_text(encoding="utf-8").splitlines()[:n]
    return [split_words(s, "en") for s in en], [split_words(s, lang) for s in xx]


def evaluate(sets: dict, args) -> list[dict]:
    root = require_data_dir()
    rows = []
    dictionary = DictionarySource(root / "muse", casefold=True)  # as in the figures of docs/realignment.md
    eflomal = EflomalSource()
    try:
        eflomal.check([], "en")
        have_eflomal = True
    except Exception as exc:  # LayerscopeError: not installed
        print(f"skipping eflomal: {exc}", file=sys.stderr)
        have_eflomal = False
    encoders = []
    for spec in args.model:
        from layerscope.models import load_encoder

        encoder = load_encoder(spec)
        known = set(encoder.checkpoint_meta.get("languages") or encoder.checkpoint_meta.get("recipe_languages") or [])
        encoders.append((Path(spec).stem, encoder, known))

    def add(name, source, kind, predicted, gold, seconds):
        scores = alignment_scores(predicted, gold["sure"], gold["possible"])
        rows.append({"gold": name, "lang": gold["lang"], "source": source, "links": kind,
                     "sentences": len(predicted), **scores.as_dict(), "seconds": round(seconds, 1)})
        print(f"{name:12s} {source:24s} {kind:5s} P={scores.precision:.3f} R={scores.recall:.3f} "
              f"AER={scores.aer:.3f} ({scores.predicted} links, {seconds:.1f}s)", file=sys.stderr)

    for name, gold in sets.items():
        lang = gold["lang"]
        if (root / "muse" / f"en-{lang}.txt").exists():
            start = time.perf_counter()
            predicted = dictionary.align(gold["en"], gold["xx"], lang=lang)
            add(name, "dict (MUSE)", "pairs", predicted, gold, time.perf_counter() - start)
        if have_eflomal:
            en_extra, xx_extra = extra_pairs(root, lang, args.extra)
            start = time.perf_counter()
            raw = eflomal.raw_links(gold["en"] + en_extra, gold["xx"] + xx_extra, lang=lang)[: len(gold["en"])]
            seconds = time.perf_counter() - start
            label = f"eflomal (+{len(en_extra)} extra)"
            add(name, label, "raw", raw, gold, seconds)
            add(name, label, "pairs", [finalize_links(k, s, t) for k, s, t in zip(raw, gold["en"], gold["xx"])],
                gold, seconds)
        for label, encoder, known in encoders:
            if known and lang not in known:
                continue
            source = EmbeddingSource(args.embed_layer, encoder=encoder)
            start = time.perf_counter()
            raw = source.raw_links(gold["en"], gold["xx"], lang=lang)
            seconds = time.perf_counter() - start
            tag = f"embed {label} L{source.resolved_layer()}"
            add(name, tag, "raw", raw, gold, seconds)
            add(name, tag, "pairs", [finalize_links(k, s, t) for k, s, t in zip(raw, gold["en"], gold["xx"])],
                gold, seconds)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| gold set | source | links | P | R | AER | links |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['gold']} | {row['source']} | {row['links']} | {row['precision']:.3f} | "
                     f"{row['recall']:.3f} | {row['aer']:.3f} | {row['predicted']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], help="checkpoint for the embed source (repeatable)")
    parser.add_argument("--embed-layer", type=int, default=None, help="layer of the embed source (default 2L/3)")
    parser.add_argument("--extra", type=int, default=20000, help="extra Tatoeba-Challenge pairs for eflomal")
    parser.add_argument("--only", help="comma-separated gold sets, e.g. 'awesome fr,xl-wa es'")
    parser.add_argument("--out", type=Path, help="write results as JSON and a markdown table here (prefix)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    sets = read_gold(require_data_dir() / "word_align")
    if args.only:
        wanted = {s.strip() for s in args.only.split(",")}
        sets = {k: v for k, v in sets.items() if k in wanted}
    rows = evaluate(sets, args)
    table = markdown(rows)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
        args.out.with_suffix(".md").write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
