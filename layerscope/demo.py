"""The demo job: the whole AlignFreeze workflow on a tiny model and the embedded corpus.

1. Train a WordPiece tokenizer on the embedded 12-language corpus and pretrain a 4-layer BERT
   on it briefly with masked language modelling -> ``base.pt``.
2. Realign it on word pairs from the embedded dictionaries, with nothing frozen
   (``realigned-full.pt``) and with the lower half frozen (AlignFreeze, ``realigned-lower.pt``).
3. Compare each against the base on held-out sentences never used for realignment
   (``compare-full/``, ``compare-lower/``).

No internet, no GPU, about two minutes on two CPU cores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ._resources import data_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoSettings:
    layers: int = 4
    width: int = 64
    heads: int = 4
    vocab_size: int = 8000  # about 4200 are single characters (both forms), the rest whole words
    pretrain_steps: int = 600
    realign_steps: int = 200
    realign_lr: float = 3e-4  # a tiny, briefly trained model needs far more than mBERT's 2e-5
    held_out: int = 50
    seed: int = 0
    # bf16 autocast barely pays at width 64 (faster extraction, slower training steps:
    # docs/benchmarks.md section 5), so the demo stays fp32 and gives the same figures on every CPU
    precision: str = "fp32"


@dataclass
class DemoResult:
    output_dir: Path
    checkpoints: dict[str, Path]
    comparisons: dict[str, object] = field(default_factory=dict)


def build_base(settings: DemoSettings = DemoSettings()):
    """Tokenizer trained on the embedded corpus and a briefly MLM-pretrained tiny BERT (an Encoder)."""
    from .corpora import read_corpus
    from .encoder import _finish
    from .checkpoint import state_dict_hash
    from .pretrain import as_base_model, pretrain_mlm
    from .toymodels import tiny_config, train_tokenizer

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


def run_demo(output_dir: str | Path = "layerscope-demo", *, force: bool = False,
             settings: DemoSettings = DemoSettings(), command: list[str] | None = None) -> DemoResult:
    """Run the demo into ``output_dir``: checkpoints and two compare runs. Returns their paths."""
    from . import outputs
    from .checkpoint import save_checkpoint
    from .compare import compare
    from .corpora import read_corpus
    from .encoder import checkpoint_from_encoder, load_encoder
    from .provenance import versions
    from .realign import realign

    output = Path(output_dir)
    with outputs.staged_directory(output, force=force) as staging:
        corpus = read_corpus("sample")
        train, held_out = corpus.split(settings.held_out)
        log.info("demo: %d languages, %d pairs for realignment, %d held out for compare",
                 len(corpus.languages), len(next(iter(train.targets.values()))), settings.held_out)
        base = build_base(settings)
        base_meta = {"name": "demo-base", "recipe": "layerscope demo: tiny BERT, MLM on the embedded corpus",
                     "settings": settings.__dict__, "versions": versions()}
        base_path = staging / "base.pt"
        save_checkpoint(base_path, checkpoint_from_encoder(base, meta=base_meta))
        checkpoints = {"base": base_path}
        dictionaries = data_file("sample", "dict")
        for policy, name in (("none", "full"), ("lower", "lower")):
            start = load_encoder(base_path)
            result = realign(start, parallel=train, pairs=f"dict:{dictionaries}", freeze=policy,
                             steps=settings.realign_steps, seed=settings.seed, lr=settings.realign_lr,
                             precision=settings.precision)
            path = staging / f"realigned-{name}.pt"
            save_checkpoint(path, result.checkpoint)
            checkpoints[f"realigned-{name}"] = path
        comparisons = {}
        for name in ("full", "lower"):
            comparisons[name] = compare(
                checkpoints["base"], checkpoints[f"realigned-{name}"], corpus=held_out,
                output_dir=staging / f"compare-{name}", device="cpu", seed=settings.seed, regression="auto",
                command=command, precision=settings.precision,
            )
    final = {key: output / path.name for key, path in checkpoints.items()}
    for name, result in comparisons.items():
        result.output_dir = output / f"compare-{name}"
    return DemoResult(output, final, comparisons)
