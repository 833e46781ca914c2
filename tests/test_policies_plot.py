"""The freeze-policy comparison figure: its per-layer reduction and what it draws."""

from __future__ import annotations

import pandas as pd
import pytest

from layerscope.show.policies import fixed_layers, policies_figure, policy_profile


def _metrics(delta_scale: float) -> pd.DataFrame:
    rows = []
    for layer in range(3):
        for lang, offset in (("fr", 0.0), ("de", 0.2)):
            for metric in ("retrieval", "cka"):
                rows.append(("delta", metric, layer, lang, delta_scale * (layer + offset)))
                rows.append(("base", metric, layer, lang, 0.5))
        for lang, drift in (("en", 0.1), ("fr", 0.3), ("de", 0.2)):
            rows.append(("drift", "drift_cka", layer, lang, 1.0 - drift * layer))
    rows.append(("drift", "weight_change", 1, "", 0.01))
    return pd.DataFrame(rows, columns=["model", "metric", "layer", "lang", "value"])


def test_profile_means_ranges_and_drift_per_layer():
    profile = policy_profile(_metrics(1.0)).set_index(["quantity", "layer"])
    # Δ retrieval at layer 2: fr 2.0, de 2.2
    assert profile.loc[("delta_retrieval", 2), "mean"] == pytest.approx(2.1)
    assert profile.loc[("delta_retrieval", 2), "low"] == pytest.approx(2.0)
    assert profile.loc[("delta_retrieval", 2), "high"] == pytest.approx(2.2)
    # drift = 1 − CKA(base, realigned), averaged over en, fr, de: (0.1 + 0.3 + 0.2) × layer / 3
    assert profile.loc[("drift", 2), "mean"] == pytest.approx(0.4)
    assert profile.loc[("drift", 0), "high"] == pytest.approx(0.0)
    assert sorted(profile.index.get_level_values(0).unique()) == ["delta_cka", "delta_retrieval", "drift"]


def test_profile_refuses_a_table_without_the_metric():
    table = _metrics(1.0)
    with pytest.raises(ValueError, match="no delta rows for 'retrieval'"):
        policy_profile(table[table["metric"] != "retrieval"])


def test_fixed_layers_are_the_outputs_of_frozen_parameters():
    assert fixed_layers([0, 1], False) == {1, 2}
    assert fixed_layers([2, 3], True) == {0, 3, 4}
    assert fixed_layers([], False) == set()


def test_figure_has_a_panel_per_quantity_and_a_line_per_policy():
    profiles = {"none": policy_profile(_metrics(1.0)), "lower": policy_profile(_metrics(0.5))}
    figure = policies_figure(profiles, {"lower": {1}})
    assert len(figure.axes) == 3
    retrieval_axis = figure.axes[0]
    labels = [line.get_label() for line in retrieval_axis.get_lines() if not line.get_label().startswith("_")]
    assert labels == ["full realignment", "lower half frozen (AlignFreeze)"]
    hollow = [line for line in retrieval_axis.get_lines() if line.get_markerfacecolor() == "white"]
    assert [list(line.get_xdata()) for line in hollow if len(line.get_xdata())] == [[1]]
