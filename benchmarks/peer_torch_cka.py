"""Peer benchmark: the PyPI package torch-cka, used the way its users use it, against layerscope.

The job: layer-by-layer CKA between English and each of K languages on N FLORES devtest
sentences, in one BERT-base-shaped model (12 blocks × 768, random weights, a WordPiece
tokenizer trained on the sentences; built by ``compare_speed.build_checkpoints``).

torch-cka (0.21), as its README shows: the sentences tokenized and padded to a fixed length,
a ``DataLoader`` per side, ``CKA(model1, model2, model1_layers=blocks, model2_layers=blocks)``
and ``.compare(loader_en, loader_x)`` — one run per language pair (so the English side is
encoded once per pair), an L×L matrix per pair. What it computes (read from its source):

* features: the hooked module's output ``flatten(1)``, i.e. for a block output (B, T, d) the
  B × (T·d) matrix of *every* position, padding included. ``compare`` calls ``model(x)`` with
  the first tensor of each batch only, so a plain BERT gets no attention mask and attends to
  the padding too (``--attention-mask`` wraps the model to pass one, as a careful user would;
  padding positions still enter the features);
* estimator: linear kernel K = XXᵀ (X not centred; the unbiased estimator is translation
  invariant), diagonal zeroed, the unbiased HSIC of Song et al. 2012 (Nguyen et al. 2021,
  eq. 3), computed in float32 (on uncentred Grams, where its terms cancel heavily: the
  shipped float32 result can be off in the second decimal, hence the float64 run below);
* minibatches: HSIC(K,L), HSIC(K,K), HSIC(L,L) averaged over batches with equal weights, CKA =
  mean HSIC(K,L) / sqrt(mean HSIC(K,K) · mean HSIC(L,L)) — minibatch CKA of Nguyen et al.
  This is exactly :class:`layerscope.probes.MinibatchCKA` (which sums instead of averaging;
  the ratio is the same).
* model1 and model2 must be two different module objects: its hooks are keyed by the model
  they were registered for, and one module registered twice writes both feature dicts on every
  forward, so ``CKA(model, model).compare(loader_en, loader_x)`` silently compares x with x
  (``--show-pitfall`` demonstrates it). Users pass ``copy.deepcopy(model)`` as model2; that copy
  is counted in torch-cka's time.
* ``compare`` runs the forward passes with autograd on (its README does not wrap it in
  ``no_grad``). Here it runs under ``torch.no_grad()``, which only makes torch-cka faster;
  ``--grad`` runs it as the README does.
* transformers 5.x ``BertLayer`` returns a tensor, so the hooks on ``encoder.layer.{i}`` work
  as they are (4.x returned a tuple, on which torch-cka's ``feat.flatten(1)`` fails).

Times are given as wall and CPU seconds: with one thread, CPU time is what the wall time would
be on an idle core, and it is the fairer ratio when the core is shared with other processes.

layerscope on the same task: ``extract_corpus`` (length-sorted batches without fixed padding,
padding masked, English encoded once, mean-pooled sentence vectors of every layer) and
``cka_matrix`` (debiased linear CKA, the L×L blocks matrix) per pair — the extraction and
metric functions ``layerscope.compare`` uses (``compare`` itself is a two-checkpoint job).

The two tools do not measure the same quantity (padded token features vs. pooled sentence
vectors), so agreement is checked where they do: layerscope's ``MinibatchCKA`` fed, batch by
batch, the very block outputs torch-cka's hooks saw during its timed run (kept by reference,
detached, by an extra hook that only appends to a list; analysed between pairs, outside the
timing, and then dropped, so one pair's token features are held at a time).

The metric stage alone (activations in memory) is timed side by side: torch-cka's own
``compare`` replayed over the saved block outputs (identity modules in place of the blocks),
layerscope's ``MinibatchCKA`` on the same token features, and layerscope's own metric stage
(``cka_matrix`` on pooled (n, d) layers).

    python benchmarks/peer_torch_cka.py                                   # 200 sentences × 3 pairs, 12 × 768
    python benchmarks/peer_torch_cka.py --sentences 64 --langs 1 --layers 2 --width 128 --heads 2  # quick look

Run it on one core as ``OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/peer_torch_cka.py``.
"""

