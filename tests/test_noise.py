"""The summary names a change only when it is beyond noise (layerscope.stats.noise, compare.summarize).

Tables are built by hand: every value and interval below is chosen so the right verdict is
known without running the code (an interval excluding 0 or not; |Δ| against a spread).
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from layerscope.compare import summarize
from layerscope.probes import COLUMNS, delta_table
from layerscope.show.report import _delta_table
from layerscope.stats import noise

NAN = math.nan


def _table(rows: list[tuple]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=COLUMNS)
    return pd.concat([table, delta_table(table)], ignore_index=True)


def _retrieval(lang: str, layer: int, base: float, realigned: float, half: float) -> list[tuple]:
    return [("base", "retrieval", layer, lang, base, base - half, base + half),
            ("realigned", "retrieval", layer, lang, realigned, realigned - half, realigned + half)]


@pytest.fixture()
def table() -> pd.DataFrame:
    """fr: +0.30 at layer 2 with half-widths 0.05 (beyond); de: +0.04 (one sentence of fifty,
    half-widths 0.10: within). CKA has no interval: fr's +0.20 exceeds its shuffled spread
    0.02, de's +0.01 does not."""
    rows: list[tuple] = []
    for layer in range(3):
        rows += _retrieval("fr", layer, 0.50, 0.80 if layer == 2 else 0.50, 0.05)
        rows += _retrieval("de", layer, 0.50, 0.54 if layer == 2 else 0.50, 0.10)
        for lang, change in (("fr", 0.20), ("de", 0.01)):
            rows.append(("base", "cka", layer, lang, 0.40, NAN, NAN))
            rows.append(("realigned", "cka", layer, lang, 0.40 + (change if layer == 2 else 0.0), NAN, NAN))
            for model, value in (("base", 0.01), ("realigned", -0.01)):
                rows.append((model, "cka_shuffled", layer, lang, value, NAN, NAN))
    return noise.fill_delta_intervals(_table(rows))


def test_recovered_interval_is_square_and_add_of_both_half_widths(table):
    fr = table[(table["model"] == "delta") & (table["metric"] == "retrieval") & (table["lang"] == "fr")
               & (table["layer"] == 2)].iloc[0]
    half = math.sqrt(0.05**2 + 0.05**2)
    assert fr["ci_low"] == pytest.approx(0.30 - half) and fr["ci_high"] == pytest.approx(0.30 + half)
    # asymmetric intervals: the lower bound takes realigned's lower and base's upper arm
    rows = [("base", "retrieval", 0, "fr", 0.5, 0.4, 0.7), ("realigned", "retrieval", 0, "fr", 0.9, 0.6, 0.95)]
    delta = noise.fill_delta_intervals(_table(rows)).iloc[-1]
    assert delta["ci_low"] == pytest.approx(0.4 - math.hypot(0.3, 0.2))
    assert delta["ci_high"] == pytest.approx(0.4 + math.hypot(0.05, 0.1))


def test_an_interval_already_there_is_kept():
    rows = [("base", "retrieval", 0, "fr", 0.5, 0.4, 0.6), ("realigned", "retrieval", 0, "fr", 0.6, 0.5, 0.7)]
    table = _table(rows)
    table.loc[table["model"] == "delta", ["ci_low", "ci_high"]] = (0.01, 0.19)
    delta = noise.fill_delta_intervals(table).iloc[-1]
    assert (delta["ci_low"], delta["ci_high"]) == (0.01, 0.19)
    assert noise.judge_deltas(table, "retrieval")["verdict"].tolist() == [noise.BEYOND]


def test_verdicts(table):
    retrieval = noise.judge_deltas(table, "retrieval").set_index(["lang", "layer"])["verdict"]
    assert retrieval[("fr", 2)] == noise.BEYOND and retrieval[("de", 2)] == noise.WITHIN
    assert retrieval[("fr", 0)] == noise.WITHIN  # Δ = 0
    cka = noise.judge_deltas(table, "cka").set_index(["lang", "layer"])
    assert cka.loc[("fr", 2), "verdict"] == noise.BEYOND and cka.loc[("de", 2), "verdict"] == noise.WITHIN
    assert cka.loc[("fr", 2), "noise"] == pytest.approx(0.02)
    # without an interval or a shuffled baseline nothing can be judged
    bare = table[table["metric"] != "cka_shuffled"]
    assert set(noise.judge_deltas(bare, "cka")["verdict"]) == {noise.UNJUDGED}


def test_summary_names_the_real_change_and_calls_the_other_noise(table):
    lines = {line.split()[0]: line for line in summarize(table, pivot="en").splitlines()[1:]}
    assert "layer 2 +0.300 [+0.229, +0.371]" in lines["fr"]
    assert "CKA: layer 2 +0.200 (> shuffled spread 0.020)" in lines["fr"]
    assert lines["de"].split(None, 1)[1] == "retrieval: within noise; CKA: within noise"
    assert "0.040" not in lines["de"] and "0.010" not in lines["de"]
    assert lines["mean"].strip() == ("mean over languages: largest retrieval change at layer 2 (+0.170), "
                             "beyond noise there for 1 of 2 languages")


def test_summary_when_nothing_is_beyond_noise(table):
    quiet = table[~((table["lang"] == "fr") & (table["layer"] == 2))]
    text = summarize(quiet, pivot="en")
    assert "+0.300" not in text and "layer 2" not in text
    assert text.splitlines()[-1].endswith("retrieval within noise (no language's retrieval changed beyond noise at any layer)")


def test_report_marks_changes_within_noise(table):
    html = _delta_table(table, "retrieval")
    assert html.count('class="pos"') == 1  # fr's +0.300 only
    assert html.count("noise") >= 5  # every other cell, and the legend
