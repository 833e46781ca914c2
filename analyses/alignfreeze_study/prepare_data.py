"""Download the data of the AlignFreeze study into analyses/alignfreeze_study/data/ (needs internet).

    python analyses/alignfreeze_study/prepare_data.py [--out DIR] [--only opus100,muse,ud,hf]

- ``opus100/``: a seeded sample of ``--pairs-per-lang`` English–X sentence pairs per language
  from the OPUS-100 training sets (Hugging Face ``Helsinki-NLP/opus-100``), written as
  ``tatoeba.<xxx>-eng.<xxx>`` / ``tatoeba.<xxx>-eng.eng`` line-aligned files (ISO 639-3 names),
  the layout layerscope's ``tatoeba:DIR`` reader takes (each language with its own English side).
- ``muse/``: the MUSE bilingual dictionaries ``en-xx.txt`` (full versions).
- ``ud/en/``: UD English-EWT train and test; ``ud/test/``: one UD test treebank per language
  (CoNLL-U from the treebanks' GitHub repositories at the release tag ``--ud-tag``).
- ``hf``: NER (WikiANN), NLI (XNLI) and QA (SQuAD, XQuAD) are read by the sweep itself through
  ``hf:`` specs; this step only loads them once so that they are in the Hugging Face cache
  (useful when compute nodes have no internet).

Files that exist are kept, so the script can be re-run after an interruption. Licences: OPUS-100
(per-corpus licences of OPUS), MUSE (CC BY-NC 4.0), UD (per treebank, see each repository),
WikiANN, XNLI (CC BY-NC 4.0), SQuAD (CC BY-SA 4.0), XQuAD (CC BY-SA 4.0): research use.
"""

from __future__ import annotations

import argparse
import random
import sys
import urllib.request
from pathlib import Path

from layerscope.corpora import languages
from layerscope.outputs import atomic_write_bytes, atomic_write_text

LANGS = ("af ar bg ca cs da de el es fa fi fr he hi hu it ja ko lt lv no pl pt ro ru sk sl sv ta th tr uk "
         "vi zh").split()
MUSE_URL = "https://dl.fbaipublicfiles.com/arrival/dictionaries/en-{lang}.txt"
UD_URL = "https://raw.githubusercontent.com/UniversalDependencies/{repo}/{tag}/{file}"
# One test treebank per language: our choice (the larger, commonly used one); the treebanks of
# the published study are not recorded in its result files.
TREEBANKS = {
    "af": ("UD_Afrikaans-AfriBooms", "af_afribooms"), "ar": ("UD_Arabic-PADT", "ar_padt"),
    "bg": ("UD_Bulgarian-BTB", "bg_btb"), "ca": ("UD_Catalan-AnCora", "ca_ancora"),
    "cs": ("UD_Czech-PDT", "cs_pdt"), "da": ("UD_Danish-DDT", "da_ddt"), "de": ("UD_German-GSD", "de_gsd"),
    "el": ("UD_Greek-GDT", "el_gdt"), "es": ("UD_Spanish-GSD", "es_gsd"), "fa": ("UD_Persian-Seraji", "fa_seraji"),
    "fi": ("UD_Finnish-TDT", "fi_tdt"), "fr": ("UD_French-GSD", "fr_gsd"), "he": ("UD_Hebrew-HTB", "he_htb"),
    "hi": ("UD_Hindi-HDTB", "hi_hdtb"), "hu": ("UD_Hungarian-Szeged", "hu_szeged"),
    "it": ("UD_Italian-ISDT", "it_isdt"), "ja": ("UD_Japanese-GSD", "ja_gsd"), "ko": ("UD_Korean-GSD", "ko_gsd"),
    "lt": ("UD_Lithuanian-ALKSNIS", "lt_alksnis"), "lv": ("UD_Latvian-LVTB", "lv_lvtb"),
    "no": ("UD_Norwegian-Bokmaal", "no_bokmaal"), "pl": ("UD_Polish-PDB", "pl_pdb"),
    "pt": ("UD_Portuguese-Bosque", "pt_bosque"), "ro": ("UD_Romanian-RRT", "ro_rrt"),
    "ru": ("UD_Russian-SynTagRus", "ru_syntagrus"), "sk": ("UD_Slovak-SNK", "sk_snk"),
    "sl": ("UD_Slovenian-SSJ", "sl_ssj"), "sv": ("UD_Swedish-Talbanken", "sv_talbanken"),
    "ta": ("UD_Tamil-TTB", "ta_ttb"), "th": ("UD_Thai-PUD", "th_pud"), "tr": ("UD_Turkish-IMST", "tr_imst"),
    "uk": ("UD_Ukrainian-IU", "uk_iu"), "vi": ("UD_Vietnamese-VTB", "vi_vtb"), "zh": ("UD_Chinese-GSD", "zh_gsd"),
}
HF_EVAL = {"wikiann": LANGS, "xnli": "ar bg de el es fr hi ru th tr vi zh".split(),
           "xquad": "ar de el es hi ro ru th tr vi zh".split()}