from __future__ import annotations

import argparse
import json
import copy
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from _data import add_size_options, read_flores  # noqa: E402
from compare_speed import build_checkpoints  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))




def clock() -> np.ndarray:
    """(wall, CPU) seconds. The CPU time of this one-thread process is what the wall time would
    be on an otherwise idle core; on a shared core the wall time also counts the waiting."""
    return np.array([time.perf_counter(), time.process_time()])


# --------------------------------------------------------------------------- torch-cka side


class MaskedInput(nn.Module):
    """The thin wrapper a user writes so that torch-cka's ``model(x)`` carries a mask:
    x is (B, 2, T) = input_ids and attention_mask stacked."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model(input_ids=x[:, 0], attention_mask=x[:, 1])


def padded_loader(tokenizer, sentences, *, pad_length: int, batch_size: int, with_mask: bool) -> DataLoader:
    enc = tokenizer(list(sentences), padding="max_length", truncation=True, max_length=pad_length,
                    return_tensors="pt", return_token_type_ids=False)
    x = torch.stack([enc["input_ids"], enc["attention_mask"]], 1) if with_mask else enc["input_ids"]
    return DataLoader(TensorDataset(x), batch_size=batch_size, shuffle=False)


def hook_ids(*models: nn.Module) -> dict:
    return {id(m): set(m._forward_hooks) for model in models for m in model.modules()}


def drop_new_hooks(before: dict, *models: nn.Module) -> None:
    """Remove the forward hooks added since ``before`` (torch-cka keeps no handles to its own)."""
    for model in models:
        for module in model.modules():
            for key in set(module._forward_hooks) - before.get(id(module), set()):
                del module._forward_hooks[key]


def run_torch_cka(model, tokenizer, pivot, targets, *, layer_names, pad_length, batch_size, with_mask, grad,
                  after_pair=None):
    """torch-cka, one run per language pair. Returns ({lang: L×L}, (wall, CPU) seconds).

    ``after_pair(lang, en, x, matrix)``, when given, is called untimed after each pair with the
    block outputs torch-cka saw, kept by reference (detached) by an extra hook: en and x are
    lists over batches of L tensors (B, T, d). They are dropped before the next pair.
    """
    from torch_cka import CKA

    start = clock()
    model_a = model
    model_b = copy.deepcopy(model)  # torch-cka needs two module objects (see the module docstring)
    if with_mask:
        model_a, model_b = MaskedInput(model_a), MaskedInput(model_b)
        names = [f"model.{name}" for name in layer_names]
    else:
        names = list(layer_names)
    results = {}
    setup = clock() - start
    spent = setup
    for lang, sentences in targets.items():
        before = hook_ids(model_a, model_b)
        record: tuple[list, list] = ([], [])
        if after_pair is not None:
            # Not part of torch-cka: an extra hook keeping references for the agreement check.
            for side, net in zip(record, (model_a, model_b)):
                blocks = [net.get_submodule(name) for name in names]

                def hook(module, _inp, out, side=side, first=blocks[0]):
                    if module is first:
                        side.append([])
                    side[-1].append(out.detach())

                for block in blocks:
                    block.register_forward_hook(hook)
        tick = clock()
        loader_en = padded_loader(tokenizer, pivot, pad_length=pad_length, batch_size=batch_size, with_mask=with_mask)
        loader_x = padded_loader(tokenizer, sentences, pad_length=pad_length, batch_size=batch_size,
                                 with_mask=with_mask)
        cka = CKA(model_a, model_b, model1_name="bert-en", model2_name=f"bert-{lang}",
                  model1_layers=names, model2_layers=names, device="cpu")
        with torch.set_grad_enabled(grad):
            cka.compare(loader_en, loader_x)
        results[lang] = cka.export()["CKA"].clone()
        spent += clock() - tick
        drop_new_hooks(before, model_a, model_b)  # untimed; the next pair's CKA registers its own
        if after_pair is not None:
            after_pair(lang, record[0], record[1], results[lang])
        del record
    return results, spent


class Replay(nn.Module):
    """Stands in for the model in torch-cka's ``compare``: its blocks are identities that emit
    saved block outputs, so ``compare`` runs its own metric code on them and nothing else."""

    def __init__(self, batches: list[list[torch.Tensor]], dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.batches = batches
        self.dtype = dtype
        self.blocks = nn.ModuleList(nn.Identity() for _ in batches[0])

    def forward(self, index: torch.Tensor):
        for block, feat in zip(self.blocks, self.batches[int(index[0])]):
            block(feat if self.dtype is None else feat.to(self.dtype))


def torch_cka_metric_stage(en, x, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """torch-cka's own ``compare`` on saved block outputs: (L×L, (wall, CPU) seconds)."""
    from torch_cka import CKA

    names = [f"blocks.{i}" for i in range(len(en[0]))]
    model_a, model_b = Replay(en, dtype), Replay(x, dtype)
    loader = DataLoader(TensorDataset(torch.arange(len(en))), batch_size=1)
    tick = clock()
    cka = CKA(model_a, model_b, model1_name="en", model2_name="x", model1_layers=names, model2_layers=names)
    with torch.no_grad():
        cka.compare(loader, loader)
    return cka.export()["CKA"].clone(), clock() - tick


