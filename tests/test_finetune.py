"""The finetune job and `layerscope finetune`: tables in both layouts, read back by
`layerscope gains`, the realignment schedules through the realignment library, determinism,
and the CLI end to end with its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from layerscope import cli
from layerscope.errors import LayerscopeError
from layerscope.tasks import finetune, method_name

from conftest import TASK_FIXTURES

REPO = Path(__file__).resolve().parent.parent
FIXTURES = TASK_FIXTURES  # the committed fixtures and the PoS files built at test time
POS_TRAIN = FIXTURES / "pos" / "en_handmade-train.conllu"
POS_EVAL = f"{FIXTURES / 'pos' / 'fr_handmade-test.conllu'},{FIXTURES / 'pos' / 'de_handmade-test.conllu'}"
PARALLEL = f"tsv:{FIXTURES / 'realign' / 'parallel.tsv'}"
PAIRS = f"dict:{FIXTURES / 'realign' / 'dict'}"
FAST = dict(steps=3, lr=1e-3, micro_batch_size=8, device="cpu")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny BERT whose tokenizer knows the fixture texts, and its checkpoint file."""
    from conftest import make_encoder

    from layerscope.models import save_checkpoint
    from layerscope.models import checkpoint_from_encoder

    texts = []
    for path in sorted(FIXTURES.rglob("*")):
        if path.suffix in (".conllu", ".txt", ".tsv", ".json"):
            texts += path.read_text(encoding="utf-8").split("\n")
    encoder = make_encoder("bert", layers=2, width=32, texts=texts)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, checkpoint_from_encoder(encoder, meta={"name": "tiny"}))
    return encoder, path


def test_method_names_follow_the_published_results():
    assert method_name(None, (), 12, None) == "baseline"
    assert method_name("before", (), 12, "dict:muse/") == "before_dico"
    assert method_name("before", range(6), 12, "dict:muse/") == "freeze_realign_unfreeze_dico"
    assert method_name("before", range(6, 12), 12, "eflomal") == "freeze_realign_unfreeze_last_half_eflomal"
    assert method_name("during", (), 6, "dict:x") == "during_dico"
    assert method_name("during", (0, 1, 2), 6, "dict:x") == "during_partial_freeze_front_dico"
    assert method_name("during", (3, 4, 5), 6, "embed:3") == "during_partial_freeze_back_embed"
    assert method_name("before", (0, 1), 12, "dict:x") == "before_freeze_0-1_dico"
    assert method_name("before", range(6), 12, "dict:x", freeze_embeddings=True) == \
        "before_freeze_0-1-2-3-4-5_emb_dico"


def test_pos_with_baseline_and_before_schedule(base, tmp_path):
    encoder, _ = base
    original = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    out = tmp_path / "pos.csv"
    result = finetune(encoder, task="udpos", train=POS_TRAIN, eval=POS_EVAL, seeds=[31, 42], realign="before",
                      include_baseline=True, parallel=PARALLEL, pairs=PAIRS, realign_langs="fr,de",
                      realign_lr=1e-3, dev=FIXTURES / "pos" / "en_handmade-train.conllu", output=out, **FAST)
    wide = result.wide
    assert list(wide.columns[:11]) == ["seed", "model", "task", "method", "finetuning_steps", "realignment_steps",
                                       "distinct_realignment_samples", "repeated_realignment_samples",
                                       "train_loss", "realignment_loss", "task_loss"]
    assert list(wide["method"]) == ["baseline"] * 2 + ["freeze_realign_unfreeze_dico"] * 2
    assert list(wide["seed"]) == [31, 42, 31, 42] and set(wide["task"]) == {"pos"}
    assert set(wide["model"]) == {"tiny-bert"}  # the encoder's name
    realigned = wide[wide["method"] != "baseline"]
    assert (realigned["realignment_steps"] == realigned["finetuning_steps"]).all()  # as many as fine-tuning
    assert (realigned["distinct_realignment_samples"] > 0).all()
    assert (realigned["repeated_realignment_samples"] == 3 * 16).all()
    assert (wide[wide["method"] == "baseline"]["realignment_steps"] == 0).all()
    for column in ("final_eval_fr_accuracy", "final_eval_de_accuracy", "final_eval_avg_accuracy",
                   "final_eval_same_accuracy"):
        assert wide[column].between(0, 1).all(), column
    assert wide["final_eval_avg_accuracy"].tolist() == pytest.approx(
        ((wide["final_eval_fr_accuracy"] + wide["final_eval_de_accuracy"]) / 2).tolist())
    # the starting encoder is never modified, and realignment changed the weights fine-tuning started from
    assert all(torch.equal(v, encoder.model.state_dict()[k]) for k, v in original.items())
    assert realigned["task_loss"].tolist() != wide[wide["method"] == "baseline"]["task_loss"].tolist()

    tidy = result.tidy
    assert list(tidy.columns) == ["seed", "model", "task", "method", "lang", "metric", "score"]
    assert len(tidy) == 4 * 2 and set(tidy["lang"]) == {"fr", "de"}  # 'avg' and 'same' are not languages
    row = tidy[(tidy["method"] == "baseline") & (tidy["seed"] == 42) & (tidy["lang"] == "de")]
    assert row["score"].item() == wide.loc[1, "final_eval_de_accuracy"]

    written = pd.read_csv(out)
    pd.testing.assert_frame_equal(written, wide, check_dtype=False)
    run = json.loads(out.with_suffix(".json").read_text())
    assert run["methods"] == ["baseline", "freeze_realign_unfreeze_dico"] and len(run["runs"]) == 4
    assert run["config"]["freeze"] is None and run["runs"][2]["realignment"]["pair_counts"]["fr"] > 0
    assert set(run["majority_baseline"]) == {"fr", "de"}

    from layerscope.gains import compute_gains

    for path in (out, tmp_path / "pos.tidy.csv"):
        gains = compute_gains(path, baseline="baseline")
        assert gains.methods == ["freeze_realign_unfreeze_dico"]
        assert sorted(gains.table["lang"]) == ["de", "fr"] and (gains.table["n_seeds"] == 2).all()
    with pytest.raises(LayerscopeError, match="exists; pass --force"):
        finetune(encoder, task="pos", train=POS_TRAIN, eval=POS_EVAL, seeds=[1], output=out, **FAST)


