"""layerscope: layer-by-layer analysis of multilingual realignment (AlignFreeze).

The public API is re-exported here and imported lazily, so ``import layerscope`` stays cheap.
Shapes: representations are ``(n, d)``; a layer stack is ``(L+1, n, d)`` with layer 0 the
embedding output.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # jobs
    "compare": "layerscope.compare:compare",
    "realign": "layerscope.realign:realign",
    "finetune": "layerscope.tasks.job:finetune",
    "regress": "layerscope.regression:regress",
    "gains": "layerscope.gains:compute_gains",
    "run_demo": "layerscope.demo:run_demo",
    "sweep": "layerscope.sweep:sweep",
    "probe": "layerscope.probing:probe",
    # building blocks
    "load_checkpoint": "layerscope.models.checkpoint:load_checkpoint",
    "save_checkpoint": "layerscope.models.checkpoint:save_checkpoint",
    "load_encoder": "layerscope.models.encoder:load_encoder",
    "Encoder": "layerscope.models.encoder:Encoder",
    "read_corpus": "layerscope.corpora:read_corpus",
    "ParallelCorpus": "layerscope.corpora:ParallelCorpus",
    "extract": "layerscope.probes.activations:extract",
    "LayerStack": "layerscope.probes.activations:LayerStack",
    "linear_cka": "layerscope.probes.cka:linear_cka",
    "debiased_linear_cka": "layerscope.probes.cka:debiased_linear_cka",
    "rbf_cka": "layerscope.probes.cka:rbf_cka",
    "cka_matrix": "layerscope.probes.cka:cka_matrix",
    "retrieval_accuracy": "layerscope.probes.retrieval:retrieval_accuracy",
    "svcca": "layerscope.probes.cca:svcca",
    "pwcca": "layerscope.probes.cca:pwcca",
    "cca_correlations": "layerscope.probes.cca:cca_correlations",
    "procrustes_distance": "layerscope.probes.cca:procrustes_distance",
    "procrustes_similarity": "layerscope.probes.cca:procrustes_similarity",
    "distances": "layerscope.stats.typology:distances",
    "LayerscopeError": "layerscope.errors:LayerscopeError",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'layerscope' has no attribute {name!r}")
    module_name, attr = target.split(":")
    module = importlib.import_module(module_name)
    value = getattr(module, attr)
    if module_name == f"layerscope.{name}":
        # A job module of the same name (layerscope.compare) is itself callable; keep the module
        # bound so that ``layerscope.compare.CompareResult`` also works.
        return module
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