def torch_cka_float64(en, x) -> torch.Tensor:
    """torch-cka's own ``compare`` in float64: the saved features cast to double batch by batch,
    and float64 as the default dtype so that its ``torch.ones`` and ``torch.zeros`` are double."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return torch_cka_metric_stage(en, x, torch.float64)[0]
    finally:
        torch.set_default_dtype(default)


def layerscope_minibatch(en: list[list[torch.Tensor]], x: list[list[torch.Tensor]]) -> torch.Tensor:
    """layerscope's MinibatchCKA on the same token features, batch by batch."""
    from layerscope.probes import MinibatchCKA

    mb = MinibatchCKA(len(en[0]), len(x[0]))
    for batch_a, batch_b in zip(en, x):
        mb.update(torch.stack([f.flatten(1) for f in batch_a]), torch.stack([f.flatten(1) for f in batch_b]))
    return mb.compute()


def shared_model_pitfall(tokenizer, pivot, target) -> float:
    """CKA(model, model) with two different loaders, on a tiny model: max |CKA_ii - 1|."""
    from transformers import BertConfig, BertModel
    from torch_cka import CKA

    torch.manual_seed(0)
    tiny = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=64)).eval()
    names = ["encoder.layer.0", "encoder.layer.1"]
    cka = CKA(tiny, tiny, model1_name="a", model2_name="b", model1_layers=names, model2_layers=names)
    with torch.no_grad():
        cka.compare(padded_loader(tokenizer, pivot[:16], pad_length=64, batch_size=8, with_mask=False),
                    padded_loader(tokenizer, target[:16], pad_length=64, batch_size=8, with_mask=False))
    return float((cka.export()["CKA"].diagonal() - 1).abs().max())


# --------------------------------------------------------------------------- layerscope side


def run_layerscope(encoder, corpus, *, max_length: int):
    """Extraction (English once) + debiased CKA matrix of the blocks per pair."""
    from layerscope.probes import extract_corpus
    from layerscope.probes import cka_matrix

    start = clock()
    pivots, targets = extract_corpus(encoder, corpus, max_length=max_length)
    extracted = clock()
    results = {lang: cka_matrix(pivots[lang].values[1:], targets[lang].values[1:]) for lang in corpus.languages}
    end = clock()
    return results, end - start, end - extracted, (pivots, targets)


def layerscope_metric_stage(pivots, targets, langs, repeats: int = 5) -> np.ndarray:
    from layerscope.probes import cka_matrix, cka_per_layer

    best = None
    for _ in range(repeats):
        tick = clock()
        for lang in langs:
            cka_matrix(pivots[lang].values[1:], targets[lang].values[1:])
            cka_per_layer(pivots[lang].values, targets[lang].values)
        spent = clock() - tick
        best = spent if best is None or spent[1] < best[1] else best
    return best