def test_deterministic_per_seed(base):
    encoder, _ = base
    runs = [finetune(encoder, task="pos", train=POS_TRAIN, eval=POS_EVAL, seeds=seeds, **FAST).wide
            for seeds in ([7], [7], [8])]
    pd.testing.assert_frame_equal(runs[0], runs[1])
    assert runs[0]["task_loss"].item() != runs[2]["task_loss"].item()


def test_during_schedule_with_frozen_lower_half(base, tmp_path):
    """Corpus and pair source given as objects of the realignment library, not as specs."""
    from layerscope.corpora import read_corpus
    from layerscope.realign import pair_source

    encoder, _ = base
    result = finetune(encoder, task="pos", train=POS_TRAIN, eval=POS_EVAL, seeds=[3], realign="during",
                      freeze="lower", parallel=read_corpus(PARALLEL), pairs=pair_source(PAIRS),
                      output=tmp_path / "during.csv", **FAST)
    row = result.wide.iloc[0]
    assert row["method"] == "during_partial_freeze_front_dico"
    assert row["realignment_steps"] == 3 and row["realignment_loss"] > 0
    assert row["distinct_realignment_samples"] > 0
    assert row["train_loss"] == pytest.approx(row["task_loss"] + 0.1 * row["realignment_loss"])
    config = json.loads((tmp_path / "during.json").read_text())["config"]
    assert config["parallel"] == PARALLEL and config["pairs"] == "dict" and config["freeze"] == "lower"


def test_ner_nli_qa_tables_and_gains_metric_choice(base, tmp_path):
    from layerscope.gains import compute_gains

    encoder, _ = base
    ner = finetune(encoder, task="wikiann", train=FIXTURES / "ner" / "en-train.txt",
                   eval=f"{FIXTURES / 'ner' / 'fr-test.txt'},{FIXTURES / 'ner' / 'de-test.txt'}", seeds=[1, 2], **FAST)
    assert [c for c in ner.wide.columns if c.startswith("final_eval_fr")] == [
        "final_eval_fr_precision", "final_eval_fr_recall", "final_eval_fr_f1", "final_eval_fr_accuracy"]
    ner.wide.assign(method="m").pipe(lambda f: pd.concat([ner.wide, f])).to_csv(tmp_path / "ner.csv", index=False)
    gains = compute_gains(tmp_path / "ner.csv", metric="f1")
    assert gains.metric == "f1" and set(gains.table["delta"]) == {0.0}
    nli = finetune(encoder, task="nli", train=FIXTURES / "nli" / "train-en.tsv",
                   eval=FIXTURES / "nli" / "xnli.test.tsv", seeds=[1], **FAST)
    assert {"final_eval_fr_accuracy", "final_eval_de_accuracy"} <= set(nli.wide.columns)
    assert nli.reference == {"fr": pytest.approx(1 / 3), "de": 0.5}  # majority label: entailment
    qa = finetune(encoder, task="qa", train=FIXTURES / "qa" / "train-v1.1.en.json",
                  eval=FIXTURES / "qa" / "xquad.de.json", seeds=[1], max_length=64, **FAST)
    assert list(qa.tidy["metric"]) == ["em", "f1"]
    em, f1 = qa.wide.loc[0, "final_eval_de_em"], qa.wide.loc[0, "final_eval_de_f1"]
    assert 0 <= em <= f1 <= 1
    # a tidy table with several metrics is read by gains one metric at a time
    one_metric = qa.tidy[qa.tidy["metric"] == "f1"]
    assert compute_gains(pd.concat([one_metric, one_metric.assign(method="m")]), baseline="baseline").table[
        "mean"].item() == pytest.approx(100 * f1)


