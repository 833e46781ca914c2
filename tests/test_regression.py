"""Tests for layerscope.regression and `layerscope regress`.

Synthetic gains with a known generating model: coefficients recovered within their CIs, the
permutation p-value small for a real effect and not for noise. Every statistic agrees with a
direct statsmodels / scipy call on the same data. Run-directory inputs, targets, outputs and
CLI error paths.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from scipy.stats import spearmanr
from statsmodels.stats.multitest import multipletests

from layerscope.cli import main
from layerscope.errors import LayerscopeError
from layerscope.regression import regress, regress_run_metrics
from layerscope.stats import fitting, typology
from layerscope.stats import targets as regression  # the module of Target
from layerscope.stats.fitting import MixedRegression, OLSRegression
from layerscope.stats.regression import MIN_LANGUAGES, fit_gain_regression
from layerscope.stats.resampling import permutation_indices
from layerscope.stats.targets import gains_from_metrics, parse_target

# languages with syntactic, genetic and geographic data in lang2vec 1.1.2
RUN_LANGS = ["fr", "de", "es", "it", "ru", "pl", "ja", "zh", "ar", "he", "hi", "fi", "hu", "tr", "ko", "vi", "th", "el"]


def synthetic(n=40, *, beta=(1.0, 2.0, 0.0), noise=0.5, seed=0) -> pd.DataFrame:
    """gain = b0 + b1·x1 + b2·x2 + N(0, noise²) over n fake languages."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(0, 1.5, n), rng.normal(3, 0.5, n)
    gain = beta[0] + beta[1] * x1 + beta[2] * x2 + rng.normal(0, noise, n)
    return pd.DataFrame({"lang": [f"l{i:02d}" for i in range(n)], "gain": gain, "x1": x1, "x2": x2})


def fit(data, formula="gain ~ x1 + x2", n_permutations=499, n_bootstrap=400, seed=0):
    return fit_gain_regression(data, formula=formula, n_permutations=n_permutations, n_bootstrap=n_bootstrap,
                               seed=seed)


def standardized(data, columns):
    out = data.copy()
    for c in columns:
        out[c] = (data[c] - data[c].mean()) / data[c].std(ddof=1)
    return out


# --- known generating model ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coefficients_recovered_within_cis(seed):
    data = synthetic(seed=seed)
    result = fit(data, seed=seed)
    coef = result.coefficients.set_index("term")
    # on the standardized scale the true coefficient is beta · sd(x) of this sample
    truth = {"x1": 2.0 * data["x1"].std(ddof=1), "x2": 0.0}
    for term, value in truth.items():
        assert coef.loc[term, "ci_low"] <= value <= coef.loc[term, "ci_high"], (term, coef.loc[term])
        assert coef.loc[term, "boot_ci_low"] <= value <= coef.loc[term, "boot_ci_high"], (term, coef.loc[term])
    assert coef.loc["x1", "p_perm"] < 0.01 and coef.loc["x1", "p_hc3"] < 0.001
    assert result.fit["p_perm_r2"] < 0.01
    assert result.fit["lolo_r2"] > 0.8


def test_permutation_p_value_not_small_for_noise():
    data = synthetic(beta=(0.0, 0.0, 0.0), seed=5)
    result = fit(data, seed=5)
    assert result.fit["p_perm_r2"] > 0.2
    assert (result.coefficients.set_index("term").loc[["x1", "x2"], "p_perm"] > 0.05).all()
    assert result.fit["lolo_r2"] < 0.1  # no better than the mean predictor out of sample


def test_p_values_are_valid_under_the_null():
    # over many noise data sets the permutation p-value is roughly uniform: few below 0.05
    ps = [fit(synthetic(n=15, beta=(0, 0, 0), seed=s), n_permutations=99, n_bootstrap=0).fit["p_perm_r2"]
          for s in range(30)]
    assert np.mean(np.array(ps) < 0.05) <= 0.15
    assert min(ps) >= 1 / 100


# --- agreement with statsmodels / scipy -------------------------------------------------------


def test_ols_matches_statsmodels_hc3():
    data = synthetic(seed=3)
    result = fit(data, n_permutations=0, n_bootstrap=0)
    reference = smf.ols("gain ~ x1 + x2", data=standardized(data, ["x1", "x2"])).fit(cov_type="HC3")
    coef = result.coefficients.set_index("term")
    np.testing.assert_allclose(coef["coef"], reference.params[coef.index], rtol=1e-10)
    np.testing.assert_allclose(coef["se_hc3"], reference.bse[coef.index], rtol=1e-10)
    np.testing.assert_allclose(coef[["ci_low", "ci_high"]], reference.conf_int().loc[coef.index], rtol=1e-10)
    np.testing.assert_allclose(coef["p_hc3"], reference.pvalues[coef.index], rtol=1e-8)
    assert result.fit["r2"] == pytest.approx(reference.rsquared)


