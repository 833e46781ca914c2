"""Task metrics against hand-computed values (and seqeval, where installed)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerscope.tasks import metrics


def test_accuracy_and_token_accuracy():
    assert metrics.accuracy(["a", "b", "c", "d"], ["a", "x", "c", "d"]) == 0.75
    assert metrics.token_accuracy([["A", "B"], ["C"]], [["A", "A"], ["C"]]) == pytest.approx(2 / 3)
    assert metrics.majority_baseline([["N", "N", "V"]], [["N", "V", "D", "N"]]) == 0.5
    with pytest.raises(ValueError, match="sentence 1: gold has 1 tags but predicted has 2"):
        metrics.token_accuracy([["A"], ["B"]], [["A"], ["B", "C"]])
    with pytest.raises(ValueError, match="differ in length: 2 and 1"):
        metrics.accuracy(["a", "b"], ["a"])


def test_entities_conlleval_and_strict_readings():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-ORG", "I-PER"]
    assert metrics.iob2_entities(tags) == [("PER", 0, 1), ("LOC", 3, 4), ("ORG", 5, 5), ("PER", 6, 6)]
    # strict IOB2: a stray I- opens nothing, and I-PER does not continue an ORG
    assert metrics.iob2_entities(tags, mode="strict") == [("PER", 0, 1), ("ORG", 5, 5)]
    assert metrics.iob2_entities(["B-LOC", "B-LOC", "I-LOC"]) == [("LOC", 0, 0), ("LOC", 1, 2)]
    with pytest.raises(ValueError, match="not an IOB2 tag: 'PER'"):
        metrics.iob2_entities(["PER"])
    with pytest.raises(ValueError, match="unknown entity mode"):
        metrics.iob2_entities(["O"], mode="lenient")


def test_entity_f1_with_partial_boundaries_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O"],  # PER 0-1, LOC 3
            ["B-ORG", "I-ORG", "I-ORG", "O"],       # ORG 0-2
            ["O", "B-PER", "O"],                    # PER 1
            ["O", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC", "I-LOC"],  # PER 0 (too short), LOC 3-4 (too long): both wrong
            ["B-ORG", "I-ORG", "I-ORG", "O"],       # exact: right
            ["O", "B-LOC", "O"],                    # right span, wrong type
            ["B-MISC", "O"]]                        # spurious
    scores = metrics.entity_scores(gold, pred)
    # 4 gold entities, 5 predicted, 1 right: P = 1/5, R = 1/4, F1 = 2·(1/5)(1/4)/(1/5 + 1/4) = 2/9
    assert (scores.true_positives, scores.predicted, scores.gold) == (1, 5, 4)
    assert scores.precision == pytest.approx(0.2)
    assert scores.recall == pytest.approx(0.25)
    assert scores.f1 == pytest.approx(2 / 9)


def test_entity_f1_modes_differ_on_ill_formed_gold():
    gold, pred = [["I-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]]
    assert metrics.entity_scores(gold, pred).f1 == 1.0  # conlleval: gold is PER 0-1
    strict = metrics.entity_scores(gold, pred, mode="strict")  # strict: gold has no entity
    assert (strict.precision, strict.recall, strict.f1) == (0.0, 0.0, 0.0)
    assert metrics.entity_scores([["O"]], [["O"]]).f1 == 0.0  # nothing to find: 0 by convention


TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
sentences = st.lists(st.lists(st.sampled_from(TAGS), min_size=1, max_size=8), min_size=1, max_size=5)


@settings(max_examples=100, deadline=None)
@given(sentences, st.randoms(use_true_random=False))
def test_entity_f1_agrees_with_seqeval(gold, rnd):
    seqeval = pytest.importorskip("seqeval.metrics")
    from seqeval.scheme import IOB2

    pred = [[rnd.choice(TAGS) if rnd.random() < 0.4 else tag for tag in sentence] for sentence in gold]
    ours = metrics.entity_scores(gold, pred)
    assert ours.f1 == pytest.approx(seqeval.f1_score(gold, pred, zero_division=0))
    assert ours.precision == pytest.approx(seqeval.precision_score(gold, pred, zero_division=0))
    strict = metrics.entity_scores(gold, pred, mode="strict")
    assert strict.f1 == pytest.approx(seqeval.f1_score(gold, pred, mode="strict", scheme=IOB2, zero_division=0))


@given(sentences)
def test_entity_f1_is_one_on_itself_and_symmetric_in_precision_recall(gold):
    has_entities = any(metrics.iob2_entities(s) for s in gold)
    assert metrics.entity_scores(gold, gold).f1 == (1.0 if has_entities else 0.0)
    flipped = [["O" if t == "O" else t[:2] + ("LOC" if t.endswith("PER") else "PER") for t in s] for s in gold]
    ab, ba = metrics.entity_scores(gold, flipped), metrics.entity_scores(flipped, gold)
    assert (ab.precision, ab.recall) == (ba.recall, ba.precision)


def test_squad_normalisation():
    assert metrics.normalize_answer("  The Eiffel-Tower!  ") == "eiffeltower"
    assert metrics.normalize_answer("An apple, a day") == "apple day"
    assert metrics.normalize_answer("theatre") == "theatre"  # 'the' only as a whole word
    assert metrics.normalize_answer("Ça coûte 3,5 €") == "ça coûte 35 €"  # only ASCII punctuation goes


def test_squad_exact_match_and_f1_by_hand():
    assert metrics.exact_match("An apple", "apple") == 1.0
    assert metrics.exact_match("apples", "apple") == 0.0
    # pred tokens eiffel tower in paris, gold eiffel tower: P = 2/4, R = 2/2, F1 = 2/3
    assert metrics.answer_f1("the Eiffel tower in Paris", "Eiffel Tower") == pytest.approx(2 / 3)
    # tokens counted with multiplicity: x x y vs x y y share one x and one y: P = R = 2/3
    assert metrics.answer_f1("x x y", "x y y") == pytest.approx(2 / 3)
    assert metrics.answer_f1("nothing", "Eiffel Tower") == 0.0
    assert metrics.answer_f1("", "the") == 0.0  # a gold that normalises to nothing cannot be matched
    scores = metrics.squad_scores(
        {"q1": "the Eiffel tower in Paris", "q2": "1889", "q3": "Paris"},
        {"q1": ["Eiffel Tower", "the Eiffel Tower in Paris."], "q2": ["in 1889"], "q3": ["Lyon"], "q4": ["x"]},
    )
    # q1: best gold is the second (EM 1, F1 1); q2: EM 0, F1 2·1·(1/2)/(3/2) = 2/3; q3, q4 (missing): 0
    assert scores["em"] == pytest.approx(1 / 4)
    assert scores["f1"] == pytest.approx((1 + 2 / 3) / 4)
    assert not math.isnan(scores["f1"])
    with pytest.raises(ValueError, match="question 'q' has no gold answer"):
        metrics.squad_scores({}, {"q": []})
