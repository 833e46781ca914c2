"""Probes: batched extraction of every layer's hidden states (pooling, caching), the similarity
measures on them (CKA, translation retrieval and its baselines, drift, CCA and Procrustes, linear
probes) and the tidy probe table (model, metric, layer, lang, value, ci_low, ci_high).

Data enters as an :class:`~layerscope.models.Encoder` and sentences, or as tensors of shape
``(n, d)`` / ``(L, n, d)``, and leaves as tensors, floats and tidy data frames. Nothing here
writes files (beyond the activation cache) or draws.
"""

from .activations import LayerStack, extract, extract_corpus
from .cca import cca_correlations, procrustes_distance, procrustes_similarity, pwcca, svcca
from .cka import MinibatchCKA, center_gram, cka_matrix, cka_per_layer, debiased_linear_cka, gram_linear, gram_rbf
from .cka import hsic_biased, hsic_unbiased, linear_cka, rbf_cka
from .drift import relative_weight_change
from .retrieval import retrieval_accuracy, retrieval_hits_per_layer, retrieval_per_layer, shuffled_pairs
from .table import COLUMNS, crosslingual_table, delta_table, drift_table, weight_change_table

__all__ = [
    "COLUMNS",
    "LayerStack",
    "MinibatchCKA",
    "cca_correlations",
    "center_gram",
    "cka_matrix",
    "cka_per_layer",
    "crosslingual_table",
    "debiased_linear_cka",
    "delta_table",
    "drift_table",
    "extract",
    "extract_corpus",
    "gram_linear",
    "gram_rbf",
    "hsic_biased",
    "hsic_unbiased",
    "linear_cka",
    "procrustes_distance",
    "procrustes_similarity",
    "pwcca",
    "rbf_cka",
    "relative_weight_change",
    "retrieval_accuracy",
    "retrieval_hits_per_layer",
    "retrieval_per_layer",
    "shuffled_pairs",
    "svcca",
    "weight_change_table",
]