def test_vectorised_hc3_kernel_matches_statsmodels():
    data = synthetic(seed=4)
    X = sm.add_constant(data[["x1", "x2"]].to_numpy())
    y = data["gain"].to_numpy()
    B, se, r2 = fitting._ols_hc3(X, np.column_stack([y, y[::-1]]))
    for j, target in enumerate([y, y[::-1]]):
        reference = sm.OLS(target, X).fit(cov_type="HC3")
        np.testing.assert_allclose(B[:, j], reference.params, rtol=1e-10)
        np.testing.assert_allclose(se[:, j], reference.bse, rtol=1e-10)
        assert r2[j] == pytest.approx(reference.rsquared)


def test_vif_matches_auxiliary_regressions():
    rng = np.random.default_rng(101)
    data = synthetic(seed=1)
    data["x3"] = data["x1"] * 0.8 + rng.normal(0, 0.5, len(data))  # collinear with x1
    result = fit(data, formula="gain ~ x1 + x2 + x3", n_permutations=0, n_bootstrap=0)
    vif = result.coefficients.set_index("term")["vif"]
    for name in ("x1", "x2", "x3"):
        others = [c for c in ("x1", "x2", "x3") if c != name]
        r2 = sm.OLS(data[name], sm.add_constant(data[others])).fit().rsquared
        assert vif[name] == pytest.approx(1 / (1 - r2), rel=1e-8)
    assert vif["x1"] > 2 and vif["x2"] < 1.2


def test_lolo_r2_matches_explicit_loop():
    data = synthetic(n=20, seed=7)
    result = fit(data, n_permutations=0, n_bootstrap=0)
    z = standardized(data, ["x1", "x2"])
    sse = sse0 = 0.0
    for i in range(len(z)):
        train, test = z.drop(index=i), z.iloc[[i]]
        model = smf.ols("gain ~ x1 + x2", data=train).fit()
        sse += float((test["gain"] - model.predict(test)).iloc[0] ** 2)
        sse0 += float((test["gain"].iloc[0] - train["gain"].mean()) ** 2)
    assert result.fit["lolo_r2"] == pytest.approx(1 - sse / sse0, rel=1e-10)


def test_spearman_holm_matches_scipy():
    data = synthetic(seed=8)
    result = fit(data, n_permutations=0, n_bootstrap=0)
    table = result.spearman.set_index("predictor")
    ps = []
    for name in ("x1", "x2"):
        ref = spearmanr(data[name], data["gain"])
        assert table.loc[name, "rho"] == pytest.approx(ref.statistic)
        assert table.loc[name, "p"] == pytest.approx(ref.pvalue)
        ps.append(ref.pvalue)
    np.testing.assert_allclose(table.loc[["x1", "x2"], "p_holm"], multipletests(ps, method="holm")[1])


def test_mixed_model_for_several_rows_per_language():
    rng = np.random.default_rng(2)
    base = synthetic(n=30, seed=2)
    offset = rng.normal(0, 1.0, len(base))  # language random intercepts
    rows = []
    for block, shift in (("A", 0.0), ("B", 1.5)):
        part = base.assign(group=block, gain=base["gain"] + shift + offset + rng.normal(0, 0.3, len(base)))
        rows.append(part)
    data = pd.concat(rows, ignore_index=True)
    result = fit(data, formula="gain ~ x1 + x2 + C(group)", n_permutations=199, n_bootstrap=100)
    assert result.mixed is not None and result.mixed_info["language_variance"] > 0.3
    reference = smf.mixedlm("gain ~ x1 + x2 + C(group)", standardized(data, ["x1", "x2"]),
                            groups=data["lang"]).fit(reml=True)
    mixed = result.mixed.set_index("term")
    np.testing.assert_allclose(mixed["coef"], reference.fe_params[mixed.index], rtol=1e-5)
    np.testing.assert_allclose(mixed["se"], reference.bse_fe[mixed.index], rtol=1e-4)
    assert any("not independent" in w for w in result.warnings)
    # the group term is not tested by permuting across languages
    assert math.isnan(result.coefficients.set_index("term").loc["C(group)[T.B]", "p_perm"])


