"""Evaluation metrics: accuracy and per-class precision/recall/F1 for classification, and
entity-level precision/recall/F1 for tagging (NER, chunking), scored the way CoNLL scores them.

Plain Python: labels are any hashable values (ints or strings), tags are strings such as
"O", "B-PER", "I-PER", "E-PER", "S-PER". Every score whose denominator is zero is 0.0, as in
sklearn and seqeval with their default `zero_division`.

Entities are read from tags with seqeval's default (conlleval-compatible, non-strict) rules,
reimplemented in `_chunk_ends` / `_chunk_starts` and tested equal to seqeval on random (also
malformed) BIO and BIOES sequences. Non-strict means a malformed sequence still yields
entities: an I-PER after O, or after another type, opens a new PER entity. `bio_problems` and
`repair_bio` report and fix exactly those spots for data that should have been clean BIO.

References: Tjong Kim Sang & De Meulder 2003, "Introduction to the CoNLL-2003 Shared Task"
(its conlleval.pl defines the entity F1); seqeval's `get_entities` (github.com/chakki-works/seqeval).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

from ..crf import split_tag

# Classification -----------------------------------------------------------------------------


def _scores(tp: int, n_pred: int, n_true: int) -> dict:
    """precision, recall, F1 and support (true count) from counts; 0.0 where undefined."""
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f1, "support": n_true}


def _check_lengths(y_true: Sequence, y_pred: Sequence, what: str = "y_true and y_pred") -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"{what} differ in length: {len(y_true)} vs {len(y_pred)}")


def accuracy(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> float:
    """Fraction of positions where the prediction equals the truth (0.0 for no examples)."""
    _check_lengths(y_true, y_pred)
    return sum(t == p for t, p in zip(y_true, y_pred)) / len(y_true) if len(y_true) else 0.0


def _per_label(y_true, y_pred, labels) -> dict:
    """label -> precision/recall/f1/support, one-vs-rest, for each of `labels`."""
    _check_lengths(y_true, y_pred)
    hits = Counter(t for t, p in zip(y_true, y_pred) if t == p)
    n_true, n_pred = Counter(y_true), Counter(y_pred)
    return {k: _scores(hits[k], n_pred[k], n_true[k]) for k in labels}


def _all_labels(y_true, y_pred) -> list:
    return sorted(set(y_true) | set(y_pred))


def macro_f1(y_true: Sequence[Hashable], y_pred: Sequence[Hashable], labels: Sequence[Hashable] | None = None) -> float:
    """Unweighted mean of the per-label F1 over `labels` (default: every label seen in either list)."""
    per = _per_label(y_true, y_pred, _all_labels(y_true, y_pred) if labels is None else labels)
    return sum(s["f1"] for s in per.values()) / len(per) if per else 0.0


def classification_report(
    y_true: Sequence[Hashable], y_pred: Sequence[Hashable], label_names: Sequence[str] | None = None
) -> dict:
    """Per-class and averaged scores, like sklearn's `classification_report(output_dict=True)`.

    Without `label_names` the classes are the labels seen in either list, keyed by `str(label)`.
    With them, labels are ids 0..len(label_names)-1 keyed by name, and every named class is
    reported (and counts in the macro average) even if it never occurs.

    Returns {"accuracy": a, "macro": scores, "weighted": scores, "per_class": {name: scores}},
    where scores = {"precision", "recall", "f1", "support"}; "weighted" weighs by support.
    """
    if label_names is None:
        labels = _all_labels(y_true, y_pred)
        names = [str(k) for k in labels]
    else:
        labels, names = range(len(label_names)), list(label_names)
        unknown = sorted({y for y in [*y_true, *y_pred] if y not in labels}, key=str)
        if unknown:
            raise ValueError(f"labels {unknown} are not ids of label_names (0..{len(names) - 1})")
    per = _per_label(y_true, y_pred, labels)
    rows = [per[k] for k in labels]
    total = sum(s["support"] for s in rows)

    def average(weights) -> dict:
        norm = sum(weights)
        avg = {m: sum(w * s[m] for w, s in zip(weights, rows)) / norm if norm else 0.0 for m in ("precision", "recall", "f1")}
        return {**avg, "support": total}

    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro": average([1] * len(rows)),
        "weighted": average([s["support"] for s in rows]),
        "per_class": dict(zip(names, rows)),
    }


# Entities from tag sequences ----------------------------------------------------------------


def _chunk_ends(prev: str, prev_type: str, tag: str, type_: str) -> bool:
    """Does an entity end just before `tag`, given the tag before it?"""
    return (
        prev in "ES"  # E- and S- always close their entity
        or (prev in "BI" and tag in "BSO")  # B-/S-/O never continue one
        or (prev != "O" and prev_type != type_)  # the type changes
    )


def _chunk_starts(prev: str, prev_type: str, tag: str, type_: str) -> bool:
    """Does an entity start at `tag`, given the tag before it?"""
    return (
        tag in "BS"
        or (tag in "IE" and prev in "ESO")  # non-strict: an I-/E- with nothing open to continue opens its own
        or (tag != "O" and prev_type != type_)  # the type changes
    )


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The entities of one tag sequence as (type, start, end_exclusive), in order.

    ["B-PER", "I-PER", "O", "I-LOC"] -> [("PER", 0, 2), ("LOC", 3, 4)]. Works for BIO and BIOES.
    """
    found = []
    prev, prev_type, begin = "O", "", 0
    for i, tag in enumerate([*tags, "O"]):  # the trailing "O" closes an entity open at the end
        tag, type_ = split_tag(tag)
        if _chunk_ends(prev, prev_type, tag, type_):
            found.append((prev_type, begin, i))
        if _chunk_starts(prev, prev_type, tag, type_):
            begin = i
        prev, prev_type = tag, type_
    return found


