"""Metrics against references: entity scores equal seqeval's default mode, classification
scores equal a confusion-matrix computation (and sklearn when it is installed)."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest

from bertkit.crf import split_tag
from bertkit.data.metrics import (
    accuracy,
    bio_problems,
    classification_report,
    entities,
    entity_scores,
    macro_f1,
    repair_bio,
)
from bertkit.errors import BertkitError

seqeval = pytest.importorskip("seqeval.metrics")
from seqeval.metrics.sequence_labeling import get_entities  # noqa: E402

TYPES = ["PER", "LOC", "ORG-X"]  # a type with a "-" in it on purpose
BIO_TAGS = ["O"] + [f"{p}-{t}" for p in "BI" for t in TYPES]
BIOES_TAGS = ["O"] + [f"{p}-{t}" for p in "BIES" for t in TYPES]
ANY_TAGS = BIOES_TAGS + ["B", "I", "E", "S"]  # bare prefixes: type "_"


def random_seq(rng, tags, n):
    """Tag sequences that are mostly O, and malformed as often as not (I- after O, mixed types, ...)."""
    return [rng.choice(tags) if rng.random() < 0.6 else "O" for _ in range(n)]


def corrupt(rng, seq, tags, p=0.2):
    """A prediction: the truth with some tags replaced, so that many entities do match."""
    return [rng.choice(tags) if rng.random() < p else t for t in seq]


def corpus(seed, tags, n_sents=40):
    rng = random.Random(seed)
    true = [random_seq(rng, tags, rng.randint(0, 12)) for _ in range(n_sents)]
    return true, [corrupt(rng, s, tags) for s in true]


@pytest.mark.parametrize("tags", [BIO_TAGS, BIOES_TAGS, ANY_TAGS], ids=["bio", "bioes", "mixed"])
def test_entities_equal_seqeval(tags):
    rng = random.Random(0)
    for _ in range(2000):
        seq = random_seq(rng, tags, rng.randint(0, 10))
        want = [(t, s, e + 1) for t, s, e in get_entities(seq)]  # seqeval's ends are inclusive
        assert entities(seq) == want, seq


@pytest.mark.parametrize("tags", [BIO_TAGS, BIOES_TAGS, ANY_TAGS], ids=["bio", "bioes", "mixed"])
@pytest.mark.parametrize("seed", range(15))
def test_entity_scores_equal_seqeval(tags, seed):
    true, pred = corpus(seed, tags)
    got = entity_scores(true, pred)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns on types with no true or no predicted entities
        assert abs(got["precision"] - seqeval.precision_score(true, pred)) < 1e-12
        assert abs(got["recall"] - seqeval.recall_score(true, pred)) < 1e-12
        assert abs(got["f1"] - seqeval.f1_score(true, pred)) < 1e-12
        report = seqeval.classification_report(true, pred, output_dict=True)
    assert got["support"] == report["micro avg"]["support"]
    per_type = {k: v for k, v in report.items() if not k.endswith(" avg")}
    assert sorted(got["per_type"]) == sorted(per_type)
    for type_, want in per_type.items():
        mine = got["per_type"][type_]
        for m in ("precision", "recall"):
            assert abs(mine[m] - want[m]) < 1e-12, (type_, m)
        assert abs(mine["f1"] - want["f1-score"]) < 1e-12
        assert mine["support"] == want["support"]


def test_entity_scores_by_hand():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["S-ORG"]]
    pred = [["B-PER", "I-PER", "O", "B-PER"], ["O"]]
    s = entity_scores(true, pred)
    assert (s["precision"], s["recall"], s["support"]) == (0.5, 1 / 3, 3)
    assert s["f1"] == pytest.approx(0.4)
    assert s["per_type"]["PER"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    assert s["per_type"]["ORG"]["support"] == 1 and s["per_type"]["ORG"]["f1"] == 0.0
    assert entity_scores([], [])["f1"] == 0.0
    with pytest.raises(ValueError, match="sentence 1: 1 true tags but 2 predicted"):
        entity_scores(true, [pred[0], ["O", "O"]])


def test_entities_by_hand():
    assert entities(["B-PER", "I-PER", "O", "I-LOC"]) == [("PER", 0, 2), ("LOC", 3, 4)]
    assert entities(["I-PER", "I-PER", "B-PER"]) == [("PER", 0, 2), ("PER", 2, 3)]  # non-strict: I- opens
    assert entities(["B-PER", "I-LOC"]) == [("PER", 0, 1), ("LOC", 1, 2)]  # a type change splits
    assert entities(["B-X", "E-X", "E-X", "S-X", "I-X"]) == [("X", 0, 2), ("X", 2, 3), ("X", 3, 4), ("X", 4, 5)]
    assert entities(["B-ORG-CORP", "I-ORG-CORP"]) == [("ORG-CORP", 0, 2)]
    assert entities([]) == []
    assert split_tag("O") == ("O", "") and split_tag("B") == ("B", "_") and split_tag("S-X") == ("S", "X")
    for bad in ("U-PER", "b-PER", "BPER", "", "O-PER"):
        with pytest.raises(BertkitError, match="neither 'O'"):
            entities(["O", bad])


def test_bio_problems_and_repair_by_hand():
    tags = ["I-PER", "I-PER", "O", "I-LOC", "B-PER", "I-LOC", "I-LOC", "B-ORG", "I-ORG"]
    assert bio_problems(tags) == [0, 3, 5]  # at the start, after O, after another type
    assert repair_bio(tags) == ["B-PER", "I-PER", "O", "B-LOC", "B-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    assert bio_problems(repair_bio(tags)) == []
    assert tags[0] == "I-PER"  # the input is left alone
    assert bio_problems(["O", "B-X", "I-X", "O"]) == [] and repair_bio([]) == []


@pytest.mark.parametrize("tags", [BIO_TAGS, ANY_TAGS], ids=["bio", "mixed"])
def test_repair_keeps_entities_and_leaves_no_problems(tags):
    rng = random.Random(1)
    for _ in range(1000):
        seq = random_seq(rng, tags, rng.randint(0, 10))
        fixed = repair_bio(seq)
        assert entities(fixed) == entities(seq), seq  # non-strict scoring already read them this way
        assert bio_problems(fixed) == []
        assert all(a == b or a[0] == "I" for a, b in zip(seq, fixed))


def reference_report(y_true, y_pred, labels):
    """The same scores from a numpy confusion matrix: rows truth, columns prediction."""
    index = {k: i for i, k in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)))
    for t, p in zip(y_true, y_pred):
        cm[index[t], index[p]] += 1
    tp, n_pred, n_true = np.diag(cm), cm.sum(0), cm.sum(1)
    p = np.divide(tp, n_pred, out=np.zeros_like(tp), where=n_pred > 0)
    r = np.divide(tp, n_true, out=np.zeros_like(tp), where=n_true > 0)
    f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(tp), where=p + r > 0)
    return p, r, f1, n_true, tp.sum() / max(len(y_true), 1)


@pytest.mark.parametrize("seed", range(20))
def test_classification_scores_equal_confusion_matrix(seed):
    rng = random.Random(seed)
    n_classes = rng.randint(2, 6)
    y_true = [rng.randrange(n_classes) for _ in range(rng.randint(1, 60))]
    y_pred = [t if rng.random() < 0.5 else rng.randrange(n_classes + 1) for t in y_true]  # may predict an unseen class
    names = [f"c{i}" for i in range(n_classes + 2)]  # one class that never occurs at all
    report = classification_report(y_true, y_pred, label_names=names)
    p, r, f1, support, acc = reference_report(y_true, y_pred, range(len(names)))
    assert report["accuracy"] == pytest.approx(acc, abs=1e-12) == accuracy(y_true, y_pred)
    for i, name in enumerate(names):
        got = report["per_class"][name]
        assert got == pytest.approx({"precision": p[i], "recall": r[i], "f1": f1[i], "support": support[i]}, abs=1e-12)
    assert report["macro"]["f1"] == pytest.approx(f1.mean(), abs=1e-12)
    assert report["macro"]["f1"] == pytest.approx(macro_f1(y_true, y_pred, labels=range(len(names))), abs=1e-12)
    assert report["weighted"]["recall"] == pytest.approx((r * support).sum() / support.sum(), abs=1e-12)
    seen = sorted(set(y_true) | set(y_pred))
    _, _, f1_seen, _, _ = reference_report(y_true, y_pred, seen)
    assert macro_f1(y_true, y_pred) == pytest.approx(f1_seen.mean(), abs=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_classification_scores_equal_sklearn(seed):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(seed)
    labels = ["neg", "neu", "pos", "mixed"]
    y_true = [rng.choice(labels) for _ in range(50)]
    y_pred = [t if rng.random() < 0.4 else rng.choice(labels[:3]) for t in y_true]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = sklearn_metrics.classification_report(y_true, y_pred, output_dict=True, zero_division=0)
        want_f1 = sklearn_metrics.f1_score(y_true, y_pred, average="macro", zero_division=0)
    got = classification_report(y_true, y_pred)
    assert got["accuracy"] == pytest.approx(want["accuracy"], abs=1e-12)
    assert macro_f1(y_true, y_pred) == pytest.approx(want_f1, abs=1e-12)
    for mine, theirs in [(got["macro"], want["macro avg"]), (got["weighted"], want["weighted avg"])] + [
        (got["per_class"][k], want[k]) for k in labels
    ]:
        assert mine["precision"] == pytest.approx(theirs["precision"], abs=1e-12)
        assert mine["recall"] == pytest.approx(theirs["recall"], abs=1e-12)
        assert mine["f1"] == pytest.approx(theirs["f1-score"], abs=1e-12)
        assert mine["support"] == theirs["support"]


def test_classification_by_hand():
    report = classification_report([0, 0, 1, 1], [0, 1, 1, 1], label_names=["no", "yes"])
    assert report["accuracy"] == 0.75
    assert report["per_class"]["no"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert report["per_class"]["yes"] == {"precision": pytest.approx(2 / 3), "recall": 1.0, "f1": 0.8, "support": 2}
    assert classification_report([1], [1])["per_class"] == {"1": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}}
    assert accuracy([], []) == 0.0 and macro_f1([], []) == 0.0
    assert classification_report(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), ["no", "yes"]) == report  # arrays too
    with pytest.raises(ValueError, match="differ in length: 2 vs 1"):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError, match=r"\[2\] are not ids"):
        classification_report([0, 2], [0, 1], label_names=["a", "b"])