def test_estimators_follow_the_contract():
    data = synthetic(seed=9)
    X = sm.add_constant(data[["x1", "x2"]].to_numpy())
    model = OLSRegression(cov_type="HC3")
    assert model.cov_type == "HC3" and not hasattr(model, "coef_")  # __init__ only stores parameters
    assert model.fit(X, data["gain"].to_numpy()) is model
    assert model.coef_.shape == (3,) and model.conf_int_.shape == (3, 2)
    np.testing.assert_allclose(model.predict(X), X @ model.coef_)
    mixed = MixedRegression()
    groups = np.repeat(np.arange(20), 2)
    assert mixed.fit(X, data["gain"].to_numpy(), groups) is mixed and hasattr(mixed, "group_var_")
    with pytest.raises(ValueError, match=r"\(40, 3\) and \(39,\)"):
        OLSRegression().fit(X, data["gain"].to_numpy()[:-1])


# --- permutation scheme -------------------------------------------------------------------------


def test_balanced_blocks_get_one_permutation_of_languages():
    langs = np.array(["a", "b", "c", "d"] * 2)
    blocks = np.array(["x"] * 4 + ["y"] * 4)
    index = permutation_indices(langs, blocks, 20, np.random.default_rng(0))
    for row in index:
        assert sorted(row[:4]) == [0, 1, 2, 3] and sorted(row[4:]) == [4, 5, 6, 7]  # within blocks
        assert list(row[4:] - 4) == list(row[:4])  # the same relabelling of languages in both blocks


def test_unbalanced_blocks_permute_within_blocks():
    langs = np.array(["a", "b", "c", "a", "b"])
    blocks = np.array(["x", "x", "x", "y", "y"])
    for row in permutation_indices(langs, blocks, 20, np.random.default_rng(0)):
        assert sorted(row[:3]) == [0, 1, 2] and sorted(row[3:]) == [3, 4]


# --- targets, run directories -----------------------------------------------------------------


def test_parse_target():
    assert parse_target("retrieval@last") == regression.Target("retrieval", "last")
    assert parse_target("cka@6") == regression.Target("cka", 6)
    assert parse_target("retrieval_centered@MEAN").layer == "mean"
    for bad in ("retrieval", "retrieval@", "@3", "cka@top"):
        with pytest.raises(LayerscopeError, match="METRIC@LAYER|LAYER must be"):
            parse_target(bad)


def fake_metrics(langs=RUN_LANGS, layers=4, slope=1.0, noise=0.01, seed=0, pivot="en") -> pd.DataFrame:
    """A compare-style tidy table whose retrieval gain at the last layer grows with syntactic distance."""
    rng = np.random.default_rng(seed)
    syn = typology.distances(pivot, langs, ["syntactic"])["syntactic"].fillna(0.5)
    rows = []
    for lang in langs:
        for layer in range(layers + 1):
            base = 0.3 + 0.05 * layer
            gain = (slope * (syn[lang] - 0.5) + 0.1) * layer / layers + rng.normal(0, noise)
            for model, value in (("base", base), ("realigned", base + gain), ("delta", gain)):
                for metric in ("retrieval", "cka"):
                    rows.append((model, metric, layer, lang, value, math.nan, math.nan))
    rows.append(("base", "retrieval", layers, pivot, 1.0, math.nan, math.nan))  # the pivot, left out
    return pd.DataFrame(rows, columns=["model", "metric", "layer", "lang", "value", "ci_low", "ci_high"])


def test_gains_from_metrics_layers():
    metrics = fake_metrics(layers=2)
    last = gains_from_metrics(metrics, pivot="en", target="retrieval@last").set_index("lang")
    two = gains_from_metrics(metrics, pivot="en", target="retrieval@2").set_index("lang")
    mean = gains_from_metrics(metrics, pivot="en", target="retrieval@mean").set_index("lang")
    assert "en" not in last.index and len(last) == len(RUN_LANGS)
    pd.testing.assert_series_equal(last["gain"], two["gain"])
    delta = metrics[(metrics["model"] == "delta") & (metrics["metric"] == "retrieval")]
    expected = delta.groupby("lang")["value"].mean()
    np.testing.assert_allclose(mean["gain"], expected[mean.index], atol=1e-12)
    assert last.loc["fr", "baseline"] == pytest.approx(0.4)
    with pytest.raises(LayerscopeError, match="layer 9 not in the run"):
        gains_from_metrics(metrics, pivot="en", target="retrieval@9")
    with pytest.raises(LayerscopeError, match="metric 'retrival'.*did you mean retrieval"):
        gains_from_metrics(metrics, pivot="en", target="retrival@last")