# --------------------------------------------------------------------------- main


def warm_up(model, tokenizer, sentences) -> None:
    enc = tokenizer(list(sentences[:4]), padding=True, return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        model(**enc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_size_options(parser, sentences=200, langs=3)
    parser.add_argument("--batch-size", type=int, default=32, help="torch-cka minibatch size (default 32)")
    parser.add_argument("--pad-length", type=int, default=128,
                        help="torch-cka's fixed padded length; also layerscope's truncation length (default 128)")
    parser.add_argument("--attention-mask", action="store_true",
                        help="wrap the model so torch-cka's forward passes get the attention mask")
    parser.add_argument("--grad", action="store_true",
                        help="run torch-cka's compare with autograd on, as its README does (default: no_grad)")
    parser.add_argument("--show-pitfall", action="store_true",
                        help="also show CKA(model, model) comparing the second loader with itself")
    parser.add_argument("--json", type=Path, help="also write the key figures here (for run_all.py)")
    args = parser.parse_args()

    import torch_cka

    from layerscope import progress
    from layerscope.models import load_encoder

    progress.set_enabled(False)
    corpus = read_flores(args.sentences, args.langs)
    pivot = next(iter(corpus.pivot_sentences.values()))
    langs = corpus.languages

    with tempfile.TemporaryDirectory() as tmp:
        base, _ = build_checkpoints(corpus, Path(tmp), layers=args.layers, width=args.width, heads=args.heads)
        encoder = load_encoder(base, device="cpu")
    model, tokenizer = encoder.model, encoder.tokenizer
    block_names = list(encoder.block_paths)
    longest = max(len(ids) for side in [pivot, *corpus.targets.values()] for ids in tokenizer(list(side))["input_ids"])
    # layerscope must see the same tokens: truncate at the same length.
    max_length = args.pad_length
    truncated = longest > args.pad_length

    pitfall = shared_model_pitfall(tokenizer, pivot, corpus.targets[langs[0]]) if args.show_pitfall else None

    warm_up(model, tokenizer, pivot)
    # Agreement where both measure the same thing, and the metric stage on the same features,
    # computed between torch-cka's pairs (untimed there) so that one pair's features are held.
    mb_results, replay_results, ref64 = {}, {}, {}
    mb_seconds, replay_seconds = np.zeros(2), np.zeros(2)

    def after_pair(lang, en, x, _matrix):
        nonlocal mb_seconds, replay_seconds
        tick = clock()
        mb_results[lang] = layerscope_minibatch(en, x)
        mb_seconds = mb_seconds + (clock() - tick)
        replay_results[lang], spent = torch_cka_metric_stage(en, x)
        replay_seconds = replay_seconds + spent
        ref64[lang] = torch_cka_float64(en, x)

    tc_results, tc_seconds = run_torch_cka(model, tokenizer, pivot, corpus.targets, layer_names=block_names,
                                           pad_length=args.pad_length, batch_size=args.batch_size,
                                           with_mask=args.attention_mask, grad=args.grad, after_pair=after_pair)
    ls_results, ls_seconds, ls_metric_in_run, (pivots, targets) = run_layerscope(encoder, corpus,
                                                                                  max_length=max_length)
    ls_metric_seconds = layerscope_metric_stage(pivots, targets, langs)

    diff_shipped = max(float((mb_results[g] - tc_results[g].double()).abs().max()) for g in langs)
    diff_diag = max(float((mb_results[g].diagonal() - tc_results[g].double().diagonal()).abs().max()) for g in langs)
    diff_ref64 = max(float((mb_results[g] - ref64[g]).abs().max()) for g in langs)
    diff_f32 = max(float((tc_results[g].double() - ref64[g]).abs().max()) for g in langs)
    replay_same = all(torch.equal(replay_results[g], tc_results[g]) for g in langs)
    different_things = max(float((ls_results[g].diagonal() - tc_results[g].double().diagonal()).abs().max())
                           for g in langs)

    n_batches = math.ceil(args.sentences / args.batch_size)
    print(f"\nBERT-base-shaped model ({args.layers} blocks × {args.width}, random weights), en + {len(langs)} "
          f"languages ({', '.join(langs)}) × {args.sentences} FLORES devtest sentences; torch {torch.__version__}, "
          f"torch-cka {torch_cka.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"torch-cka: {len(langs)} runs (one per pair), batches of {args.batch_size} padded to {args.pad_length} "
          f"tokens ({n_batches} per side), attention mask {'passed (wrapper)' if args.attention_mask else 'not passed'}, "
          f"autograd {'on' if args.grad else 'off'}; longest sentence {longest} tokens"
          f"{' (truncated at ' + str(max_length) + ' by both tools)' if truncated else ''}\n")
    def cell(t):
        return f"{t[0]:.{digits(t)}f} / {t[1]:.{digits(t)}f}"

    def digits(t):
        return 1 if t[1] >= 10 else 2 if t[1] >= 0.1 else 4

    def ratio(a, b):
        return f"{a[1] / b[1]:.1f}× (wall {a[0] / b[0]:.1f}×)"

    print("| stage | torch-cka wall / CPU (s) | layerscope wall / CPU (s) | layerscope faster by (CPU) |")
    print("|---|---|---|---|")
    print(f"| whole job: tokenize + forward + CKA, {len(langs)} pairs | {cell(tc_seconds)} | {cell(ls_seconds)} | "
          f"{ratio(tc_seconds, ls_seconds)} |")
    print(f"| metric stage alone: same padded token features, same estimator (torch-cka compare replayed vs "
          f"MinibatchCKA) | {cell(replay_seconds)} | {cell(mb_seconds)} | {ratio(replay_seconds, mb_seconds)} |")
    print(f"| metric stage alone: each tool's own (layerscope: cka_matrix + cka_per_layer on pooled (n, d)) | "
          f"{cell(replay_seconds)} | {cell(ls_metric_seconds)} | {ratio(replay_seconds, ls_metric_seconds)} |")
    print(f"\nwall / CPU over the whole job: torch-cka {tc_seconds[0] / tc_seconds[1]:.2f}, layerscope "
          f"{ls_seconds[0] / ls_seconds[1]:.2f} (above 1: the core was shared with other processes)")
    print(f"layerscope's metric stage inside its timed run: wall {ls_metric_in_run[0]:.3f} s, CPU {ls_metric_in_run[1]:.3f} s")
    print(f"agreement, same features and estimator: max |layerscope MinibatchCKA − torch-cka| over the "
          f"{len(langs)} {args.layers}×{args.layers} matrices = {diff_shipped:.2e} (diagonals {diff_diag:.2e}); "
          f"against torch-cka's own code run in float64 {diff_ref64:.2e}; torch-cka's float32 rounding alone "
          f"{diff_f32:.2e}")
    print(f"torch-cka replayed on the saved features reproduces its timed run exactly: {replay_same}")
    print(f"not the same quantity (for scale): max |layerscope pooled debiased CKA − torch-cka padded-token CKA| "
          f"on the diagonals = {different_things:.3f}")
    if args.json:
        args.json.write_text(json.dumps({
            "whole_job_speedup": tc_seconds[1] / ls_seconds[1],
            "metric_same_features_speedup": replay_seconds[1] / mb_seconds[1],
            "metric_own_speedup": replay_seconds[1] / ls_metric_seconds[1],
            "agreement_float64": diff_ref64, "agreement_shipped": diff_shipped,
            "size": f"{args.sentences} sentences × {len(langs)} pairs"}))
    if pitfall is not None:
        print(f"pitfall: CKA(model, model).compare(loader_en, loader_x) gives max |diag − 1| = {pitfall:.1e} "
              "(it compares loader_x with itself)")


if __name__ == "__main__":
    main()
