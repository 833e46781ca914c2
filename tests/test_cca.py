"""SVCCA, PWCCA and orthogonal Procrustes: identities, invariances, and a numpy reference.

The reference below is written from the definitions along another route than the module's
(covariance whitening instead of orthonormal bases; the explicit Procrustes rotation instead
of the nuclear norm), in float64 numpy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from layerscope.errors import LayerscopeError
from layerscope.probes import cca

# ----------------------------------------------------------------------------- reference


def _inv_sqrt(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return (v / np.sqrt(w)) @ v.T


def ref_svd_reduce(x: np.ndarray, share: float | None = None, dims: int | None = None) -> np.ndarray:
    """Centred x projected on its top principal axes (eigenvectors of the covariance)."""
    xc = x - x.mean(0)
    w, v = np.linalg.eigh(xc.T @ xc)
    w, v = w[::-1], v[:, ::-1]
    if dims is None:
        k = len(w) if share is None else int(np.argmax(np.cumsum(w) / w.sum() >= share - 1e-12)) + 1
    else:
        k = dims
    return xc @ v[:, :k]


def ref_cca(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical correlations, and the x-side unit canonical variates (n, m)."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    wx, wy = _inv_sqrt(xc.T @ xc), _inv_sqrt(yc.T @ yc)
    u, rho, _ = np.linalg.svd(wx @ xc.T @ yc @ wy)
    m = min(x.shape[1], y.shape[1])
    variates = xc @ wx @ u[:, :m]
    return rho[:m], variates / np.linalg.norm(variates, axis=0)


def ref_svcca(x, y, share=0.99, dims=None) -> float:
    return float(ref_cca(ref_svd_reduce(x, share, dims), ref_svd_reduce(y, share, dims))[0].mean())


def ref_pwcca(x, y) -> float:
    rho, h = ref_cca(x, y)
    xc = x - x.mean(0)
    alpha = np.abs(h.T @ xc).sum(axis=1)
    return float((alpha / alpha.sum()) @ rho)


def ref_procrustes_distance(x, y) -> float:
    xc, yc = x - x.mean(0), y - y.mean(0)
    width = max(xc.shape[1], yc.shape[1])
    xc = np.pad(xc, ((0, 0), (0, width - xc.shape[1])))
    yc = np.pad(yc, ((0, 0), (0, width - yc.shape[1])))
    xc, yc = xc / np.linalg.norm(xc), yc / np.linalg.norm(yc)
    u, _, vt = np.linalg.svd(yc.T @ xc)
    rotation = u @ vt  # argmin_Q ‖x − yQ‖ over orthogonal Q
    return float(np.linalg.norm(xc - yc @ rotation))


# ----------------------------------------------------------------------------- data


def correlated(n=300, d1=8, d2=10, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 6))
    x = z @ rng.standard_normal((6, d1)) + noise * rng.standard_normal((n, d1))
    y = z @ rng.standard_normal((6, d2)) + noise * rng.standard_normal((n, d2)) + 3.0
    # unequal variances make the 99 % truncation bite
    return x * np.linspace(0.2, 3, d1), y * np.linspace(3, 0.1, d2)


def orthogonal(d, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def invertible(d, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((d, d)) + 2 * np.eye(d)


# ----------------------------------------------------------------------------- reference agreement


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_numpy_reference(seed):
    x, y = correlated(seed=seed)
    assert cca.svcca(x, y) == pytest.approx(ref_svcca(x, y), abs=1e-10)
    assert cca.svcca(x, y, dims=3) == pytest.approx(ref_svcca(x, y, dims=3), abs=1e-10)
    assert cca.svcca(x, y, variance=1.0) == pytest.approx(ref_svcca(x, y, share=None), abs=1e-10)
    assert cca.pwcca(x, y) == pytest.approx(ref_pwcca(x, y), abs=1e-10)
    assert cca.pwcca(y, x) == pytest.approx(ref_pwcca(y, x), abs=1e-10)
    assert cca.procrustes_distance(x, y) == pytest.approx(ref_procrustes_distance(x, y), abs=1e-10)
    d = ref_procrustes_distance(x, y)
    assert cca.procrustes_similarity(x, y) == pytest.approx(1 - d * d / 2, abs=1e-10)
    assert cca.procrustes_distance(x, y, angular=True) == pytest.approx(math.acos(1 - d * d / 2), abs=1e-10)
    rho = cca.cca_correlations(x, y)
    np.testing.assert_allclose(rho.numpy(), ref_cca(x, y)[0], atol=1e-10)


def test_svcca_truncation_keeps_the_stated_share():
    x, y = correlated(seed=3)
    xc = x - x.mean(0)
    s2 = np.linalg.svd(xc, compute_uv=False) ** 2
    k = int(np.argmax(np.cumsum(s2) / s2.sum() >= 0.9)) + 1
    assert 1 < k < x.shape[1]
    assert cca.svcca(x, y, variance=0.9) == pytest.approx(ref_svcca(x, y, share=0.9), abs=1e-10)
    assert cca.svcca(x, y, variance=0.9) != pytest.approx(cca.svcca(x, y, variance=1.0), abs=1e-4)


def test_procrustes_wider_than_samples_uses_padding_definition():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((12, 40)), rng.standard_normal((12, 25))
    assert cca.procrustes_distance(x, y) == pytest.approx(ref_procrustes_distance(x, y), abs=1e-10)


# ----------------------------------------------------------------------------- identities


def test_self_similarity_and_zero_distance():
    x, _ = correlated(seed=4)
    assert cca.svcca(x, x) == pytest.approx(1.0, abs=1e-12)
    assert cca.pwcca(x, x) == pytest.approx(1.0, abs=1e-12)
    assert cca.procrustes_similarity(x, x) == pytest.approx(1.0, abs=1e-12)
    assert cca.procrustes_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert cca.procrustes_distance(x, x, angular=True) == pytest.approx(0.0, abs=1e-6)


def test_symmetry_where_it_holds_and_pwcca_is_asymmetric():
    x, y = correlated(seed=6)
    assert cca.svcca(x, y) == pytest.approx(cca.svcca(y, x), abs=1e-12)
    assert cca.procrustes_distance(x, y) == pytest.approx(cca.procrustes_distance(y, x), abs=1e-12)
    assert cca.procrustes_distance(x, y, angular=True) == pytest.approx(
        cca.procrustes_distance(y, x, angular=True), abs=1e-12)
    assert abs(cca.pwcca(x, y) - cca.pwcca(y, x)) > 1e-4


def test_rotation_invariance():
    x, y = correlated(seed=7)
    qx, qy = orthogonal(x.shape[1], 1), orthogonal(y.shape[1], 2)
    for f in (cca.svcca, cca.procrustes_similarity, cca.procrustes_distance):
        assert f(x @ qx, y @ qy) == pytest.approx(f(x, y), abs=1e-10), f.__name__
    # PWCCA: any rotation of the second side; the first side's features set the weights, so
    # there permutations and sign flips leave it unchanged ...
    perm_signs = np.eye(x.shape[1])[np.random.default_rng(0).permutation(x.shape[1])] * \
        np.where(np.arange(x.shape[1]) % 2, -1.0, 1.0)
    assert cca.pwcca(x @ perm_signs, y @ qy) == pytest.approx(cca.pwcca(x, y), abs=1e-10)
    # ... but a general rotation does not (Morcos et al.'s L1 weights are per feature)
    assert abs(cca.pwcca(x @ qx, y) - cca.pwcca(x, y)) > 1e-4


def test_scaling_and_translation_invariance():
    x, y = correlated(seed=8)
    for f in (cca.svcca, cca.pwcca, cca.procrustes_similarity):
        assert f(5.0 * x + 2.0, 0.1 * y - 7.0) == pytest.approx(f(x, y), abs=1e-10), f.__name__


def test_invertible_linear_maps():
    x, y = correlated(seed=9)
    ax, ay = invertible(x.shape[1], 3), invertible(y.shape[1], 4)
    full = dict(variance=1.0)
    assert cca.svcca(x @ ax, y @ ay, **full) == pytest.approx(cca.svcca(x, y, **full), abs=1e-9)
    np.testing.assert_allclose(cca.cca_correlations(x @ ax, y @ ay).numpy(), cca.cca_correlations(x, y).numpy(),
                               atol=1e-9)
    assert cca.pwcca(x, y @ ay) == pytest.approx(cca.pwcca(x, y), abs=1e-9)
    # one side an invertible map of the other: every canonical correlation is 1
    assert cca.svcca(x, x @ ax, **full) == pytest.approx(1.0, abs=1e-10)
    # the case that must not be invariant: Procrustes sees a non-orthogonal map
    stretch = np.diag(np.linspace(0.1, 10, x.shape[1]))
    assert cca.procrustes_similarity(x, x @ stretch) < 0.99
    assert cca.procrustes_distance(x, x @ stretch) > 0.1
    assert abs(cca.procrustes_similarity(x @ ax, y) - cca.procrustes_similarity(x, y)) > 1e-3


def test_torch_float32_input_matches_float64():
    x, y = correlated(seed=10)
    assert cca.svcca(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)) == \
        pytest.approx(cca.svcca(x.astype(np.float32).astype(np.float64), y.astype(np.float32).astype(np.float64)),
                      abs=1e-10)


def test_independent_data_is_far_from_one():
    rng = np.random.default_rng(11)
    x, y = rng.standard_normal((2000, 5)), rng.standard_normal((2000, 5))
    assert cca.svcca(x, y) < 0.1
    assert cca.pwcca(x, y) < 0.1


# ----------------------------------------------------------------------------- sample requirement and errors


def test_refuses_when_samples_are_not_well_above_the_width():
    rng = np.random.default_rng(12)
    x, y = rng.standard_normal((30, 10)), rng.standard_normal((30, 10))
    with pytest.raises(LayerscopeError, match=r"needs n ≥ 40 samples.*k_x = 10 and k_y = 10.*got n = 30"):
        cca.pwcca(x, y)
    # with min_ratio lowered, still refused at the exact degeneracy n ≤ k_x + k_y
    assert 0 < cca.pwcca(x, y, min_ratio=1.0) < 1
    with pytest.raises(LayerscopeError, match="needs n ≥ 21"):
        cca.svcca(x[:20], y[:20], variance=1.0, min_ratio=0.0)
    assert cca.svcca(x, y, dims=2) < 1  # fewer directions: allowed


def test_bad_inputs_name_the_problem():
    x, y = correlated(seed=13)
    with pytest.raises(LayerscopeError, match="same number of rows"):
        cca.svcca(x, y[:-1])
    with pytest.raises(LayerscopeError, match="constant"):
        cca.procrustes_distance(np.ones_like(x), y)
    with pytest.raises(LayerscopeError, match="variance must be a share"):
        cca.svcca(x, y, variance=1.5)
    with pytest.raises(LayerscopeError, match="dims must be a positive integer"):
        cca.svcca(x, y, dims=0)
    with pytest.raises(LayerscopeError, match=r"shape \(n, d\)"):
        cca.pwcca(x[0], y[0])


def test_per_layer_gives_nan_for_refused_layers():
    rng = np.random.default_rng(14)
    a, b = rng.standard_normal((3, 30, 10)), rng.standard_normal((3, 30, 10))
    a[1], b[1] = a[1] @ np.diag([1.0] * 2 + [0.0] * 8), b[1] @ np.diag([1.0] * 2 + [0.0] * 8)  # rank 2
    messages: list[str] = []
    values = cca.per_layer("pwcca", a, b, on_refusal=messages.append)
    assert math.isnan(values[0]) and math.isnan(values[2]) and 0 <= values[1] <= 1
    assert len(messages) == 2 and "layer 0" in messages[0]
    with pytest.raises(LayerscopeError):
        cca.per_layer("pwcca", a, b)
    assert cca.per_layer("procrustes_angular", a, b)[0] == pytest.approx(
        cca.procrustes_distance(a[0], b[0], angular=True))


# ----------------------------------------------------------------------------- in compare and drift


def test_compare_measures_cca_per_layer_and_drift(tiny_checkpoints, tmp_path, caplog, one_thread):
    from conftest import synthetic_parallel, write_tsv
    from layerscope.compare import compare

    corpus = write_tsv(tmp_path / "p.tsv", {k: v for k, v in synthetic_parallel(n=160, seed=3).items()
                                             if k in ("en", "fr")})
    names = ["svcca", "pwcca", "procrustes", "procrustes_angular"]
    result = compare(tiny_checkpoints["base"], tiny_checkpoints["perturbed"], corpus=f"tsv:{corpus}",
                     metrics=["cka", *names], baselines=False, regression=False, figures=False)
    table = result.metrics
    for name in names:
        rows = table[(table["metric"] == name) & (table["model"] == "base")]
        assert len(rows) == 5 and rows["value"].between(0, math.pi / 2).all(), name
        drift = table[table["metric"] == f"drift_{name}"].set_index(["lang", "layer"])["value"]
        assert set(drift.index.get_level_values("lang")) == {"en", "fr"}
        # blocks 0-1 untouched: layers 0-2 identical in both models
        same = 0.0 if name == "procrustes_angular" else 1.0
        for layer in (0, 1, 2):
            assert drift[("fr", layer)] == pytest.approx(same, abs=1e-5), (name, layer)
        assert abs(drift[("fr", 4)] - same) > 1e-4, name
    delta = table[(table["model"] == "delta") & table["metric"].isin(names) & (table["layer"] <= 2)]
    assert delta["value"].abs().max() < 1e-6

    # too few sentences for the width: NaN in the table and a warning, the run goes on
    small = write_tsv(tmp_path / "s.tsv", {k: v[:20] for k, v in synthetic_parallel(n=20).items() if k in ("en", "de")})
    with caplog.at_level("WARNING"):
        result = compare(tiny_checkpoints["base"], tiny_checkpoints["perturbed"], corpus=f"tsv:{small}",
                         metrics=["pwcca", "procrustes"], baselines=False, regression=False, figures=False)
    rows = result.metrics
    assert rows[(rows["metric"] == "pwcca") & (rows["model"] == "base")]["value"].isna().all()
    assert rows[(rows["metric"] == "procrustes") & (rows["model"] == "base")]["value"].notna().all()
    assert "PWCCA needs n ≥" in caplog.text