def test_regress_run_metrics_finds_the_effect_and_writes(tmp_path):
    result = regress_run_metrics(fake_metrics(), pivot="en", target="retrieval@last", features=("syntactic",),
                                 n_permutations=199, n_bootstrap=200)
    coef = result.coefficients.set_index("term")
    assert coef.loc["syntactic", "coef"] > 0 and coef.loc["syntactic", "p_perm"] < 0.01
    assert result.fit["n_languages"] == len(RUN_LANGS)
    assert "retrieval at the last layer" in result.summary_text()
    written = {p.name for p in result.write(tmp_path / "regression")}
    assert {"summary.txt", "coefficients.csv", "data.csv", "gain_vs_predictors.png", "gain_vs_predictors.svg",
            "coefficients.png", "coefficients.svg", "predictor_correlations.png",
            "predictor_correlations.svg"} <= written
    data = pd.read_csv(tmp_path / "regression" / "data.csv")
    assert set(data.columns) >= {"lang", "gain", "syntactic"} and len(data) == len(RUN_LANGS)


def test_missing_typology_is_excluded_and_reported():
    langs = [*RUN_LANGS[:10], "sk"]  # Slovak has no syntactic features in lang2vec 1.1.2
    result = regress_run_metrics(fake_metrics(langs), pivot="en", n_permutations=50, n_bootstrap=50)
    assert "sk" in result.excluded and "syntactic" in result.excluded["sk"]
    assert "sk" not in set(result.data["lang"])
    assert "excluded: sk" in result.summary_text()


def test_code_table_and_uriel_fill_in_the_regression(tmp_path):
    langs = [*RUN_LANGS[:7], *RUN_LANGS[9:12], "ar", "zh", "sk"]
    default = regress_run_metrics(fake_metrics(langs), pivot="en", n_permutations=20, n_bootstrap=20)
    codes = default.data.drop_duplicates("lang").set_index("lang")["uriel_code"]
    assert codes["ar"] == "ara" and codes["zh"] == "zho" and codes["fr"] == "fra"
    assert "ar=ara" in default.summary_text() and "excluded: sk" in default.summary_text()
    published = regress_run_metrics(fake_metrics(langs), pivot="en", codes="published", missing_as="uriel",
                                    n_permutations=20, n_bootstrap=20)
    codes = published.data.drop_duplicates("lang").set_index("lang")["uriel_code"]
    assert codes["ar"] == "arb" and codes["zh"] == "cmn"
    # with URIEL's fill Slovak is at the constant distance of an unknown language, not dropped
    assert "sk" not in published.excluded and "sk" in set(published.data["lang"])
    syntactic = published.data.drop_duplicates("lang").set_index("lang")["syntactic"]
    assert syntactic["ar"] == pytest.approx(typology.distance("en", "arb", "syntactic"))
    assert syntactic["sk"] == pytest.approx(typology.distance("en", "sk", "syntactic", missing_as="uriel"))
    published.write(tmp_path / "regression", figures=False)
    assert "uriel_code" in pd.read_csv(tmp_path / "regression" / "data.csv").columns
    settings = json.loads((tmp_path / "regression" / "settings.json").read_text())
    assert settings["codes"] == "published" and settings["missing_as"] == "uriel"


def test_too_few_languages_and_few_per_predictor():
    with pytest.raises(LayerscopeError, match=f"at least {MIN_LANGUAGES}"):
        regress_run_metrics(fake_metrics(RUN_LANGS[:5]), pivot="en", n_permutations=10, n_bootstrap=10)
    result = regress_run_metrics(fake_metrics(RUN_LANGS[:10]), pivot="en", n_permutations=20, n_bootstrap=20)
    assert any("fewer than 5" in w for w in result.warnings)
    assert "warning: only 10 languages for 3 predictors" in result.summary_text()


