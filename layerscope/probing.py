"""The probe job: which layer holds what a task needs, in every language.

``probe(base, realigned=None, task="pos", train=..., eval=...)`` encodes the source-language
training data and every target language with one forward pass per batch (every layer at once,
as in :mod:`layerscope.probes.activations`), fits a linear classifier per layer on the source language
and evaluates it zero-shot on each target language. Representations are

- **per word** for tagging tasks (PoS, NER): the hidden state of each word's first sub-token
  (the words and labels of :func:`layerscope.tasks.features.encode_tagging`);
- **per example** for sentence-pair tasks (NLI): the mean over the real (non-special) tokens.

The classifier is scikit-learn's multinomial logistic regression on standardised features
(mean and scale of the source training split); its inverse regularisation C is chosen per layer
on a held-out share of the source sentences, and the classifier trained on the rest with that C
is the one evaluated. Accuracy intervals are 95 % percentile bootstraps over sentences (words of
one sentence are not independent); with two models the Δ interval comes from a paired bootstrap
over the same sentences.

The tidy table has the columns of ``compare`` (model, metric, layer, lang, value, ci_low,
ci_high) with ``metric = "probe_accuracy"``; the source language's rows are its held-out split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from . import progress
from .corpora import languages
from .errors import LayerscopeError
from .probes.linear_probe import COLUMNS, DEFAULT_CS, LinearProbe, _per_sentence, _rows, bootstrap_interval, encode



@dataclass
class ProbeResult:
    """Tables of a probe run (what the CLI writes), and where they were written."""

    metrics: pd.DataFrame
    run: dict[str, Any]
    summary: str
    output_dir: Path | None = None
    figures: list[Path] = field(default_factory=list)


# --------------------------------------------------------------------------- the job


def _split(n: int, held_out: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < held_out < 1:
        raise LayerscopeError(f"held_out must be a share in (0, 1), got {held_out!r}")
    if n < 4:
        raise LayerscopeError(f"the probe needs at least 4 source sentences (a training and a held-out part), got {n}")
    order = np.random.default_rng(seed).permutation(n)
    cut = min(n - 1, max(1, round(held_out * n)))
    return np.sort(order[cut:]), np.sort(order[:cut])


def _labels(task, train_examples: Sequence) -> list[str]:
    if task.fixed_labels:
        return list(task.fixed_labels)
    from .tasks.data import iob2_label_list

    return iob2_label_list(train_examples)


def summarize(table: pd.DataFrame, *, source: str) -> str:
    """Per language the best layer, and (two models) the layers whose Δ interval excludes 0."""
    lines = [f"Linear probe accuracy per layer (layer 0 = embeddings); classifiers trained on {source}, "
             f"{source} scores are its held-out split."]
    models = [m for m in ("base", "realigned") if m in set(table["model"])]
    if not models:
        models = [m for m in table["model"].unique() if m != "delta"][:1]
    first = table[table["model"] == models[0]]
    langs = [source] * (source in set(first["lang"])) + languages.family_order(
        [str(x) for x in first["lang"].unique() if x != source])
    width = max((len(lang) for lang in langs), default=2)
    delta = table[table["model"] == "delta"]
    for lang in langs:
        rows = first[first["lang"] == lang].sort_values("layer")
        best = rows.loc[rows["value"].idxmax()]
        text = f"  {lang:<{width}}  best layer {int(best['layer'])} ({best['value']:.3f})"
        if not delta.empty:
            d = delta[delta["lang"] == lang]
            clear = d[(d["ci_low"] > 0) | (d["ci_high"] < 0)].sort_values("layer")
            text += "; Δ beyond noise: " + (", ".join(f"layer {int(r.layer)} {r.value:+.3f}" for r in
                                                        clear.itertuples()) or "none")
        lines.append(text)
    if not delta.empty:
        targets = delta[delta["lang"] != source]
        means = targets.groupby("layer")["value"].mean()
        if len(means):
            layer = int(means.abs().idxmax())
            lines.append(f"  mean Δ over target languages: largest at layer {layer} ({means[layer]:+.3f})")
    return "\n".join(lines)


def probe(
    base: Any,
    realigned: Any = None,
    *,
    task: str = "pos",
    train: Any,
    eval: Any,  # noqa: A002 - the data spec is called eval in finetune too
    dev: Any = None,
    source_lang: str = "en",
    limit: int | None = None,
    train_limit: int | None = None,
    cs: Sequence[float] = DEFAULT_CS,
    held_out: float = 0.2,
    max_iter: int = 300,
    bootstrap: int = 1000,
    output_dir: str | Path | None = None,
    force: bool = False,
    model: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    max_length: int = 128,
    max_tokens: int = 8192,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    figures: bool = True,
    order: str = "family",
    command: Sequence[str] | None = None,
    trust_remote_code: bool = False,
) -> ProbeResult:
    """Per-layer linear probes trained on the source language, evaluated zero-shot per language.

    Parameters
    ----------
    base, realigned : checkpoints, HF directories, hub ids, weights with ``model``, or loaded
        :class:`~layerscope.models.Encoder`; without ``realigned`` one model is probed.
    task : a tagging task (``pos`` by default, ``ner``) or a sentence-pair task (``nli``).
    train, eval, dev : data specs as in ``finetune`` (``FILE``, ``LANG=FILE``, ``DIR``, ``hf:…``);
        ``dev`` (source language) replaces the held-out share of ``train`` for choosing C.
    limit, train_limit : at most this many sentences per target language / of the source data.
    cs : the grid of inverse regularisation strengths C.
    held_out : share of the source sentences held out to choose C when ``dev`` is not given.
    bootstrap : resamples of sentences for the 95 % intervals (0: none).
    cache_dir : keep every encoded language here (keyed by model hash and data), so that a
        second run with the same base model encodes it only once.
    output_dir : write metrics.csv, run.json, summary.txt, figures/, report.html there.

    Returns
    -------
    ProbeResult with the tidy ``metrics`` table (rows base, realigned, delta; one per layer and
    language), the ``run`` provenance dict and a printable ``summary``.
    """
    from . import outputs
    from .probes.activations import resolve_device
    from .models.encoder import Encoder, check_compatible, load_encoder
    from .tasks.registry import get_task
    from .tasks.sources import load_task_data

    started = time.perf_counter()
    timings: dict[str, float] = {}
    if output_dir is not None:
        outputs.check_output_dir(output_dir, force=force)
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise LayerscopeError(f"unknown precision {precision!r}: use auto, fp32, bf16 or fp16")
    if not cs or any(not (isinstance(c, (int, float)) and c > 0) for c in cs):
        raise LayerscopeError(f"the C grid must hold positive numbers, got {list(cs)!r}")
    spec = get_task(task)
    if spec.kind not in ("tagging", "pair"):
        raise LayerscopeError(f"task {spec.name} has no per-token or per-sentence label ({spec.kind}); "
                              "the probe handles tagging (pos, ner) and sentence-pair (nli) tasks")
    source = languages.normalize(source_lang, source="--source-lang")
    torch_device = resolve_device(device)

    tick = time.perf_counter()
    train_data = load_task_data(spec, train, role="train", limit=train_limit, default_lang=source)
    if len(train_data.examples) != 1:
        raise LayerscopeError(f"the probe trains on one source language, got {', '.join(train_data.languages)}")
    source = train_data.languages[0]
    source_examples = train_data.examples[source]
    eval_data = load_task_data(spec, eval, role="eval", limit=limit)
    targets = {lang: ex for lang, ex in eval_data.examples.items() if lang != source}
    if not targets:
        raise LayerscopeError("no target language in the evaluation data besides the source language")
    if dev is not None:
        dev_data = load_task_data(spec, dev, role="dev", default_lang=source)
        fit_examples, dev_examples = source_examples, next(iter(dev_data.examples.values()))
    else:
        fit_index, dev_index = _split(len(source_examples), held_out, seed)
        fit_examples = [source_examples[i] for i in fit_index]
        dev_examples = [source_examples[i] for i in dev_index]
    label_names = _labels(spec, source_examples)
    label_to_id = {label: i for i, label in enumerate(label_names)}
    timings["read_data"] = time.perf_counter() - tick

    tick = time.perf_counter()
    sources = {"base": base} if realigned is None else {"base": base, "realigned": realigned}
    encoders = {}
    for label, src in sources.items():
        encoders[label] = src if isinstance(src, Encoder) else load_encoder(
            src, model=model, device=torch_device, trust_remote_code=trust_remote_code)
    if realigned is not None:
        check_compatible(encoders["base"], encoders["realigned"])
    timings["load_models"] = time.perf_counter() - tick

    kwargs = dict(max_length=max_length, max_tokens=max_tokens, precision=precision, cache_dir=cache_dir)
    hits: dict[tuple[str, str], np.ndarray] = {}
    totals: dict[str, np.ndarray] = {}
    chosen: dict[str, list[float]] = {}
    total = len(fit_examples) + len(dev_examples) + sum(len(ex) for ex in targets.values())
    for label, encoder in encoders.items():
        with progress.bar(total=total, desc=f"probe ({label})", unit="sent") as bar:
            tick = time.perf_counter()
            fit = encode(encoder, spec, fit_examples, label_to_id, where=f"{source} training data", bar=bar, **kwargs)
            held = encode(encoder, spec, dev_examples, label_to_id, where=f"{source} held-out data", bar=bar, **kwargs)
            timings[f"encode_source_{label}"] = time.perf_counter() - tick
            tick = time.perf_counter()
            probes_ = []
            bar.set_postfix(step="fitting")
            for layer in range(fit.values.shape[0]):
                probes_.append(LinearProbe(cs, max_iter=max_iter, seed=seed).fit(
                    fit.values[layer].numpy(), fit.labels, held.values[layer].numpy(), held.labels))
            chosen[label] = [p.C_ for p in probes_]
            timings[f"fit_{label}"] = time.perf_counter() - tick
            del fit
            tick = time.perf_counter()
            for lang, encoded in [(source, held)] + [(lang, None) for lang in targets]:
                bar.set_postfix(lang=lang)
                if encoded is None:
                    encoded = encode(encoder, spec, targets[lang], label_to_id, where=f"{lang} evaluation data",
                                     bar=bar, **kwargs)
                correct = np.stack([probes_[layer].predict(encoded.values[layer].numpy()) == encoded.labels
                                    for layer in range(len(probes_))])
                hits[(label, lang)] = _per_sentence(correct, encoded.sentence, encoded.sentences)
                totals[lang] = np.bincount(encoded.sentence, minlength=encoded.sentences).astype(float)
            timings[f"evaluate_{label}"] = time.perf_counter() - tick

    rows: list[tuple] = []
    langs = [source, *targets]
    for lang in langs:
        for label in encoders:
            h = hits[(label, lang)]
            low, high = bootstrap_interval(h, totals[lang], resamples=bootstrap, seed=seed)
            rows += _rows(label, lang, h.sum(axis=1) / totals[lang].sum(), low, high)
        if realigned is not None:
            diff = hits[("realigned", lang)] - hits[("base", lang)]
            low, high = bootstrap_interval(diff, totals[lang], resamples=bootstrap, seed=seed)
            rows += _rows("delta", lang, diff.sum(axis=1) / totals[lang].sum(), low, high)
    table = pd.DataFrame(rows, columns=COLUMNS)
    summary = summarize(table, source=source)
    run = {
        "command": list(command) if command is not None else None,
        "job": "probe",
        "pivot": source,
        "languages": list(targets),
        "sentences": {lang: int(len(totals[lang])) for lang in langs},
        "words_or_examples": {lang: int(totals[lang].sum()) for lang in langs},
        "corpus": {"spec": str(eval) if not isinstance(eval, (dict, list)) else "(Python data)",
                   "name": spec.name, "hash": eval_data.content_hash()},
        "source": {"lang": source, "train": str(train) if not isinstance(train, (dict, list)) else "(Python data)",
                   "hash": train_data.content_hash(), "fit_sentences": len(fit_examples),
                   "held_out_sentences": len(dev_examples), "dev": None if dev is None else str(dev)},
        "task": {"name": spec.name, "kind": spec.kind, "labels": label_names},
        "checkpoints": {
            label: {"source": str(src) if not isinstance(src, Encoder) else src.name,
                    "name": encoders[label].name, "content_hash": encoders[label].source_hash,
                    "meta": encoders[label].checkpoint_meta}
            for label, src in sources.items()
        },
        "model": {"type": encoders["base"].model.config.model_type, "blocks": encoders["base"].num_layers,
                  "hidden_size": encoders["base"].hidden_size, "layer_names": encoders["base"].layer_names},
        "classifier": {"kind": "sklearn LogisticRegression (multinomial, lbfgs) on standardised features",
                       "cs": list(cs), "chosen_c": chosen, "max_iter": max_iter, "held_out": held_out},
        "config": {"limit": limit, "train_limit": train_limit, "bootstrap": bootstrap, "precision": precision,
                   "max_length": max_length, "max_tokens": max_tokens, "device": str(torch_device), "order": order},
        "seed": seed,
    }
    result = ProbeResult(metrics=table, run=run, summary=summary)
    if output_dir is not None:
        _write_run(result, Path(output_dir), force=force, figures=figures, order=order, timings=timings,
                   started=started)
    timings["total"] = time.perf_counter() - started
    run["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    return result


def _write_run(result: ProbeResult, output_dir: Path, *, force: bool, figures: bool, order: str,
               timings: dict[str, float], started: float) -> None:
    from . import outputs, provenance
    from .show.report import write_report

    with outputs.staged_directory(output_dir, force=force) as staging:
        outputs.atomic_write(staging / "metrics.csv",
                             lambda tmp: result.metrics.to_csv(tmp, index=False, float_format="%.8g"))
        if figures:
            tick = time.perf_counter()
            from .show import probe as probe_plots

            result.figures = probe_plots.write_figures(result.metrics, staging / "figures",
                                                       source=result.run["pivot"], order=order)
            timings["figures"] = time.perf_counter() - tick
        outputs.atomic_write_text(staging / "summary.txt", result.summary + "\n")
        timings["total"] = time.perf_counter() - started
        result.run.update(versions=provenance.versions(), git_revision=provenance.git_revision(),
                          host=provenance.host(), timings_s={k: round(v, 3) for k, v in timings.items()})
        outputs.atomic_write_json(staging / "run.json", result.run)
        write_report(staging, name=output_dir.name)
    result.output_dir = output_dir
    result.figures = [output_dir / p.relative_to(p.parents[1]) for p in result.figures]
