"""Before/after realignment on a small BERT: does word- and sentence-retrieval rise on held-out text?

    python benchmarks/realign_before_after.py --out runs/realign-bench        # ~20-30 min on 2 CPU cores

1. A 4-layer, width-128 BERT with a WordPiece vocabulary trained here is pretrained briefly with
   masked-language modelling on Tatoeba-Challenge sentences (each side on its own: no parallel
   signal) of English and the chosen languages.
2. It is realigned with MUSE dictionary pairs (``dict:muse``) on Tatoeba-Challenge sentence
   pairs, twice: ``none`` (full realignment) and ``lower`` (AlignFreeze, blocks 0-1 frozen).
3. All three models are evaluated on FLORES-200 devtest, never seen in pretraining or realignment,
   and on the LASER Tatoeba test pairs of which neither side occurs in the training text
   (short sentences of the training domain; ``--no-tatoeba`` skips them):
   * sentence retrieval: top-1 cosine nearest neighbour of mean-pooled sentence vectors among
     the translations, both directions averaged, at every layer, plain and mean-centred;
   * word retrieval: dictionary pairs found in the FLORES sentences (the same unambiguous rule),
     first-sub-token vectors in context; a query is right when the retrieved word is the
     partner's word (same string), among all aligned words of that language, both directions.
4. The ``lower`` checkpoint is checked block by block against the base: blocks 0 … L/2−1 must be
   bit-identical.

Results go to ``OUT/results.json`` and ``OUT/results.md``; checkpoints to ``OUT/*.pt``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _data import require_data_dir  # noqa: E402
import torch  # noqa: E402

from layerscope.corpora import languages  # noqa: E402
from layerscope.corpora import ParallelCorpus, read_corpus  # noqa: E402

DEFAULT_LANGS = "de,fr,es,ru,ar,zh,ja"


def read_tatoeba_challenge(root: Path, langs: list[str], n: int, seed: int) -> tuple[ParallelCorpus, list[str]]:
    """Up to ``n`` random English–X pairs per language, and all their sentences for MLM."""
    pivots, targets, mlm = {}, {}, []
    rng = random.Random(seed)
    for lang in langs:
        iso3 = languages.get(lang).iso3
        en = (root / "tatoeba_challenge" / f"eng-{iso3}.eng").read_text(encoding="utf-8").splitlines()
        xx = (root / "tatoeba_challenge" / f"eng-{iso3}.{iso3}").read_text(encoding="utf-8").splitlines()
        keep = [i for i in range(len(en)) if en[i].strip() and xx[i].strip()]
        rng.shuffle(keep)
        keep = keep[:n]
        pivots[lang] = [en[i].strip() for i in keep]
        targets[lang] = [xx[i].strip() for i in keep]
        mlm += pivots[lang] + targets[lang]
    return ParallelCorpus("en", pivots, targets, name="tatoeba_challenge", spec="tatoeba-challenge"), mlm


def unseen_tatoeba(root: Path, langs: list[str], seen: set[str]) -> ParallelCorpus:
    """LASER Tatoeba pairs of which neither side occurs in the pretraining/realignment text."""
    corpus = read_corpus(f"tatoeba:{root / 'tatoeba_laser'}", languages_=langs)
    pivots, targets = {}, {}
    for lang in corpus.languages:
        keep = [i for i, (e, x) in enumerate(zip(corpus.pivot_sentences[lang], corpus.targets[lang]))
                if e not in seen and x not in seen]
        pivots[lang] = [corpus.pivot_sentences[lang][i] for i in keep]
        targets[lang] = [corpus.targets[lang][i] for i in keep]
    return ParallelCorpus("en", pivots, targets, name="tatoeba_laser-unseen", spec="tatoeba_laser (unseen)")


# --------------------------------------------------------------------------- pretraining


def pretrain(texts: list[str], *, vocab_size: int, layers: int, width: int, steps: int, batch_size: int,
             lr: float, seed: int):
    """MLM pretraining; the output layer is applied to masked positions only (cheap on CPU)."""
    from layerscope.models import state_dict_hash
    from layerscope.models.encoder import _finish
    from layerscope.models.pretrain import as_base_model, pretrain_mlm
    from layerscope.models.toymodels import tiny_config, train_tokenizer

    tokenizer = train_tokenizer(texts, arch="bert", vocab_size=vocab_size)
    config = tiny_config("bert", len(tokenizer), layers=layers, width=width, heads=4, max_positions=128,
                         tokenizer=tokenizer)
    trained = pretrain_mlm(config, tokenizer, texts, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
    base = as_base_model(config, trained, seed=seed)
    return _finish(base, tokenizer, name="bench-base", source_hash=state_dict_hash(base.state_dict()), meta={},
                   tokenizer_name=None, device="cpu")


# --------------------------------------------------------------------------- evaluation


def sentence_retrieval(encoder, corpus: ParallelCorpus) -> dict[str, dict[str, list[float]]]:
    """Per language, retrieval accuracy (mean of both directions) at every layer, plain and
    with per-language mean-centering."""
    from layerscope.probes import extract
    from layerscope.probes import retrieval_per_layer

    pivots: dict[int, object] = {}
    out = {}
    for lang in corpus.languages:
        side = corpus.pivot_sentences[lang]
        if id(side) not in pivots:  # a multi-way corpus shares one pivot side
            pivots[id(side)] = extract(encoder, side, lang="en", max_length=128)
        pivot = pivots[id(side)]
        target = extract(encoder, corpus.targets[lang], lang=lang, max_length=128)
        plain = retrieval_per_layer(pivot.values, target.values)  # (L+1, 2)
        centred = retrieval_per_layer(pivot.values, target.values, center=True)
        out[lang] = {"plain": plain.mean(dim=1).tolist(), "centered": centred.mean(dim=1).tolist()}
    return out


def word_pairs_in(corpus: ParallelCorpus, muse: Path):
    """Dictionary pairs (MUSE, unambiguous rule) in every sentence of the held-out corpus."""
    from layerscope.realign.pairs import DictionarySource
    from layerscope.realign.words import split_words

    source = DictionarySource(muse, casefold=True)  # the convention of the documented figures
    out = {}
    for lang in corpus.languages:
        src = [split_words(s, "en") for s in corpus.pivot_sentences[lang]]
        tgt = [split_words(s, lang) for s in corpus.targets[lang]]
        out[lang] = (src, tgt, source.align(src, tgt, lang=lang))
    return out


def word_vectors(encoder, sentences, indices_per_sentence, max_length=128, batch=32):
    """Vectors (L+1, N, d) of the first sub-token of the given words, in context, and a mask
    (N,) of the words that survived truncation (other rows are zero)."""
    from layerscope.probes.activations import forward_layers
    from layerscope.realign.words import encode_words

    encoded = encode_words(encoder.tokenizer, sentences, max_length)
    chunks, keep = [], []
    pad = encoder.tokenizer.pad_token_id
    with torch.inference_mode():
        for start in range(0, len(encoded), batch):
            part = encoded[start:start + batch]
            width = max(len(e.input_ids) for e in part)
            ids = torch.full((len(part), width), pad)
            mask = torch.zeros((len(part), width), dtype=torch.long)
            for r, e in enumerate(part):
                ids[r, :len(e.input_ids)] = torch.tensor(e.input_ids)
                mask[r, :len(e.input_ids)] = 1
            hidden = forward_layers(encoder, {"input_ids": ids, "attention_mask": mask}, precision="fp32").float()
            rows, cols = [], []
            for r, e in enumerate(part):
                for word in indices_per_sentence[start + r]:
                    position = e.first[word]
                    keep.append(position is not None)
                    rows.append(r)
                    cols.append(position if position is not None else 0)
            chunks.append(hidden[:, rows, cols, :])
    return torch.cat(chunks, dim=1), torch.tensor(keep, dtype=torch.bool)


def word_retrieval(encoder, pairs) -> dict[str, dict]:
    """Per language: word retrieval accuracy at every layer (a hit = the partner's word string)."""
    out = {}
    for lang, (src, tgt, links) in pairs.items():
        a, keep_a = word_vectors(encoder, src, [[i for i, _ in sentence] for sentence in links])
        b, keep_b = word_vectors(encoder, tgt, [[j for _, j in sentence] for sentence in links])
        both = keep_a & keep_b
        src_words = [s.tokens[i].casefold() for s, sentence in zip(src, links) for i, _ in sentence]
        tgt_words = [t.tokens[j].casefold() for t, sentence in zip(tgt, links) for _, j in sentence]
        src_words = [w for w, ok in zip(src_words, both.tolist()) if ok]
        tgt_words = [w for w, ok in zip(tgt_words, both.tolist()) if ok]
        a = torch.nn.functional.normalize(a[:, both], dim=-1)
        b = torch.nn.functional.normalize(b[:, both], dim=-1)
        vocab: dict[str, int] = {}
        src_ids = torch.tensor([vocab.setdefault(w, len(vocab)) for w in src_words])
        tgt_ids = torch.tensor([vocab.setdefault(w, len(vocab)) for w in tgt_words])
        accs = []
        for layer in range(a.shape[0]):
            sim = a[layer] @ b[layer].T  # (N, N)
            hit_t = (tgt_ids[sim.argmax(dim=1)] == tgt_ids).sum().item()
            hit_s = (src_ids[sim.argmax(dim=0)] == src_ids).sum().item()
            accs.append((hit_t + hit_s) / (2 * len(src_words)))
        out[lang] = {"pairs": len(src_words), "accuracy": accs}
    return out


def block_drift(base, other) -> dict[str, dict]:
    """Per parameter group: bit-identical?, relative change ‖ΔW‖/‖W‖."""
    groups = base.parameter_groups()
    a, b = base.model.state_dict(), other.model.state_dict()
    out = {}
    for group, names in groups.items():
        if not names:
            continue
        same = all(torch.equal(a[n], b[n]) for n in names)
        num = sum(float((b[n].double() - a[n].double()).norm() ** 2) for n in names) ** 0.5
        den = sum(float(a[n].double().norm() ** 2) for n in names) ** 0.5
        out[group] = {"identical": same, "relative_change": num / den if den else 0.0}
    return out


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/realign-bench"))
    parser.add_argument("--langs", default=DEFAULT_LANGS)
    parser.add_argument("--train-pairs", type=int, default=5000, help="Tatoeba-Challenge pairs per language")
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--pretrain-steps", type=int, default=1500)
    parser.add_argument("--realign-steps", type=int, default=1000)
    parser.add_argument("--realign-lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-tatoeba", action="store_true", help="evaluate on FLORES only")
    parser.add_argument("--reuse", action="store_true", help="reuse checkpoints already in --out (evaluate again)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    root = require_data_dir()
    langs = languages.parse_language_list(args.langs)
    args.out.mkdir(parents=True, exist_ok=True)
    timings = {}

    from layerscope.models import save_checkpoint
    from layerscope.models import checkpoint_from_encoder, load_encoder
    from layerscope.realign import realign

    start = time.perf_counter()
    train, mlm_texts = read_tatoeba_challenge(root, langs, args.train_pairs, args.seed)
    mlm_texts = sorted(set(mlm_texts))
    base_path = args.out / "base.pt"
    if args.reuse and base_path.exists():
        base = load_encoder(base_path)
        print(f"reusing {base_path}", file=sys.stderr)
    else:
        base = pretrain(mlm_texts, vocab_size=args.vocab, layers=args.layers, width=args.width,
                        steps=args.pretrain_steps, batch_size=64, lr=5e-4, seed=args.seed)
        meta = {"name": "bench-base", "recipe": f"BERT {args.layers}x{args.width}, MLM {args.pretrain_steps} steps "
                f"on {len(mlm_texts)} Tatoeba-Challenge sentences", "languages": ["en", *langs]}
        save_checkpoint(base_path, checkpoint_from_encoder(base, meta=meta))
        base = load_encoder(base_path)
    timings["pretrain_s"] = round(time.perf_counter() - start, 1)

    models = {"base": base}
    realign_info = {}
    for policy, name in (("none", "full"), ("lower", "lower")):
        start = time.perf_counter()
        path = args.out / f"realigned-{name}.pt"
        if args.reuse and path.exists():
            models[name] = load_encoder(path)
            meta = models[name].checkpoint_meta
            realign_info[name] = {"pair_counts": meta["pairs"]["counts"], "first_loss": meta["first_loss"],
                                  "final_loss_mean_last_10pct": meta["mean_loss_last_10pct"]}
            print(f"reusing {path}", file=sys.stderr)
            continue
        # the conventions of the figures in docs/realignment.md (before issue 19's published defaults)
        result = realign(base, parallel=train, pairs=f"dict:{root / 'muse'}", freeze=policy,
                         negatives="aligned", casefold=True,
                         steps=args.realign_steps, lr=args.realign_lr, seed=args.seed,
                         output=args.out / f"realigned-{name}.pt")
        timings[f"realign_{name}_s"] = round(time.perf_counter() - start, 1)
        models[name] = result.encoder
        meta = result.checkpoint.meta
        realign_info[name] = {"pair_counts": result.pair_counts, "first_loss": meta["first_loss"],
                              "final_loss_mean_last_10pct": meta["mean_loss_last_10pct"]}

    start = time.perf_counter()
    eval_sets = {"FLORES-200 devtest": read_corpus(f"flores:{root / 'flores200' / 'devtest'}", languages_=langs)}
    if not args.no_tatoeba:
        eval_sets["Tatoeba (LASER), unseen pairs"] = unseen_tatoeba(root, langs, set(mlm_texts))
    results = {"settings": vars(args) | {"out": str(args.out)}, "realign": realign_info, "models": {},
               "eval_sets": {name: corpus.sizes() for name, corpus in eval_sets.items()}}
    for set_name, corpus in eval_sets.items():
        held_pairs = word_pairs_in(corpus, root / "muse")
        for name, encoder in models.items():
            results["models"].setdefault(name, {})[set_name] = {
                "sentence_retrieval": sentence_retrieval(encoder, corpus),
                "word_retrieval": word_retrieval(encoder, held_pairs),
            }
    timings["evaluate_s"] = round(time.perf_counter() - start, 1)
    results["drift_lower"] = block_drift(base, models["lower"])
    results["drift_full"] = block_drift(base, models["full"])
    results["timings"] = timings
    (args.out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")

    last = base.num_layers
    names = ("base", "full", "lower")
    lines = []
    for set_name, corpus in eval_sets.items():
        lines += [f"{set_name} (never used for realignment), layer {last} (the realigned layer); accuracy in %, "
                  "mean of both directions; base / full / lower.", "",
                  "| lang | train word pairs | sentence pairs | eval word pairs | word retrieval | sentence retrieval "
                  "| sentence retrieval, centered |", "|---|---|---|---|---|---|---|"]
        for lang in langs:
            out = {m: results["models"][m][set_name] for m in names}
            w = [out[m]["word_retrieval"][lang]["accuracy"][last] * 100 for m in names]
            s = [out[m]["sentence_retrieval"][lang]["plain"][last] * 100 for m in names]
            c = [out[m]["sentence_retrieval"][lang]["centered"][last] * 100 for m in names]
            lines.append(f"| {lang} | {realign_info['full']['pair_counts'][lang]} | {corpus.sizes()[lang]} | "
                         f"{out['base']['word_retrieval'][lang]['pairs']} | "
                         + " | ".join(" / ".join(f"{v:.1f}" for v in values) for values in (w, s, c)) + " |")
        lines.append("")
    lines += ["Block drift of `lower` (relative weight change ‖ΔW‖/‖W‖; identical = bit-identical):", "",
              "| group | identical | relative change |", "|---|---|---|"]
    for group, info in results["drift_lower"].items():
        lines.append(f"| {group} | {info['identical']} | {info['relative_change']:.2e} |")
    lines += ["", f"timings: {timings}"]
    table = "\n".join(lines)
    (args.out / "results.md").write_text(table + "\n", encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
