"""Tests for layerscope.gains and `layerscope gains`: counts on a hand-made table, both layouts,
the rounding convention, single seeds, and the error paths (file and column named)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from layerscope.cli import main
from layerscope.errors import LayerscopeError
from layerscope.gains import compute_gains
from layerscope.stats.gains import read_results, wide_metrics

FIXTURES = Path(__file__).parent / "fixtures" / "gains"
WIDE = FIXTURES / "wide_small.csv"
TIDY = FIXTURES / "tidy_small.csv"


def _row(result, method, lang):
    table = result.table
    return table[(table["method"] == method) & (table["lang"] == lang)].iloc[0]


@pytest.mark.parametrize("path", [WIDE, TIDY], ids=["wide", "tidy"])
def test_counts_on_hand_made_table(path):
    result = compute_gains(path, baseline="baseline", methods=["m1"], convention="exact")
    counts = result.counts.set_index("method").loc["m1"]
    # exact comparison: fr above, de within (equal to a zero-width band), ja below, ar above
    assert (counts["below"], counts["within"], counts["above"], counts["undefined"]) == (1, 1, 2, 0)
    # rounded to 0.1: ar 44.8 is not > 42.0 + 2.8 any more (the float sum is 44.8 exactly too)
    assert (counts["below_published"], counts["within_published"], counts["above_published"]) == (1, 2, 1)
    bands = {lang: _row(result, "m1", lang)["band"] for lang in ("fr", "de", "ja", "ar")}
    assert bands == {"fr": "above", "de": "within", "ja": "below", "ar": "above"}
    assert _row(result, "m1", "ar")["band_published"] == "within"
    default = compute_gains(path, baseline="baseline", methods=["m1"])  # the published convention
    assert default.counts.iloc[0][["below", "within", "above"]].tolist() == [1, 2, 1]


def test_means_stds_and_deltas_are_population_statistics_in_points():
    result = compute_gains(WIDE, methods="m1")
    fr = _row(result, "m1", "fr")
    assert fr["baseline_mean"] == pytest.approx(82.0)
    assert fr["baseline_std"] == pytest.approx(np.std([80.0, 82.0, 84.0]))  # ddof=0
    assert fr["baseline_std"] == pytest.approx(math.sqrt(8 / 3))
    assert fr["delta"] == pytest.approx(3.0)
    assert fr["n_seeds"] == 3 and fr["baseline_n_seeds"] == 3
    assert result.unit.startswith("points")
    # the summaries avg / same are not languages
    assert set(result.table["lang"]) == {"fr", "de", "ja", "ar"}
    # averages: per seed mean over languages, then mean over seeds
    avg = result.averages.set_index("method").loc["baseline"]
    assert avg["mean"] == pytest.approx(np.mean([[80, 70, 50, 40], [82, 70, 60, 40], [84, 70, 70, 46]]))


def test_langs_and_exclude_langs_select_languages(capsys):
    """Exact counts of the hand-made table are fr above, de within, ja below, ar above; leaving
    out ja leaves 0 / 1 / 2; keeping fr and ja gives 1 / 0 / 1; the averages are over the
    languages kept (per seed, then over seeds)."""
    without_ja = compute_gains(WIDE, methods=["m1"], convention="exact", exclude_langs=["ja"])
    counts = without_ja.counts.iloc[0]
    assert (counts["below"], counts["within"], counts["above"]) == (0, 1, 2)
    assert set(without_ja.table["lang"]) == {"fr", "de", "ar"}
    avg = without_ja.averages.set_index("method").loc["baseline"]
    assert avg["mean"] == pytest.approx(np.mean([[80, 70, 40], [82, 70, 40], [84, 70, 46]]))
    kept = compute_gains(WIDE, methods=["m1"], convention="exact", langs=["FR", "ja"])  # codes normalised
    assert kept.counts.iloc[0][["below", "within", "above"]].tolist() == [1, 0, 1]
    with pytest.raises(LayerscopeError, match="exclude_langs: no results for xx"):
        compute_gains(WIDE, methods=["m1"], exclude_langs=["xx"])
    assert main(["gains", str(WIDE), "--method", "m1", "--convention", "exact", "--exclude-langs", "ja"]) == 0
    out = capsys.readouterr().out
    assert "0/1/2" in out and "\nja " not in out
    assert main(["gains", str(WIDE), "--langs", "fr,zz"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "langs: no results for zz" in err and "wide_small.csv" in err


def test_wide_and_tidy_layouts_agree():
    a = compute_gains(WIDE, methods=["m1", "one_seed"]).table
    b = compute_gains(TIDY, methods=["m1", "one_seed"]).table
    columns = ["method", "lang", "mean", "baseline_mean", "delta", "band"]
    pd.testing.assert_frame_equal(a[columns].reset_index(drop=True), b[columns].reset_index(drop=True))


def test_eval_columns_ignored_when_final_eval_exists():
    tidy = read_results(WIDE)
    assert tidy.loc[tidy["lang"] == "fr", "score"].max() == pytest.approx(0.90)  # not 0.11 from eval_fr


def test_single_seed_method_has_undefined_std_and_is_reported():
    result = compute_gains(WIDE, methods=["one_seed"])
    row = _row(result, "one_seed", "fr")
    assert math.isnan(row["std"]) and row["n_seeds"] == 1
    assert row["band"] == "above"  # the band needs only the baseline's std
    assert any("one_seed" in note and "single seed" in note for note in result.notes)
    assert "±n/a" in result.paper_table()


def test_single_seed_baseline_makes_band_undefined():
    frame = pd.DataFrame({"seed": [1, 1, 2], "method": ["base", "new", "new"], "lang": ["fr"] * 3,
                          "score": [50.0, 60.0, 61.0]})
    result = compute_gains(frame, baseline="base", scale=1)
    assert _row(result, "new", "fr")["band"] == "undefined"
    counts = result.counts.iloc[0]
    assert counts["undefined"] == 1 and counts["above"] == 0
    assert any("baseline" in note for note in result.notes)


def test_method_patterns_and_default_methods():
    assert compute_gains(WIDE).methods == ["m1", "one_seed"]
    assert compute_gains(WIDE, methods="m*").methods == ["m1"]
    with pytest.raises(LayerscopeError, match="method 'm2' not in the results.*did you mean 'm1'"):
        compute_gains(WIDE, methods=["m2"])
    with pytest.raises(LayerscopeError, match="baseline method 'base'"):
        compute_gains(WIDE, baseline="base")


def test_rounding_then_float_comparison_at_ties():
    frame = pd.DataFrame({"seed": [1, 2, 1, 2], "method": ["b", "b", "m", "m"], "lang": ["de"] * 4,
                          "score": [40.0, 44.0, 44.8, 44.8]})
    result = compute_gains(frame, baseline="b", scale=1)
    row = _row(result, "m", "de")
    assert row["baseline_std"] == pytest.approx(2.0)
    assert row["band_exact"] == "above" and row["band_published"] == "above"  # 44.8 > 44.0
    frame.loc[frame["method"] == "m", "score"] = 44.04
    row = _row(compute_gains(frame, baseline="b", scale=1), "m", "de")
    assert row["band_exact"] == "above" and row["band_published"] == "within"  # 44.0 is not > 44.0
    # the notebook's tie: baseline 62.3 ± 0.3, method 62.6; in floats 62.3 + 0.3 = 62.599999999999994
    assert 62.3 + 0.3 < 62.6 and 62.7 - 0.3 > 62.4
    frame = pd.DataFrame({"seed": [1, 2] * 4, "method": ["b"] * 4 + ["m"] * 4,
                          "lang": ["vi", "vi", "ko", "ko"] * 2,
                          "score": [62.0, 62.6, 62.4, 63.0, 62.6, 62.6, 62.4, 62.4]})
    result = compute_gains(frame, baseline="b", scale=1)
    vi, ko = _row(result, "m", "vi"), _row(result, "m", "ko")
    assert (vi["baseline_mean_rounded"], vi["baseline_std_rounded"], vi["mean_rounded"]) == (62.3, 0.3, 62.6)
    assert vi["band"] == vi["band_published"] == "above"  # the float sum decides: above
    assert (ko["baseline_mean_rounded"], ko["baseline_std_rounded"], ko["mean_rounded"]) == (62.7, 0.3, 62.4)
    assert ko["band"] == "below"  # 62.4 < 62.7 - 0.3 = 62.400000000000006
    exact = compute_gains(frame, baseline="b", scale=1, convention="exact")
    assert exact.convention == "exact" and _row(exact, "m", "vi")["band"] == "above"  # 62.6 > 62.6 - 1e-15
    with pytest.raises(LayerscopeError, match="unknown band convention"):
        compute_gains(frame, baseline="b", convention="notebook")


def test_missing_column_names_file_and_column(tmp_path):
    path = tmp_path / "res.csv"
    pd.read_csv(WIDE).drop(columns=["seed"]).to_csv(path, index=False)
    with pytest.raises(LayerscopeError) as info:
        compute_gains(path)
    assert str(path) in str(info.value) and "'seed'" in str(info.value)


def test_non_numeric_score_names_file_and_column(tmp_path):
    path = tmp_path / "res.csv"
    frame = pd.read_csv(WIDE).astype({"final_eval_ja_accuracy": object})
    frame.loc[2, "final_eval_ja_accuracy"] = "n.a."
    frame.to_csv(path, index=False)
    with pytest.raises(LayerscopeError) as info:
        compute_gains(path)
    message = str(info.value)
    assert str(path) in message and "final_eval_ja_accuracy" in message and "'n.a.'" in message
    tidy = tmp_path / "tidy.csv"
    frame = pd.read_csv(TIDY).astype({"score": object})
    frame.loc[0, "score"] = "oops"
    frame.to_csv(tidy, index=False)
    with pytest.raises(LayerscopeError, match=r"tidy\.csv: column 'score' is not numeric"):
        compute_gains(tidy)


def test_unknown_layout_and_duplicates(tmp_path):
    path = tmp_path / "odd.csv"
    pd.DataFrame({"a": [1], "b": [2]}).to_csv(path, index=False)
    with pytest.raises(LayerscopeError, match="neither layout"):
        compute_gains(path)
    dup = tmp_path / "dup.csv"
    pd.concat([pd.read_csv(TIDY), pd.read_csv(TIDY).head(1)]).to_csv(dup, index=False)
    with pytest.raises(LayerscopeError, match="duplicate result"):
        compute_gains(dup)


def test_write_outputs(tmp_path):
    result = compute_gains([WIDE], methods="m1")
    written = result.write(tmp_path / "out")
    names = {p.name for p in written}
    assert {"gains.csv", "counts.csv", "averages.csv", "table.txt", "gains.json",
            "gains_heatmap.png", "gains_heatmap.svg"} <= names
    back = pd.read_csv(tmp_path / "out" / "gains.csv")
    assert len(back) == 4 and set(back["band"]) == {"above", "within", "below"}


def test_cli_prints_table_and_writes(tmp_path, capsys):
    out = tmp_path / "g"
    code = main(["-q", "gains", str(WIDE), "--method", "m1", "--round", "1", "-o", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "-/=/+ published  " in text and "1/2/1" in text and "-/=/+ exact" in text and "1/1/2" in text
    assert text.index("published  ") < text.index("exact  ")
    code = main(["-q", "gains", str(WIDE), "--method", "m1", "--convention", "exact"])
    text = capsys.readouterr().out
    assert code == 0 and text.index("-/=/+ exact") < text.index("-/=/+ published")
    assert (out / "figures" / "gains_heatmap.png").is_file()
    # an existing output directory is refused without --force, in one line
    code = main(["-q", "gains", str(WIDE), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("layerscope: error:") and err.count("\n") == 1


@pytest.mark.parametrize("argv, needle", [
    (["gains", "nonexistent.csv"], "no such results file"),
    (["gains", str(WIDE), "--baseline", "nope"], "baseline method 'nope'"),
    (["gains", str(WIDE), "--metric", "f1"], "no scores for metric 'f1'"),
    (["gains", str(WIDE), "--scale", "big"], "--scale"),
])
def test_cli_errors_exit_2_in_one_line(argv, needle, capsys):
    code = main(["-q", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("layerscope: error:") and err.count("\n") == 1 and needle in err


@pytest.mark.shared_data
def test_real_alignfreeze_results(shared_data):
    directory = shared_data / "alignfreeze_results"
    udpos = directory / "bert-base-multilingual-cased__opus100__udpos.csv"
    info = wide_metrics(pd.read_csv(udpos))
    assert list(info) == ["accuracy"] and len(info["accuracy"]) == 34
    result = compute_gains(udpos, methods="freeze_realign_unfreeze_dico")
    counts = result.counts.iloc[0]
    assert counts["n_languages"] == 34
    assert counts["below"] + counts["within"] + counts["above"] == 34
    assert (result.table["n_seeds"] == 5).all()
    # xquad has only eval_ columns, two metrics: f1 is chosen
    xquad = read_results(directory / "bert-base-multilingual-cased__opus100__xquad.csv")
    assert xquad.attrs["metric"] == "f1" and xquad["lang"].nunique() == 11


def test_public_api_names():
    import layerscope

    result = layerscope.gains(WIDE, methods="m1")  # the package-level name calls compute_gains
    assert result.counts.iloc[0][["below", "within", "above"]].tolist() == [1, 2, 1]  # published convention
    assert layerscope.regress.__module__ == "layerscope.regression"
    assert layerscope.distances.__module__ == "layerscope.stats.typology"


def test_shorten_labels_cuts_shared_affixes_at_delimiters():
    from layerscope.stats.gains import shorten_labels

    assert shorten_labels(["freeze_realign_unfreeze_dico", "freeze_realign_unfreeze_awesome"]) == {
        "freeze_realign_unfreeze_dico": "dico", "freeze_realign_unfreeze_awesome": "awesome"}
    assert shorten_labels(["bert-base-multilingual-cased", "distilbert-base-multilingual-cased"]) == {
        "bert-base-multilingual-cased": "bert", "distilbert-base-multilingual-cased": "distilbert"}
    assert shorten_labels(["m_dico", "m_last_dico"]) == {"m_dico": "m_dico", "m_last_dico": "m_last_dico"}
    assert shorten_labels(["only"]) == {"only": "only"}


def test_tidy_file_with_several_metrics_picks_one(tmp_path):
    """NER and QA write several metrics per language; f1 is preferred, --metric chooses."""
    import pandas as pd

    from layerscope.stats.gains import read_results

    rows = []
    for seed in (1, 2):
        for method, base in (("baseline", 0.5), ("m", 0.6)):
            for metric, shift in (("precision", 0.1), ("f1", 0.0), ("accuracy", 0.3)):
                rows.append({"seed": seed, "method": method, "lang": "fr", "metric": metric, "score": base + shift})
    path = tmp_path / "ner.tidy.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    chosen = read_results(path)
    assert chosen.attrs["metric"] == "f1" and len(chosen) == 4
    assert sorted(chosen["score"].round(6).unique()) == [0.5, 0.6]
    accuracy = read_results(path, metric="accuracy")
    assert sorted(accuracy["score"].round(6).unique()) == [0.8, 0.9]
    with pytest.raises(LayerscopeError, match="available are accuracy, f1, precision"):
        read_results(path, metric="em")


def _notebook_counts(path: Path) -> dict[str, tuple[int, int, int]]:
    """The published notebook's rule, written independently: per method and language the mean and
    population std over seeds of the scores in points, both rounded to 0.1 with pandas, then
    ``mean > base_mean + base_std`` (above) / ``mean < base_mean - base_std`` (below) in floats."""
    frame = pd.read_csv(path)
    prefix = "final_eval_" if any(c.startswith("final_eval_") for c in frame.columns) else "eval_"
    metric = "f1" if any(c.endswith("_f1") for c in frame.columns if c.startswith(prefix)) else "accuracy"
    columns = [c for c in frame.columns if c.startswith(prefix) and c.endswith("_" + metric)
               and c[len(prefix):-len(metric) - 1] not in ("avg", "same")]
    long = frame.melt(id_vars=["method", "seed"], value_vars=columns, var_name="lang", value_name="score")
    long["score"] = long["score"] * 100
    stats = long.groupby(["method", "lang"])["score"].agg(
        mean="mean", std=lambda v: float(np.sqrt(np.mean((v - v.mean()) ** 2)))).round(1)
    base = stats.loc["baseline"]
    out = {}
    for method in stats.index.get_level_values(0).unique():
        if method == "baseline":
            continue
        below = within = above = 0
        for lang, row in stats.loc[method].iterrows():
            edge_high = float(base.loc[lang, "mean"]) + float(base.loc[lang, "std"])
            edge_low = float(base.loc[lang, "mean"]) - float(base.loc[lang, "std"])
            if float(row["mean"]) > edge_high:
                above += 1
            elif float(row["mean"]) < edge_low:
                below += 1
            else:
                within += 1
        out[method] = (below, within, above)
    return out


@pytest.mark.shared_data
def test_default_counts_follow_the_published_rule_on_every_results_file(shared_data):
    files = sorted((shared_data / "alignfreeze_results").glob("*.csv"))
    assert len(files) == 8
    differ_from_exact = 0
    for path in files:
        expected = _notebook_counts(path)
        counts = compute_gains(path).counts.set_index("method")
        assert set(counts.index) == set(expected)
        for method, triple in expected.items():
            row = counts.loc[method]
            assert (row["below"], row["within"], row["above"]) == triple, (path.name, method)
            differ_from_exact += (row["below_exact"], row["within_exact"], row["above_exact"]) != triple
    assert differ_from_exact > 0  # the two conventions do differ on the published results
