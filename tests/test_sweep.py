"""layerscope sweep: the grid (counts, ids, method names), one-line config errors, skipping of
done runs, the analyses/ configs, and a real sweep of two tiny runs through submitit's local
executor whose gathered table `layerscope gains` reads."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest

from layerscope import cli, sweep as sweep_module
from layerscope.errors import LayerscopeError
from layerscope.sweep import expand, is_done, load_config, method_label, runner

from conftest import TASK_FIXTURES

REPO = Path(__file__).resolve().parent.parent
FIXTURES = TASK_FIXTURES  # the committed fixtures and the PoS files built at test time

GRID = """
[sweep]
output = "out"
seeds = [31, 42, 66]
freeze = ["none", "lower", "upper"]
parallel = "tatoeba:opus"

[models.mbert]
source = "bert-base-multilingual-cased"
name = "bert-base-multilingual-cased"
[models.local]
source = "ckpt/base.pt"

[tasks.pos]
train = "ud/en_ewt-ud-train.conllu"
eval = "ud/pud/"
[tasks.ner]
train = "hf:en"
eval = "hf:fr,de"
realign_steps = 10

[aligners.dico]
pairs = "dict:muse"
[aligners.fastalign]
pairs = "eflomal"
"""


def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the grid (pure)


def test_grid_counts_ids_and_methods(tmp_path):
    config = load_config(write(tmp_path, GRID))
    runs = expand(config)
    assert len(runs) == 2 * 2 * (1 + 3 * 2) * 3  # models × tasks × (baseline + freeze × aligners) × seeds
    assert len({r.run_id for r in runs}) == len(runs)
    assert [r.run_id for r in expand(config)] == [r.run_id for r in runs]  # stable order
    assert runs[0].run_id == "mbert__pos__baseline__seed31"
    assert runs[3].run_id == "mbert__pos__before_dico__seed31"
    assert {r.method for r in runs} == {
        "baseline", "before_dico", "before_fastalign", "freeze_realign_unfreeze_dico",
        "freeze_realign_unfreeze_fastalign", "freeze_realign_unfreeze_last_half_dico",
        "freeze_realign_unfreeze_last_half_fastalign"}
    assert all(Path(r.directory) == tmp_path / "out" / "runs" / r.run_id for r in runs)
    assert "2 models × 2 tasks × (baseline + 1 schedule × 3 freeze × 2 aligners) × 3 seeds" in \
        sweep_module.grid_shape(config)


def test_run_arguments_and_paths(tmp_path):
    runs = {r.run_id: r for r in expand(load_config(write(tmp_path, GRID)))}
    base = runs["local__ner__baseline__seed42"]
    assert base.source == str(tmp_path / "ckpt" / "base.pt")  # relative to the config file
    assert base.finetune["seeds"] == [42] and base.finetune["method"] == "baseline"
    assert not {"realign", "freeze", "pairs", "parallel", "realign_steps"} & set(base.finetune)
    assert base.finetune["model_name"] == "local" and base.finetune["eval"] == ["hf:fr,de"]
    front = runs["mbert__ner__freeze_realign_unfreeze_dico__seed31"]
    assert front.source == "bert-base-multilingual-cased"  # a hub id stays as it is
    assert front.finetune["model_name"] == "bert-base-multilingual-cased"
    assert (front.finetune["realign"], front.finetune["freeze"]) == ("before", "lower")
    assert front.finetune["pairs"] == f"dict:{tmp_path / 'muse'}"
    assert front.finetune["parallel"] == f"tatoeba:{tmp_path / 'opus'}"
    assert front.finetune["realign_steps"] == 10
    pos = runs["mbert__pos__freeze_realign_unfreeze_last_half_fastalign__seed66"]
    assert pos.finetune["pairs"] == "eflomal" and pos.finetune["freeze"] == "upper"
    assert pos.finetune["train"] == [str(tmp_path / "ud" / "en_ewt-ud-train.conllu")]
    assert base.finetune["kernels"] == "auto"  # the training kernels reach finetune


def test_kernels_key_reaches_every_run_and_is_checked(tmp_path):
    with_kernels = GRID.replace("[sweep]\n", '[sweep]\nkernels = "torch"\n', 1)
    assert with_kernels != GRID
    runs = expand(load_config(write(tmp_path, with_kernels)))
    assert {r.finetune["kernels"] for r in runs} == {"torch"}
    with pytest.raises(LayerscopeError, match="kernels"):
        load_config(write(tmp_path, GRID.replace("[sweep]\n", '[sweep]\nkernels = "cuda"\n', 1)))


def test_per_task_aligners(tmp_path):
    config = load_config(write(tmp_path, GRID.replace("realign_steps = 10", 'realign_steps = 10\naligners = ["dico"]')))
    runs = expand(config)
    assert len(runs) == 2 * ((1 + 3 * 2) + (1 + 3 * 1)) * 3
    assert {r.aligner for r in runs if r.task == "ner"} == {None, "dico"}
    assert "(pos: baseline + 1 schedule × 3 freeze × 2 aligners; ner: baseline + 1 schedule × 3 freeze × 1 " \
           "aligner)" in sweep_module.grid_shape(config)
    with pytest.raises(LayerscopeError, match="tasks.ner.aligners: no \\[aligners.dicco\\] table; did you mean 'dico'"):
        load_config(write(tmp_path, GRID.replace("realign_steps = 10", 'aligners = ["dicco"]')))


def test_method_labels():
    assert method_label(None, None, None) == "baseline"
    assert method_label("before", "front", "awesome") == "freeze_realign_unfreeze_awesome"
    assert method_label("before", "back", "dico") == "freeze_realign_unfreeze_last_half_dico"
    assert method_label("during", "lower", "dico") == "during_partial_freeze_front_dico"
    assert method_label("during", "none", "dico") == "during_dico"
    assert method_label("before", "0-2,7", "dico") == "before_freeze_0-2_7_dico"
    assert method_label("before", "lower+embeddings", "dico") == "before_freeze_lower_embeddings_dico"


def test_baseline_only_grid(tmp_path):
    config = load_config(write(tmp_path, """
        [sweep]
        seeds = 1
        [models.m]
        source = "m.pt"
        [tasks.nli]
        train = "train.tsv"
        eval = "test.tsv"
    """))
    assert [r.run_id for r in expand(config)] == ["m__nli__baseline__seed1"]
    assert config.output == tmp_path / "runs" / "sweep"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("change, message", [
    ('epoch = 3', "tasks.pos.epoch: unknown key; did you mean 'epochs'?"),
    ('steps = 0', "tasks.pos.steps: must be positive"),
    ('steps = "ten"', "tasks.pos.steps: must be an integer"),
    ('task = "parsing"', "tasks.pos.task: unknown task 'parsing'"),
])
def test_task_errors_name_file_and_key(tmp_path, change, message):
    text = GRID.replace('eval = "ud/pud/"', f'eval = "ud/pud/"\n{change}')
    with pytest.raises(LayerscopeError) as info:
        load_config(write(tmp_path, text))
    assert str(info.value).startswith(f"{tmp_path / 'sweep.toml'}: ") and message in str(info.value)


@pytest.mark.parametrize("old, new, message", [
    ("seeds = [31, 42, 66]", 'seeds = "31"', "sweep.seeds: must be an integer or list of integers"),
    ("seeds = [31, 42, 66]", "seeds = [31, 31]", "sweep.seeds: a seed is listed twice"),
    ('"upper"]', '"uper"]', "sweep.freeze: unknown freeze policy 'uper'"),
    ('"upper"]', '"front"]', "sweep.freeze: 'front' is the same policy as 'lower'"),
    ('pairs = "eflomal"', 'pairs = "fastalign"', "aligners.fastalign.pairs: unknown pair source"),
    ('parallel = "tatoeba:opus"', 'parallel = "opus100:opus"', "aligners.dico.parallel: unknown corpus kind"),
    ('[models.local]', '[models.my_model]', "models.my_model: names may hold letters, digits"),
    ('[sweep]', '[sweep]\nexecutor = "slurm"', "sweep.executor: unknown key"),
    ('[sweep]', '[executor]\nkind = "pbs"\n[sweep]', "executor.kind: must be one of local, slurm, debug"),
    ('[sweep]', '[executor.slurm]\npartitoin = "gpu"\n[sweep]',
     "executor.slurm.partitoin: unknown key; did you mean 'partition'?"),
    ('source = "ckpt/base.pt"', '', "models.local.source: missing (a string is required)"),
])
def test_config_errors_name_file_and_key(tmp_path, old, new, message):
    assert old in GRID
    with pytest.raises(LayerscopeError) as info:
        load_config(write(tmp_path, GRID.replace(old, new, 1)))
    assert str(info.value).startswith(f"{tmp_path / 'sweep.toml'}: ") and message in str(info.value)


def test_file_errors_and_cli_exit_code(tmp_path, capsys):
    with pytest.raises(LayerscopeError, match="no such sweep configuration file"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(LayerscopeError, match=r"bad\.toml: not valid TOML: .*line 1"):
        load_config(write(tmp_path, "[sweep\nseeds = 1", "bad.toml"))
    assert cli.main(["sweep", str(write(tmp_path, GRID.replace("seeds", "sedes")))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "sweep.toml: sweep.sedes: unknown key; did you mean 'seeds'?" in err
    # a dry run only warns about inputs that are not there yet; a real run refuses them first
    assert cli.main(["sweep", str(tmp_path / "sweep.toml"), "--dry-run"]) == 2  # still the bad key
    write(tmp_path, GRID)
    assert cli.main(["sweep", str(tmp_path / "sweep.toml"), "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "84 runs" in captured.out and "0 done, 84 pending" in captured.out
    assert "warning: models.local.source: no such file or directory yet" in captured.err
    assert cli.main(["sweep", str(tmp_path / "sweep.toml"), "--executor", "debug"]) == 2
    assert "models.local.source: no such file or directory" in capsys.readouterr().err


# --------------------------------------------------------------------------- done runs are skipped


def _debug_sweep(directory: Path, sweep_lines: list[str], executor_lines: tuple[str, ...] = ()) -> Path:
    """A one-model, one-task sweep file on the debug executor, with empty stand-ins for its inputs."""
    for name in ("m.pt", "train.conllu", "fr-test.conllu"):
        (directory / name).write_text("", encoding="utf-8")
    indent = "\n        "
    return write(directory, f"""
        [sweep]
        {indent.join(sweep_lines)}
        [models.m]
        source = "m.pt"
        [tasks.pos]
        train = "train.conllu"
        eval = "fr-test.conllu"
        [executor]
        kind = "debug"
        {indent.join(executor_lines)}
    """)


def test_done_runs_are_skipped(tmp_path, monkeypatch):
    """Runs with a results.csv are not submitted again; the others go through the debug executor."""
    config_path = _debug_sweep(tmp_path, ["seeds = [1, 2, 3]", 'output = "out"'], ("max_parallel = 2", "poll_s = 0.01"))
    runs = expand(load_config(config_path))
    executed: list[str] = []

    def fake_run(run):  # stands in for realign + finetune; writes what a finished run writes
        executed.append(run.run_id)
        Path(run.directory).mkdir(parents=True, exist_ok=True)
        pd.DataFrame([{"seed": run.seed, "model": "m", "task": "pos", "method": run.method,
                       "final_eval_fr_accuracy": 0.5 + run.seed / 100}]).to_csv(run.results, index=False)
        return str(run.results)

    monkeypatch.setattr(runner, "run_one", fake_run)
    fake_run(runs[1])  # seed 2 finished in an earlier sweep
    executed.clear()
    Path(runs[2].directory).mkdir(parents=True)  # seed 3 started before but never finished
    assert [is_done(r) for r in runs] == [False, True, False]
    result = sweep_module.sweep(config_path)
    assert result.done_before == {runs[1].run_id}
    assert executed == [runs[0].run_id, runs[2].run_id]
    assert all(o.ok for o in result.outcomes) and result.gathered.missing == []
    assert list(result.gathered.wide["seed"]) == [1, 2, 3]
    assert sweep_module.sweep(config_path).outcomes == [] and executed == [runs[0].run_id, runs[2].run_id]


def test_seeds_option_runs_a_subset_in_order(tmp_path, monkeypatch, capsys):
    """--seeds runs only some seeds of the file, so that every method of one seed can finish before
    the next seed starts; unknown seeds are a one-line error."""
    config_path = _debug_sweep(tmp_path, ["seeds = [1, 2, 3]", 'output = "out"', 'freeze = ["none", "lower"]',
                                          'parallel = "tatoeba:opus"'])
    (tmp_path / "opus").mkdir()
    config_path.write_text(config_path.read_text() + '[aligners.dico]\npairs = "dict:muse"\n')
    (tmp_path / "muse").mkdir()
    executed: list[tuple[int, str]] = []

    def fake_run(run):
        executed.append((run.seed, run.method))
        Path(run.directory).mkdir(parents=True, exist_ok=True)
        pd.DataFrame([{"seed": run.seed, "model": "m", "task": "pos", "method": run.method,
                       "final_eval_fr_accuracy": 0.5}]).to_csv(run.results, index=False)
        return str(run.results)

    monkeypatch.setattr(runner, "run_one", fake_run)
    result = sweep_module.sweep(config_path, seeds=[3])
    assert executed == [(3, "baseline"), (3, "before_dico"), (3, "freeze_realign_unfreeze_dico")]
    result = sweep_module.sweep(config_path, seeds=[3, 1])
    assert sorted(r.seed for r in result.runs) == [1, 1, 1, 3, 3, 3] and len(result.done_before) == 3
    assert executed[3:] == [(1, "baseline"), (1, "before_dico"), (1, "freeze_realign_unfreeze_dico")]
    assert sorted(result.gathered.wide["seed"]) == [1, 1, 1, 3, 3, 3]
    # the full grid then runs only seed 2
    executed.clear()
    assert cli.main(["sweep", str(config_path), "--dry-run"]) == 0
    assert "6 done, 3 pending" in capsys.readouterr().out
    assert cli.main(["sweep", str(config_path), "--seeds", "2"]) == 0
    assert [seed for seed, _ in executed] == [2, 2, 2]
    capsys.readouterr()
    assert cli.main(["sweep", str(config_path), "--seeds", "2,7"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--seeds 2,7: the sweep's seeds are 1,2,3" in err and "sweep.toml" in err
    with pytest.raises(SystemExit) as exit_info:  # argparse's usage error
        cli.main(["sweep", str(config_path), "--seeds", "two"])
    assert exit_info.value.code == 2 and "not a comma-separated list of integers" in capsys.readouterr().err


def test_gather_writes_one_table_per_task(tmp_path):
    config = load_config(write(tmp_path, GRID.replace("seeds = [31, 42, 66]", "seeds = [1, 2]")))
    runs = [r for r in expand(config) if r.model == "local" and r.method == "baseline"]
    for run in runs:  # what run_one leaves behind; NER has an F1 column, PoS none
        Path(run.directory).mkdir(parents=True)
        metric = "f1" if run.task == "ner" else "accuracy"
        pd.DataFrame([{"seed": run.seed, "model": "local", "task": run.task, "method": "baseline",
                       f"final_eval_fr_{metric}": 0.5}]).to_csv(run.results, index=False)
    gathered = runner.gather(expand(config), config.output)
    assert len(gathered.wide) == 4 and len(gathered.missing) == len(expand(config)) - 4
    pos = pd.read_csv(config.output / "tasks" / "pos.csv")
    ner = pd.read_csv(config.output / "tasks" / "ner.csv")
    assert "final_eval_fr_f1" not in pos.columns and list(ner["final_eval_fr_f1"]) == [0.5, 0.5]
    assert list(pd.read_csv(config.output / "results.csv")["run_id"]) == [r.run_id for r in runs]


def test_failed_runs_are_reported_and_not_done(tmp_path, monkeypatch):
    config_path = _debug_sweep(tmp_path, ["seeds = [1]"])

    def failing(run):
        raise LayerscopeError("tiny failure")

    monkeypatch.setattr(runner, "run_one", failing)
    monkeypatch.setattr("pdb.post_mortem", lambda *args, **kwargs: None)  # the debug executor's debugger
    result = sweep_module.sweep(config_path)
    assert [o.ok for o in result.outcomes] == [False] and "tiny failure" in result.failed[0].error
    assert result.gathered is None and not is_done(result.runs[0])


# --------------------------------------------------------------------------- analyses/ configs


ANALYSES_CONFIGS = sorted((REPO / "analyses").rglob("*.toml"))


@pytest.mark.parametrize("path", ANALYSES_CONFIGS, ids=[str(p.relative_to(REPO)) for p in ANALYSES_CONFIGS])
def test_analyses_configs_parse_and_expand(path):
    config = load_config(path)
    runs = expand(config)
    assert runs and len({r.run_id for r in runs}) == len(runs)
    assert sweep_module.grid_shape(config)


def test_alignfreeze_study_covers_the_published_grid():
    study = REPO / "analyses" / "alignfreeze_study"
    configs = sorted(study.glob("*.toml"))
    assert len(configs) == 3
    models = set()
    for path in configs:
        config = load_config(path)
        models |= {m.name for m in config.models.values()}
        assert config.seeds == (31, 42, 66, 23, 17)
        assert set(config.aligners) == {"fastalign", "awesome", "dico"}
        assert {sweep_module.canonical_policy(f) for f in config.freeze} == {"none", "lower", "upper"}
        assert {t.task for t in config.tasks.values()} == {"pos", "ner", "nli", "qa"}
        # PoS with the three aligners, NER, NLI and QA with the dictionary only, as published
        assert len(expand(config)) == ((1 + 3 * 3) + 3 * (1 + 3 * 1)) * 5
    assert models == {"distilbert-base-multilingual-cased", "bert-base-multilingual-cased", "xlm-roberta-base"}


def test_alignfreeze_e5_results_hold_every_run_of_its_grid():
    """analyses/alignfreeze_e5/results.csv (committed) has one row per run of its sweep file, and
    `layerscope gains` on it agrees with a direct computation of the zero-shot deltas."""
    from layerscope.gains import compute_gains

    study = REPO / "analyses" / "alignfreeze_e5"
    runs = expand(load_config(study / "e5-small.toml"))
    results = pd.read_csv(study / "results.csv")
    assert sorted(zip(results["method"], results["seed"])) == sorted((r.method, r.seed) for r in runs)
    assert set(results["run_id"]) == {r.run_id for r in runs}
    methods = sorted({r.method for r in runs} - {"baseline"})
    gains = compute_gains(results, methods=methods, exclude_langs=["en"])
    columns = [c for c in results.columns if c.startswith("final_eval_") and c.split("_")[2] not in
               ("avg", "same", "en")]
    assert len(columns) == 20
    assert (gains.counts[["below", "within", "above"]].sum(axis=1) == 20).all()
    mean = results.groupby("method")[columns].mean() * 100
    for method in methods:
        for column in columns:
            row = gains.table[(gains.table["method"] == method) & (gains.table["lang"] == column.split("_")[2])]
            assert row["delta"].item() == pytest.approx(mean.loc[method, column] - mean.loc["baseline", column])


# --------------------------------------------------------------------------- end to end, real executor


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from conftest import make_encoder

    from layerscope.models import save_checkpoint
    from layerscope.models import checkpoint_from_encoder

    texts = []
    for path in sorted(FIXTURES.rglob("*")):
        if path.suffix in (".conllu", ".txt", ".tsv", ".json"):
            texts += path.read_text(encoding="utf-8").split("\n")
    path = tmp_path_factory.mktemp("sweep-ckpt") / "tiny.pt"
    encoder = make_encoder("bert", layers=2, width=32, texts=texts)
    save_checkpoint(path, checkpoint_from_encoder(encoder, meta={"name": "tiny"}))
    return path


@pytest.mark.slow
def test_local_executor_end_to_end_then_gains(tmp_path, tiny_checkpoint, capsys):
    """Two tiny runs (baseline, AlignFreeze with the dictionary) as real submitit local jobs."""
    config_path = write(tmp_path, f"""
        [sweep]
        output = "out"
        seeds = [31]
        freeze = ["lower"]
        parallel = "tsv:{FIXTURES / 'realign' / 'parallel.tsv'}"
        realign_langs = ["fr", "de"]
        device = "cpu"
        [models.tiny]
        source = "{tiny_checkpoint}"
        realign_lr = 1e-3
        [tasks.pos]
        train = "{FIXTURES / 'pos' / 'en_handmade-train.conllu'}"
        eval = ["{FIXTURES / 'pos' / 'fr_handmade-test.conllu'}", "{FIXTURES / 'pos' / 'de_handmade-test.conllu'}"]
        steps = 3
        lr = 1e-3
        [aligners.dico]
        pairs = "dict:{FIXTURES / 'realign' / 'dict'}"
        [executor]
        kind = "local"
        max_parallel = 2
        timeout_min = 10
        poll_s = 0.5
    """)
    assert cli.main(["sweep", str(config_path)]) == 0
    out = tmp_path / "out"
    assert "2 runs: 0 done before, 2 finished now, 0 failed" in capsys.readouterr().out
    assert list((out / "submitit").glob("*_log.err"))  # it really went through submitit's local executor
    wide = pd.read_csv(out / "results.csv")
    assert list(wide["method"]) == ["baseline", "freeze_realign_unfreeze_dico"]
    assert list(wide.columns[:4]) == ["seed", "model", "task", "method"]
    assert {"final_eval_fr_accuracy", "final_eval_de_accuracy", "run_id"} <= set(wide.columns)
    assert wide.loc[1, "realignment_steps"] == wide.loc[1, "finetuning_steps"] == 3
    tidy = pd.read_csv(out / "results.tidy.csv")
    assert set(tidy["lang"]) == {"fr", "de"} and len(tidy) == 4

    assert cli.main(["sweep", str(config_path), "--dry-run"]) == 0
    assert "2 done, 0 pending" in capsys.readouterr().out
    assert cli.main(["sweep", str(config_path)]) == 0  # nothing left to run: gathers again only
    assert "2 done before, 0 finished now" in capsys.readouterr().out

    assert cli.main(["gains", str(out / "results.csv"), "--method", "freeze_realign_unfreeze_dico"]) == 0
    table = capsys.readouterr().out
    assert "tiny · pos · accuracy" in table and "fr" in table and "de" in table