def test_job_errors_before_training(base, tmp_path):
    encoder, _ = base
    with pytest.raises(LayerscopeError, match="needs a parallel corpus and a word-pair source"):
        finetune(encoder, task="pos", train=POS_TRAIN, eval=POS_EVAL, realign="before")
    with pytest.raises(LayerscopeError, match="without a realignment schedule"):
        finetune(encoder, task="pos", train=POS_TRAIN, eval=POS_EVAL, freeze="lower")
    with pytest.raises(LayerscopeError, match="a seed is listed twice"):
        finetune(encoder, task="pos", train=POS_TRAIN, eval=POS_EVAL, seeds="1,1")
    with pytest.raises(LayerscopeError, match="training data must be one language"):
        finetune(encoder, task="pos", train=FIXTURES / "pos", eval=POS_EVAL)
    with pytest.raises(LayerscopeError, match="label set can be given for ner only"):
        finetune(encoder, task="pos", train=POS_TRAIN, eval=POS_EVAL, labels=["NOUN"])
    misc = tmp_path / "fr.txt"
    misc.write_text("Paris\tB-LOC\nFestival\tB-MISC\n", encoding="utf-8")
    with pytest.raises(LayerscopeError, match=r"fr evaluation data .*label 'B-MISC' is not among the training "
                                              r"labels \(O, B-LOC, I-LOC, B-ORG, I-ORG, B-PER, I-PER\)"):
        finetune(encoder, task="ner", train=FIXTURES / "ner" / "en-train.txt", eval=misc, **FAST)
    with pytest.raises(LayerscopeError, match="ner labels must be distinct IOB2 tags including O"):
        finetune(encoder, task="ner", train=FIXTURES / "ner" / "en-train.txt", eval=misc, labels=["PER"], **FAST)


# --------------------------------------------------------------------------- CLI


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               LAYERSCOPE_QUIET="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def test_cli_end_to_end(base, tmp_path, capsys):
    _, checkpoint = base
    out = tmp_path / "res.csv"
    command = [sys.executable, "-m", "layerscope", "-q", "finetune", str(checkpoint), "--task", "pos",
               "--train", str(POS_TRAIN), "--eval", str(FIXTURES / "pos"), "--seeds", "31,42", "--steps", "2",
               "--lr", "1e-3", "--device", "cpu", "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "pos · accuracy" in done.stdout and "majority" in done.stdout
    wide = pd.read_csv(out)
    assert list(wide["seed"]) == [31, 42] and list(wide["method"]) == ["baseline"] * 2
    assert {"final_eval_de_accuracy", "final_eval_en_accuracy", "final_eval_fr_accuracy"} <= set(wide.columns)
    assert (tmp_path / "res.tidy.csv").is_file() and (tmp_path / "res.json").is_file()
    run = json.loads((tmp_path / "res.json").read_text())
    assert run["config"]["micro_batch_size"] == 32  # no --micro-batch-size: the batch in one pass, recorded
    assert run["kernels"] == "fast"
    assert cli.main(command[3:]) == 2  # the same command again, in this process
    assert capsys.readouterr().err.strip().splitlines() == [
        f"layerscope: error: {out}: exists; pass --force to replace it"]


@pytest.mark.parametrize("arguments, message", [
    (["--task", "pos", "--train", "missing.conllu"], "missing.conllu: no such train file or directory"),
    (["--task", "pos", "--train", str(FIXTURES / "pos" / "handmade_malformed.conllu")],
     "handmade_malformed.conllu: line 4: 8 tab-separated fields, CoNLL-U needs 10"),
    (["--task", "pos", "--train", str(FIXTURES / "pos" / "handmade_unknown_upos.conllu")],
     "handmade_unknown_upos.conllu: line 3: unknown UPOS tag 'NOUNN'"),
    (["--task", "nli", "--train", str(FIXTURES / "nli" / "bad_label.tsv")], "line 2: unknown label 'maybe'"),
    (["--task", "tagging", "--train", str(POS_TRAIN)], "unknown task 'tagging': known tasks are pos, ner, nli, qa"),
])
def test_cli_errors_are_one_line_with_exit_code_2(base, tmp_path, capsys, arguments, message):
    _, checkpoint = base
    code = cli.main(["-q", "finetune", str(checkpoint), *arguments, "--eval", POS_EVAL, "-o", str(tmp_path / "r.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("layerscope: error: ") and message in err[0], err
    assert not (tmp_path / "r.csv").exists()


def test_cli_help_has_examples():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if getattr(a, "choices", None) and "finetune" in a.choices)
    text = sub.choices["finetune"].format_help()
    assert "layerscope finetune base.pt --task pos" in text and "--realign" in text