def test_formula_with_baseline_and_errors():
    metrics = fake_metrics()
    metrics.loc[metrics["model"] == "base", "value"] += np.random.default_rng(0).normal(0, 0.01, (metrics["model"] == "base").sum())
    result = regress_run_metrics(metrics, pivot="en", formula="gain ~ syntactic + baseline",
                                 n_permutations=20, n_bootstrap=20)
    assert list(result.coefficients["term"]) == ["Intercept", "syntactic", "baseline"]
    with pytest.raises(LayerscopeError, match="constant"):
        regress_run_metrics(fake_metrics(), pivot="en", formula="gain ~ syntactic + baseline",
                            n_permutations=0, n_bootstrap=0)
    with pytest.raises(LayerscopeError, match="not 'gain ~"):
        regress_run_metrics(metrics, pivot="en", formula="syntactic", n_permutations=0, n_bootstrap=0)


def write_run(directory, metrics, pivot="en"):
    directory.mkdir()
    metrics.to_csv(directory / "metrics.csv", index=False)
    (directory / "run.json").write_text(json.dumps({"pivot": pivot, "languages": RUN_LANGS}))
    return directory


def test_regress_api_on_run_directory_and_gains_table(tmp_path):
    run = write_run(tmp_path / "run", fake_metrics())
    result = regress(run, target="cka@last", features="syntactic,geographic", n_permutations=20, n_bootstrap=20)
    assert result.pivot == "en" and "cka at the last layer" in result.target
    gains = pd.DataFrame({"model": "m", "task": "pos", "method": "x", "lang": RUN_LANGS,
                          "delta": np.linspace(0, 1, len(RUN_LANGS)), "baseline_mean": 50.0})
    result = regress(gains, features=["genetic"], n_permutations=20, n_bootstrap=20)
    assert result.fit["n_rows"] == len(RUN_LANGS) and result.mixed is None


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_regress_run_directory_writes_regression_folder(tmp_path, capsys):
    run = write_run(tmp_path / "run", fake_metrics())
    code = main(["-q", "regress", str(run), "--target", "retrieval@last", "--permutations", "50",
                 "--bootstrap", "50", "--no-figures"])
    out = capsys.readouterr().out
    assert code == 0 and "OLS, HC3 errors" in out
    assert (run / "regression" / "coefficients.csv").is_file() and (run / "regression" / "summary.txt").is_file()
    code = main(["-q", "regress", str(run), "--permutations", "5", "--bootstrap", "5"])
    err = capsys.readouterr().err
    assert code == 2 and "--force" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, needle", [
    (["regress", "does/not/exist"], "no such file or directory"),
    (["regress", "RUN", "--target", "retrieval@top"], "LAYER must be"),
    (["regress", "RUN", "--target", "bleu@last"], "metric 'bleu' not in the run"),
    (["regress", "RUN", "--features", "syntax"], "did you mean syntactic"),
    (["regress", "RUN", "--formula", "gain ~ nonexistent"], "cannot use formula"),
])
def test_cli_errors_exit_2_in_one_line(argv, needle, tmp_path, capsys):
    run = write_run(tmp_path / "run", fake_metrics(RUN_LANGS[:9]))
    argv = [str(run) if a == "RUN" else a for a in argv]
    code = main(["-q", *argv, "--permutations", "5", "--bootstrap", "5"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("layerscope: error:") and err.count("\n") == 1 and needle in err


@pytest.mark.shared_data
def test_real_task_results_two_models(shared_data, tmp_path):
    directory = shared_data / "alignfreeze_results"
    files = [str(directory / "bert-base-multilingual-cased__opus100__udpos.csv"),
             str(directory / "distilbert-base-multilingual-cased__opus100__udpos.csv")]
    result = regress(files, methods="freeze_realign_unfreeze_dico", n_permutations=99, n_bootstrap=99)
    assert result.fit["n_languages"] == 33 and result.fit["n_rows"] == 66  # sk lacks syntactic features
    assert "sk" in result.excluded and result.mixed is not None
    assert "C(group)" in result.formula


def test_covariates_join_by_language(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "cov.csv"
    pd.DataFrame({"lang": RUN_LANGS, "log_tokens": rng.normal(20, 1, len(RUN_LANGS))}).to_csv(path, index=False)
    run = write_run(tmp_path / "run", fake_metrics())
    result = regress(run, formula="gain ~ syntactic + log_tokens", covariates=path, n_permutations=20,
                     n_bootstrap=20)
    assert list(result.coefficients["term"]) == ["Intercept", "syntactic", "log_tokens"]
    assert "log_tokens" in result.data.columns
    with pytest.raises(LayerscopeError, match="task gains are always"):
        regress(pd.DataFrame({"lang": RUN_LANGS, "method": "m", "delta": 1.0, "baseline_mean": 2.0}),
                target="retrieval@last")