def entity_scores(true_seqs: Sequence[Sequence[str]], pred_seqs: Sequence[Sequence[str]]) -> dict:
    """Entity-level scores over a corpus: an entity counts only if type, start and end all match.

    Returns {"precision", "recall", "f1", "support"} micro-averaged over all entities (the CoNLL
    headline number, seqeval's default `f1_score`), plus "per_type": {type: the same four}.
    "support" is the number of true entities.
    """
    _check_lengths(true_seqs, pred_seqs, "true_seqs and pred_seqs")
    gold, pred = set(), set()  # (sentence, type, start, end)
    for n, (t, p) in enumerate(zip(true_seqs, pred_seqs)):
        if len(t) != len(p):
            raise ValueError(f"sentence {n}: {len(t)} true tags but {len(p)} predicted")
        gold.update((n, *e) for e in entities(t))
        pred.update((n, *e) for e in entities(p))
    hits = gold & pred
    n_gold, n_pred, n_hits = (Counter(e[1] for e in s) for s in (gold, pred, hits))  # per type
    per_type = {k: _scores(n_hits[k], n_pred[k], n_gold[k]) for k in sorted(n_gold | n_pred)}
    return {**_scores(len(hits), len(pred), len(gold)), "per_type": per_type}


# Accept-and-report for BIO data ------------------------------------------------------------


def bio_problems(tags: Sequence[str]) -> list[int]:
    """Positions of I-X tags that do not continue a B-X or I-X: at the start, after O, after another type.

    Scoring accepts these (each opens an entity); a loader can report them and `repair_bio` them.
    """
    bad = []
    prev = ("O", "")
    for i, tag in enumerate(tags):
        cur = split_tag(tag)
        if cur[0] == "I" and not (prev[0] in "BI" and prev[1] == cur[1]):
            bad.append(i)
        prev = cur
    return bad


def repair_bio(tags: Sequence[str]) -> list[str]:
    """The tags with every `bio_problems` position turned from I-X into B-X; entities are unchanged."""
    fixed = list(tags)
    for i in bio_problems(tags):
        fixed[i] = "B" + fixed[i][1:]
    return fixed


def cut_tags(tags: Sequence[str], cut_before: bool, cut_after: bool) -> list[str]:
    """The tags of a window cut out of a sentence, valid on their own (the CRF's constraints hold in every
    window): an entity the cut opens starts there (I-X -> B-X; BIOES: E-X -> S-X), and in BIOES one the
    cut closes ends there (B-X -> S-X, I-X -> E-X). The entities of the whole sentence are unchanged."""
    out = list(tags)
    if out and cut_before:
        prefix, kind = split_tag(out[0])
        out[0] = {"I": f"B-{kind}", "E": f"S-{kind}"}.get(prefix, out[0])
    bioes = any(split_tag(t)[0] in "ES" for t in tags)
    if out and cut_after and bioes:
        prefix, kind = split_tag(out[-1])
        out[-1] = {"B": f"S-{kind}", "I": f"E-{kind}"}.get(prefix, out[-1])
    return out
