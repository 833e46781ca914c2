"""The compare job end to end: files, provenance, determinism, errors, real data."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from layerscope.cli import main
from layerscope.compare import compare
from layerscope.errors import LayerscopeError

from conftest import REPO_ROOT, synthetic_parallel


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "LAYERSCOPE_QUIET": "1"}
    return subprocess.run([sys.executable, "-m", "layerscope", *args], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=600)


@pytest.fixture(scope="module")
def cli_run(tiny_checkpoints, synthetic_tsv, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    result = run_cli("compare", str(tiny_checkpoints["base"]), str(tiny_checkpoints["perturbed"]),
                     "--corpus", f"tsv:{synthetic_tsv}", "-o", str(out), "--no-regression")
    assert result.returncode == 0, result.stderr
    return out, result


def test_cli_writes_every_promised_file(cli_run):
    out, result = cli_run
    for name in ("metrics.csv", "run.json", "summary.txt"):
        assert (out / name).is_file(), name
    for metric in ("cka", "retrieval", "retrieval_centered", "cka_linear"):
        for suffix in (".png", ".svg"):
            assert (out / "figures" / f"heatmap_{metric}{suffix}").stat().st_size > 1000
    assert (out / "figures" / "layer_curves.png").is_file() and (out / "figures" / "drift.png").is_file()
    assert "Where realignment changed" in result.stdout
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "staging left behind"


def test_metrics_table_is_tidy_and_consistent(cli_run):
    out, _ = cli_run
    table = pd.read_csv(out / "metrics.csv")
    assert list(table.columns) == ["model", "metric", "layer", "lang", "value", "ci_low", "ci_high"]
    assert set(table["model"]) == {"base", "realigned", "delta", "drift"}
    assert set(table[table["model"] == "base"]["lang"]) == {"fr", "de", "ja"}
    assert sorted(table["layer"].unique()) == [0, 1, 2, 3, 4]
    base = table[table["model"] == "base"].set_index(["metric", "layer", "lang"])["value"]
    real = table[table["model"] == "realigned"].set_index(["metric", "layer", "lang"])["value"]
    delta = table[table["model"] == "delta"].set_index(["metric", "layer", "lang"])["value"]
    pd.testing.assert_series_equal((real - base).sort_index(), delta.sort_index(), check_names=False, atol=1e-7)
    # blocks 0-1 were not perturbed: layers 0-2 identical in both models, changes only from layer 3
    unchanged = delta[delta.index.get_level_values("layer") <= 2]
    assert unchanged.abs().max() < 1e-6
    drift = table[(table["metric"] == "drift_cka")]
    assert set(drift["lang"]) == {"en", "fr", "de", "ja"}
    assert (drift[drift["layer"] <= 2]["value"] > 1 - 1e-6).all()
    assert (drift[drift["layer"] == 4]["value"] < 1 - 1e-4).all()
    change = table[table["metric"] == "weight_change"].set_index("layer")["value"]
    assert change[0] == 0 and change[1] == 0 and change[2] == 0 and change[3] > 0 and change[4] > 0
    measured = table[table["model"].isin(["base", "realigned"])]
    retrieval = measured[measured["metric"].str.startswith("retrieval")]["value"]
    assert retrieval.between(0, 1).all()
    for model in ("base", "delta"):  # delta: the paired bootstrap interval
        ci = table[(table["metric"] == "retrieval") & (table["model"] == model)]
        assert ci["ci_low"].notna().all()
        assert (ci["ci_low"] <= ci["value"] + 1e-12).all() and (ci["value"] <= ci["ci_high"] + 1e-12).all()
    sizes = json.loads((out / "run.json").read_text())["sentences"]
    chance = table[(table["metric"] == "retrieval_chance") & table["model"].isin(["base", "realigned"])]
    assert len(chance) and all(row.value == pytest.approx(1 / sizes[row.lang], rel=1e-5) for row in chance.itertuples())


def test_run_json_provenance(cli_run, tiny_checkpoints):
    out, _ = cli_run
    run = json.loads((out / "run.json").read_text())
    assert run["command"][:2] == ["layerscope", "compare"]
    assert run["pivot"] == "en" and run["languages"] == ["fr", "de", "ja"]
    assert len(run["corpus"]["hash"]) == 16
    assert run["checkpoints"]["base"]["content_hash"] != run["checkpoints"]["realigned"]["content_hash"]
    assert run["versions"]["torch"] and run["seed"] == 0 and run["timings_s"]["total"] > 0
    assert run["config"]["pool"] == "mean" and run["config"]["shuffles"] == 5
    # auto is fp32 on the CPU in tests, subprocesses included (LAYERSCOPE_CPU_BF16=0, conftest.py)
    assert run["config"]["precision"] == "auto" and run["config"]["precision_used"] == "fp32"


def test_same_seed_gives_bit_identical_metrics(cli_run, tiny_checkpoints, synthetic_tsv, tmp_path):
    out, _ = cli_run
    again = run_cli("compare", str(tiny_checkpoints["base"]), str(tiny_checkpoints["perturbed"]),
                    "--corpus", f"tsv:{synthetic_tsv}", "-o", str(tmp_path / "again"), "--no-regression",
                    "--no-figures")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again" / "metrics.csv").read_bytes() == (out / "metrics.csv").read_bytes()


def test_existing_directory_refused_without_force(cli_run, tiny_checkpoints, synthetic_tsv):
    out, _ = cli_run
    before = (out / "metrics.csv").read_bytes()
    result = run_cli("compare", str(tiny_checkpoints["base"]), str(tiny_checkpoints["perturbed"]),
                     "--corpus", f"tsv:{synthetic_tsv}", "-o", str(out))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--force" in result.stderr
    assert (out / "metrics.csv").read_bytes() == before


@pytest.mark.parametrize(
    "make_args, fragment",
    [
        (lambda c, t, d: [str(d / "missing.pt"), str(c["base"])], "no such file"),
        (lambda c, t, d: [str(c["base"]), str(c["other"])], "architecture"),
        (lambda c, t, d: [str(c["base"]), str(c["perturbed"]), "--langs", "xx"], "unknown language code"),
        (lambda c, t, d: [str(c["base"]), str(c["perturbed"]), "--langs", "ko"], "no sentences for language"),
        (lambda c, t, d: [str(c["base"]), str(c["perturbed"]), "--limit", "3"], "at least"),
        (lambda c, t, d: [str(c["base"]), str(c["perturbed"]), "--metrics", "ckaa"], "did you mean cka"),
    ],
)
def test_bad_input_exit_2_one_line_no_directory(make_args, fragment, tiny_checkpoints, synthetic_tsv, tmp_path):
    out = tmp_path / "run"
    args = make_args(tiny_checkpoints, synthetic_tsv, tmp_path)
    code = main(["--quiet", "compare", *args, "--corpus", f"tsv:{synthetic_tsv}", "-o", str(out)])
    assert code == 2
    assert not out.exists() and not list(tmp_path.glob(".run*"))


def test_error_message_format(tiny_checkpoints, tmp_path, capsys):
    bad = tmp_path / "empty.pt"
    bad.write_bytes(b"")
    assert main(["--quiet", "compare", str(bad), str(tiny_checkpoints["base"]), "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("layerscope: error:") and str(bad) in err and "\n" not in err


def test_unequal_corpus_counts(tiny_checkpoints, tmp_path):
    columns = synthetic_parallel(12)
    directory = tmp_path / "flores"
    directory.mkdir()
    for lang, code in (("en", "eng_Latn"), ("fr", "fra_Latn")):
        sentences = columns[lang][:-1] if lang == "fr" else columns[lang]
        (directory / f"{code}.devtest").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    with pytest.raises(LayerscopeError, match="fra_Latn.devtest: has 11 sentences"):
        compare(tiny_checkpoints["base"], tiny_checkpoints["perturbed"], corpus=f"flores:{directory}",
                output_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_python_api_returns_the_tables(tiny_checkpoints, synthetic_tsv):
    import layerscope

    result = layerscope.compare(tiny_checkpoints["base"], tiny_checkpoints["perturbed"], corpus=f"tsv:{synthetic_tsv}",
                                regression=False)
    assert result.output_dir is None and {"base", "delta"} <= set(result.metrics["model"])
    assert result.run["languages"] == ["fr", "de", "ja"]


@pytest.mark.shared_data
def test_flores_compare_on_demo_model(shared_data, tmp_path):
    """The demo's base model against a realigned copy on real FLORES sentences, 10+ languages."""
    from layerscope.demo import DemoSettings, build_base
    from layerscope.models import checkpoint_from_encoder
    from layerscope.models import save_checkpoint
    import torch

    base = build_base(DemoSettings(pretrain_steps=20, width=32, vocab_size=2000))
    save_checkpoint(tmp_path / "base.pt", checkpoint_from_encoder(base))
    with torch.no_grad():
        for name, param in base.model.named_parameters():
            if name.startswith("encoder.layer.3."):
                param.mul_(1.05)
    save_checkpoint(tmp_path / "changed.pt", checkpoint_from_encoder(base))
    langs = "fr,de,es,ru,fi,tr,ar,hi,zh,ja,ko"
    result = compare(tmp_path / "base.pt", tmp_path / "changed.pt", corpus=f"flores:{shared_data / 'flores200' / 'devtest'}",
                     langs=langs, limit=120, output_dir=tmp_path / "run", device="cpu")
    table = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert table[table["model"] == "base"]["lang"].nunique() == 11
    delta = table[(table["model"] == "delta") & (table["metric"] == "cka")]
    assert delta[delta["layer"] < 4]["value"].abs().max() < 1e-6 < delta[delta["layer"] == 4]["value"].abs().max()
    assert result.run["sentences"]["ja"] == 120