def download(url: str, target: Path) -> None:
    if target.exists():
        return
    print(f"  {url}", file=sys.stderr)
    with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 (fixed https URLs)
        atomic_write_bytes(target, response.read())


def opus100(out: Path, langs: list[str], n: int, seed: int) -> None:
    """``n`` random non-empty pairs per language from the OPUS-100 training split."""
    import datasets

    for lang in langs:
        iso3 = languages.get(lang).iso3
        target, english = out / f"tatoeba.{iso3}-eng.{iso3}", out / f"tatoeba.{iso3}-eng.eng"
        if target.exists() and english.exists():
            continue
        config = "-".join(sorted(["en", lang]))
        rows = datasets.load_dataset("Helsinki-NLP/opus-100", config, split="train")
        pairs = [(r["translation"]["en"].strip(), r["translation"][lang].strip()) for r in rows]
        pairs = [(e, x) for e, x in pairs if e and x and "\n" not in e + x]
        chosen = sorted(random.Random(seed).sample(range(len(pairs)), min(n, len(pairs))))
        atomic_write_text(english, "".join(pairs[i][0] + "\n" for i in chosen))
        atomic_write_text(target, "".join(pairs[i][1] + "\n" for i in chosen))
        print(f"opus100 {lang}: {len(chosen)} of {len(pairs)} pairs", file=sys.stderr)


def muse(out: Path, langs: list[str]) -> None:
    for lang in langs:
        download(MUSE_URL.format(lang=lang), out / f"en-{lang}.txt")


def ud(out: Path, langs: list[str], tag: str) -> None:
    for split in ("train", "test"):
        download(UD_URL.format(repo="UD_English-EWT", tag=tag, file=f"en_ewt-ud-{split}.conllu"),
                 out / "en" / f"en_ewt-ud-{split}.conllu")
    for lang in langs:
        repo, stem = TREEBANKS[lang]
        download(UD_URL.format(repo=repo, tag=tag, file=f"{stem}-ud-test.conllu"), out / "test" / f"{stem}-ud-test.conllu")


def prefetch_hf(langs: list[str]) -> None:
    """Load every Hugging Face split the sweep reads once, so that it is cached."""
    import datasets

    wanted = set(langs)
    jobs = [("unimelb-nlp/wikiann", "en", "train"), ("facebook/xnli", "en", "train"),
            ("rajpurkar/squad", "plain_text", "train"), ("google/xquad", "xquad.en", "validation")]
    jobs += [("unimelb-nlp/wikiann", c, "test") for c in ["en", *HF_EVAL["wikiann"]] if c in wanted or c == "en"]
    jobs += [("facebook/xnli", c, "test") for c in ["en", *HF_EVAL["xnli"]]]
    jobs += [("google/xquad", f"xquad.{c}", "validation") for c in HF_EVAL["xquad"]]
    for name, config, split in jobs:
        print(f"hf {name} {config} {split}", file=sys.stderr)
        datasets.load_dataset(name, config, split=split)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "data")
    parser.add_argument("--only", default="opus100,muse,ud,hf", help="steps to run (default: all)")
    parser.add_argument("--langs", default=",".join(LANGS), help="target languages (default: the 34 of the study)")
    parser.add_argument("--pairs-per-lang", type=int, default=1000,
                        help="OPUS-100 pairs per language (default 1000; see README: inferred, not published)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the OPUS-100 sample (default 0)")
    parser.add_argument("--ud-tag", default="r2.13", help="UD release tag of the treebank repositories")
    args = parser.parse_args(argv)
    langs = [code.strip() for code in args.langs.split(",") if code.strip()]
    steps = {step.strip() for step in args.only.split(",")}
    if "opus100" in steps:
        opus100(args.out / "opus100", langs, args.pairs_per_lang, args.seed)
    if "muse" in steps:
        muse(args.out / "muse", langs)
    if "ud" in steps:
        ud(args.out / "ud", langs, args.ud_tag)
    if "hf" in steps:
        prefetch_hf(langs)
    print(f"data in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
