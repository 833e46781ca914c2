"""The compare job: two checkpoints of one model, every layer, every language.

``compare(base, realigned, corpus=...)`` loads both models, encodes the corpus once per model
(the pivot side once), measures cross-lingual similarity per layer and language in each model,
their difference and the drift between the models, and (with ``output_dir``) writes the run
directory: ``metrics.csv``, ``run.json``, ``figures/``, ``regression/``, ``report.html``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch

from .corpora import languages
from .errors import LayerscopeError
from .precision import check_precision, resolve_precision
from .probes import table as probes
from .stats import noise

log = logging.getLogger(__name__)

FIGURE_METRICS = ("cka", "retrieval", "retrieval_centered", "cka_linear")
CCA_FIGURE_METRICS = ("svcca", "pwcca", "procrustes", "procrustes_distance", "procrustes_angular")


@dataclass
class CompareResult:
    """Tables of a compare run (what the CLI writes), and where they were written."""

    metrics: pd.DataFrame
    run: dict[str, Any]
    summary: str
    output_dir: Path | None = None
    regression: Any = None
    figures: list[Path] = field(default_factory=list)


def _stack_groups(encoder) -> dict[str, dict[str, torch.Tensor]]:
    """Parameters grouped as embeddings, block.0 … block.{L-1} (the layers they produce)."""
    params = dict(encoder.model.named_parameters())
    groups = encoder.parameter_groups()
    ordered = ["embeddings"] + [f"block.{i}" for i in range(encoder.num_layers)]
    return {name: {p: params[p].detach() for p in groups[name]} for name in ordered}


def _change_text(row) -> str:
    """A Δ beyond noise with what it was judged by: its interval, or the shuffled spread."""
    if math.isnan(row.noise):
        return f"{row.value:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"
    return f"{row.value:+.3f} (> shuffled spread {row.noise:.3f})"


def _verdict_text(judged: pd.DataFrame, top: int) -> tuple[str, set[int]]:
    """Up to ``top`` layers beyond noise, largest |Δ| first, or why none is named; and their layers."""
    real = judged[judged["verdict"] == noise.BEYOND]
    if real.empty:
        if (judged["verdict"] == noise.UNJUDGED).all():
            return "not judged (no interval and no shuffled baseline)", set()
        return "within noise", set()
    ordered = real.reindex(real["value"].abs().sort_values(ascending=False).index).head(top)
    text = ", ".join(f"layer {int(row.layer)} {_change_text(row)}" for row in ordered.itertuples())
    return text, {int(layer) for layer in ordered["layer"]}


def summarize(metrics: pd.DataFrame, *, pivot: str, metric: str = "retrieval") -> str:
    """Per language, the layers where realignment changed cross-lingual alignment most, naming a
    change only when it is beyond noise (:mod:`layerscope.stats.noise`); otherwise "within noise"."""
    judged = noise.judge_deltas(metrics, metric)
    cka = noise.judge_deltas(metrics, "cka")
    last = int(metrics["layer"].max())
    lines = [f"Where realignment changed alignment with {pivot} most (Δ realigned − base [95% CI]; "
             "layer 0 = embeddings; a change is named only when its interval excludes 0, or, without an "
             "interval, when it exceeds the spread of the shuffled-pair baseline):"]
    langs = list(dict.fromkeys(str(lang) for lang in judged["lang"]))
    width = max((len(lang) for lang in langs), default=2)
    for lang in languages.family_order(langs):
        mine = judged[judged["lang"] == lang]
        named, layers = _verdict_text(mine, top=2)
        text = f"  {lang:<{width}}  {metric}: {named}"
        at_last = mine[(mine["layer"] == last) & (mine["verdict"] == noise.BEYOND)]
        if len(at_last) and last not in layers:
            text += f" (last layer {_change_text(next(at_last.itertuples()))})"
        theirs = cka[cka["lang"] == lang]
        if len(theirs):
            text += f"; CKA: {_verdict_text(theirs, top=1)[0]}"
        lines.append(text)
    if len(judged):
        n_langs = len(langs)
        beyond = (judged["verdict"] == noise.BEYOND).groupby(judged["layer"]).sum()
        means = judged.groupby("layer")["value"].mean()
        if beyond.max() == 0:
            lines.append(f"  mean over languages: {metric} within noise (no language's {metric} changed beyond "
                         "noise at any layer)")
        else:
            best = int(means[beyond > 0].abs().idxmax())
            lines.append(f"  mean over languages: largest {metric} change at layer {best} ({means[best]:+.3f}), "
                         f"beyond noise there for {int(beyond[best])} of {n_langs} languages")
    return "\n".join(lines)


def compare(
    base: Any,
    realigned: Any,
    *,
    corpus: Any = "sample",
    langs: Sequence[str] | str | None = None,
    pivot: str = "en",
    output_dir: str | Path | None = None,
    force: bool = False,
    model: str | None = None,
    device: str = "auto",
    limit: int | None = None,
    metrics: Sequence[str] = probes.DEFAULT_METRICS,
    baselines: bool = True,
    seed: int = 0,
    shuffles: int = 5,
    pool: str = "mean",
    cache_dir: str | Path | None = None,
    precision: str = "auto",
    max_length: int = 256,
    max_tokens: int = 8192,
    regression: bool | str = "auto",
    regression_target: str = "retrieval@last",
    figures: bool = True,
    order: str = "family",
    command: Sequence[str] | None = None,
    trust_remote_code: bool = False,
) -> CompareResult:
    """Compare two checkpoints of one model layer by layer and language by language.

    Parameters
    ----------
    base, realigned : checkpoints (``.pt``), HF directories, hub ids, ``.safetensors`` or bare
        state_dicts (with ``model``), or already loaded :class:`~layerscope.models.Encoder`.
    corpus : a corpus spec (``flores:DIR``, ``tatoeba:DIR``, ``pud:DIR``, ``tsv:FILE``,
        ``sample``) or a :class:`~layerscope.corpora.ParallelCorpus`.
    langs : target languages (default: every language of the corpus but the pivot).
    pool : sentence vector of a layer: ``mean`` (default: mean over real tokens, special tokens
        excluded), ``mean-with-special`` or ``first`` (the first token, [CLS] / <s>).
    shuffles : derangements behind the shuffled-pair baselines (mean and spread over them).
    output_dir : where to write the run directory; refused if it exists unless ``force``.

    Returns
    -------
    CompareResult with the tidy ``metrics`` table (model, metric, layer, lang, value, ci_low,
    ci_high), the ``run`` provenance dict and a printable ``summary``.
    """
    from . import outputs
    from .probes.activations import check_pool, extract_corpus, resolve_device
    from .corpora.parallel import ParallelCorpus, read_corpus
    from .models.encoder import Encoder, check_compatible, load_encoder

    timings: dict[str, float] = {}
    started = time.perf_counter()
    metrics = probes.check_metrics(list(metrics))
    if output_dir is not None:
        outputs.check_output_dir(output_dir, force=force)
    check_precision(precision)
    torch_device = resolve_device(device)
    check_pool(pool)
    if isinstance(shuffles, bool) or not isinstance(shuffles, int) or shuffles < 1:
        raise LayerscopeError(f"shuffles must be a positive whole number, got {shuffles!r}")

    tick = time.perf_counter()
    pivot = languages.normalize(pivot, source="--pivot")
    if isinstance(corpus, ParallelCorpus):
        parallel = corpus.select(languages.parse_language_list(langs) if langs is not None else None).head(limit)
    else:
        parallel = read_corpus(str(corpus), pivot=pivot, languages_=langs, limit=limit)
    pivot = parallel.pivot
    probes.check_sizes(parallel.sizes(), source=parallel.spec or parallel.name)
    timings["read_corpus"] = time.perf_counter() - tick

    tick = time.perf_counter()
    encoders = []
    for source in (base, realigned):
        if isinstance(source, Encoder):
            encoders.append(source)
        else:
            encoders.append(load_encoder(source, model=model, device=torch_device, trust_remote_code=trust_remote_code))
    base_encoder, realigned_encoder = encoders
    check_compatible(base_encoder, realigned_encoder)
    timings["load_models"] = time.perf_counter() - tick

    settings = probes.ProbeSettings(metrics=tuple(metrics), baselines=baselines, seed=seed, shuffles=shuffles)
    extract_kwargs = dict(max_tokens=max_tokens, max_length=max_length, precision=precision, cache_dir=cache_dir,
                          pool=pool)
    tables = []
    stacks: dict[str, tuple[dict, dict]] = {}
    hits: dict[str, dict] = {}
    for label, encoder in (("base", base_encoder), ("realigned", realigned_encoder)):
        tick = time.perf_counter()
        pivots, targets = extract_corpus(encoder, parallel, **extract_kwargs)
        timings[f"extract_{label}"] = time.perf_counter() - tick
        tick = time.perf_counter()
        hits[label] = {}
        tables.append(probes.crosslingual_table(label, pivots, targets, settings, hits[label]))
        timings[f"metrics_{label}"] = time.perf_counter() - tick
        stacks[label] = (pivots, targets)

    tick = time.perf_counter()
    table = pd.concat(tables, ignore_index=True)
    table = noise.fill_delta_intervals(pd.concat(
        [table, probes.delta_table(table, hits=hits, resamples=settings.resamples, seed=seed)], ignore_index=True))
    same_language_base = {pivot: next(iter(stacks["base"][0].values()))} if parallel.multiway else {}
    same_language_realigned = {pivot: next(iter(stacks["realigned"][0].values()))} if parallel.multiway else {}
    same_language_base.update(stacks["base"][1])
    same_language_realigned.update(stacks["realigned"][1])
    drift = probes.drift_table(same_language_base, same_language_realigned, metrics)
    weights = probes.weight_change_table(_stack_groups(base_encoder), _stack_groups(realigned_encoder))
    table = pd.concat([table, drift, weights], ignore_index=True)
    timings["drift"] = time.perf_counter() - tick

    summary = summarize(table, pivot=pivot)
    run = {
        "command": list(command) if command is not None else None,
        "job": "compare",
        "pivot": pivot,
        "languages": parallel.languages,
        "sentences": parallel.sizes(),
        "corpus": {"spec": parallel.spec, "name": parallel.name, "hash": parallel.content_hash(),
                   "multiway": parallel.multiway},
        "checkpoints": {
            label: {
                "source": str(src) if not isinstance(src, Encoder) else src.name,
                "name": enc.name,
                "content_hash": enc.source_hash,
                "meta": enc.checkpoint_meta,
            }
            for label, src, enc in (("base", base, base_encoder), ("realigned", realigned, realigned_encoder))
        },
        "model": {"type": base_encoder.model.config.model_type, "blocks": base_encoder.num_layers,
                  "hidden_size": base_encoder.hidden_size, "layer_names": base_encoder.layer_names},
        "config": {"metrics": list(metrics), "baselines": baselines, "shuffles": shuffles, "seed": seed,
                   "intervals": {"retrieval": "Wilson on the effective number of trials (paired directions)",
                                 "retrieval_p2t/t2p": "Wilson on n",
                                 "delta retrieval*": f"paired bootstrap over sentences, {settings.resamples} "
                                                     "draws, seeded"},
                   "pool": pool, "precision": precision,
                   "precision_used": resolve_precision(torch_device, precision),
                   "max_length": max_length, "max_tokens": max_tokens, "limit": limit, "device": str(torch_device),
                   "order": order, "regression_target": regression_target},
        "seed": seed,
    }

    regression_result = None
    if regression:
        regression_result = _default_regression(table, pivot=pivot, target=regression_target, seed=seed,
                                                required=regression is True)

    result = CompareResult(metrics=table, run=run, summary=summary, regression=regression_result)
    if output_dir is not None:
        _write_run(result, Path(output_dir), force=force, figures=figures, order=order, timings=timings,
                   started=started)
    timings["total"] = time.perf_counter() - started
    run["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    return result


def _default_regression(table: pd.DataFrame, *, pivot: str, target: str, seed: int, required: bool):
    try:
        from .stats.regression import MIN_LANGUAGES
        from .regression import regress_run_metrics
    except ImportError:  # pragma: no cover - regression ships with the package
        return None
    n_langs = table[table["model"] == "delta"]["lang"].nunique()
    if n_langs < MIN_LANGUAGES:
        message = f"regression skipped: {n_langs} languages, at least {MIN_LANGUAGES} are needed"
        if required:
            raise LayerscopeError(message)
        log.info(message)
        return None
    try:
        return regress_run_metrics(table, pivot=pivot, target=target, seed=seed)
    except LayerscopeError as exc:
        if required:
            raise
        log.warning("regression skipped: %s", exc)
        return None


def _write_run(result: CompareResult, output_dir: Path, *, force: bool, figures: bool, order: str,
               timings: dict[str, float], started: float) -> None:
    from . import outputs, provenance

    with outputs.staged_directory(output_dir, force=force) as staging:
        tick = time.perf_counter()
        outputs.atomic_write(staging / "metrics.csv",
                             lambda tmp: result.metrics.to_csv(tmp, index=False, float_format="%.8g"))
        if figures:
            result.figures = write_figures(result.metrics, staging / "figures", pivot=result.run["pivot"], order=order)
        timings["figures"] = time.perf_counter() - tick
        if result.regression is not None:
            result.regression.write(staging / "regression")
        outputs.atomic_write_text(staging / "summary.txt", result.summary + "\n")
        timings["total"] = time.perf_counter() - started
        result.run.update(
            versions=provenance.versions(),
            git_revision=provenance.git_revision(),
            host=provenance.host(),
            timings_s={k: round(v, 3) for k, v in timings.items()},
        )
        outputs.atomic_write_json(staging / "run.json", result.run)
        from .show.report import write_report

        write_report(staging, name=output_dir.name)
    result.output_dir = output_dir
    result.figures = [output_dir / p.relative_to(p.parents[1]) for p in result.figures]


def write_figures(table: pd.DataFrame, directory: Path, *, pivot: str, order: str = "family") -> list[Path]:
    from .show import heatmaps

    paths: list[Path] = []
    present = set(table["metric"])
    for metric in FIGURE_METRICS + tuple(CCA_FIGURE_METRICS):
        if metric in present:
            fig = heatmaps.heatmap_figure(table, metric, order=order, pivot=pivot)
            paths += heatmaps.save_figure(fig, directory, f"heatmap_{metric}")
    paths += heatmaps.save_figure(heatmaps.curves_figure(table, [m for m in FIGURE_METRICS if m in present]),
                                  directory, "layer_curves")
    paths += heatmaps.save_figure(heatmaps.drift_figure(table), directory, "drift")
    return paths


from ._callable import make_callable  # noqa: E402

make_callable(__name__, compare)
