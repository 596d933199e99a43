"""Long sentences as sliding windows (token classification): every word is read by some window, windows
are whole words sharing about `stride` tokens, and the merged predictions are those of the window where
each word lies farthest from a cut (or the mean of its emissions), never a word left unseen."""

from __future__ import annotations

import random

import pytest
import torch

import bertkit
from bertkit.data.datasets import TagExample
from bertkit.data.features import FAR, encode, windows
from bertkit.data.metrics import cut_tags
from bertkit.heads import set_task
from bertkit.serving.predict import predict_features, predict_texts
from conftest import randomise

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def test_windows_cover_every_word_start_within_the_room():
    rng = random.Random(0)
    for _ in range(500):
        n_words = rng.randint(1, 60)
        pieces = [rng.choice([1, 1, 1, 2, 3]) for _ in range(n_words)]
        starts = [1 + sum(pieces[:i]) for i in range(n_words)]
        n = 2 + sum(pieces)  # with [CLS] and [SEP]
        room, stride = rng.randint(4, 20), 0
        stride = rng.randint(0, room // 2)
        spans = windows(starts, n, room, stride)
        assert spans[0][0] == 1 and spans[-1][1] == n - 1
        for (s, t), (s2, _) in zip(spans, spans[1:]):
            assert s < s2 <= t and s2 in starts  # progress, no gap, a new window begins at a word
            assert t - s2 <= max(stride, 0) or t - s2 < max(pieces)  # it shares at most about `stride` tokens
        for s, t in spans:
            assert t - s <= room and s in starts
        assert {p for p in starts if any(s <= p < t for s, t in spans)} == set(starts)  # every word's first piece read


@pytest.fixture(scope="module")
def tagger():
    tok = bertkit.train_wordpiece(["张三在北京工作", "李四去上海了"] * 20, 200, lowercase=True)
    config = bertkit.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=48, max_position_embeddings=64)
    set_task(config, "ner", LABELS, crf=False, max_length=16, tokens="chars", stride=4)
    torch.manual_seed(0)
    model = randomise(bertkit.BertForTokenClassification(config)).eval()
    return model, tok


def long_sentence(n: int, seed: int = 0) -> TagExample:
    rng = random.Random(seed)
    words = [rng.choice("张三李四在北京上海工作去了") for _ in range(n)]
    return TagExample(words, [rng.choice(LABELS) for _ in words])


def test_encode_reads_every_word_of_a_long_sentence(tagger):
    model, tok = tagger
    examples = [long_sentence(50, 1), long_sentence(5, 2), long_sentence(14, 3)]
    f = encode(tok, examples, "ner", LABELS, 16, stride=4)
    assert f.truncated == [] and f.lost_words == 0
    assert f.example_of.count(0) > 1 and f.example_of.count(1) == 1  # the short one is one window, as without windows
    for j, i in enumerate(f.example_of):
        assert len(f.input_ids[j]) <= 16
        e = examples[i]
        words = f.kept_words[j]
        tags = [e.tags[w] for w in words]
        if f.example_of.count(i) > 1:  # a cut window's tags hold on their own (see the test below)
            tags = cut_tags(tags, words[0] > 0, words[-1] < len(e.tokens) - 1)
        assert f.word_labels[j] == [LABELS.index(t) for t in tags]
        pieces = [tok.backend.encode(w, add_special_tokens=False).ids[0] for w in e.tokens]
        assert [f.input_ids[j][p] for p in f.word_index[j]] == [pieces[w] for w in f.kept_words[j]]
    for i, e in enumerate(examples):
        assert f.words_of(i) == list(range(len(e.tokens)))
    cut = encode(tok, examples, "ner", LABELS, 16)  # no stride: the old truncation
    assert cut.truncated == [0] and cut.lost_words == 50 - 14


def window_emissions(model, tok, e: TagExample, spans, n_pieces):
    """Each window's per-word emissions, built here from the words' pieces (not by encode)."""
    ids = [tok.backend.encode(w, add_special_tokens=False).ids for w in e.tokens]
    first = [1 + sum(len(x) for x in ids[:k]) for k in range(len(ids))]
    flat = [p for x in ids for p in x]
    out = []
    for s, t in spans:
        words = [w for w in range(len(ids)) if s <= first[w] < t]
        x = torch.tensor([[tok.cls_token_id, *flat[s - 1:t - 1], tok.sep_token_id]])
        with torch.no_grad():
            em = model(x, torch.ones_like(x), torch.zeros_like(x), torch.tensor([[first[w] - s + 1 for w in words]]))[0]
        edge = [min(first[w] - s if s > 1 else FAR, t - 1 - first[w] if t < n_pieces + 1 else FAR) for w in words]
        out.append((words, em, edge))
    return out


def test_merged_predictions_are_those_of_the_farthest_window(tagger):
    model, tok = tagger
    e = long_sentence(40, 4)
    f = encode(tok, [e], "ner", LABELS, 16, stride=4)
    n_pieces = sum(len(tok.backend.encode(w, add_special_tokens=False).ids) for w in e.tokens)
    spans = windows([1 + sum(len(tok.backend.encode(w, add_special_tokens=False).ids) for w in e.tokens[:k]) for k in range(40)],
                    n_pieces + 2, 14, 4)
    per_window = window_emissions(model, tok, e, spans, n_pieces)
    best = {}
    for words, em, edge in per_window:
        for w, row, d in zip(words, em, edge):
            if w not in best or d > best[w][0]:
                best[w] = (d, int(row.argmax()))
    assert predict_features(model, f, merge="edge") == [[best[w][1] for w in range(40)]]
    total, count = torch.zeros(40, len(LABELS)), torch.zeros(40, 1)
    for words, em, _ in per_window:
        total[words] += em
        count[words] += 1
    assert predict_features(model, f, merge="mean") == [(total / count).argmax(-1).tolist()]


def test_mean_merge_decodes_the_whole_sentence_with_the_crf(tagger):
    """With a CRF, "mean" runs Viterbi once over the sentence's averaged emissions (not window by window)."""
    model, tok = tagger
    config = model.config
    set_task(config, "ner", LABELS, crf=True, max_length=16, tokens="chars", stride=4)
    torch.manual_seed(1)
    crf_model = randomise(bertkit.BertForTokenClassification(config)).eval()
    f = encode(tok, [long_sentence(30, 5)], "ner", LABELS, 16, stride=4)
    calls = []
    decode = crf_model.decode
    crf_model.decode = lambda em, mask: calls.append(em.shape) or decode(em, mask)
    (merged,) = predict_features(crf_model, f, merge="mean")
    assert calls[-1] == (1, 30, len(LABELS)) and len(merged) == 30


def test_predict_texts_tags_past_the_first_window(tagger):
    model, tok = tagger
    text = "张三在北京工作" * 8  # 56 characters, windows of 14
    (row,) = predict_texts(model, tok, [text])
    assert row["truncated"] is False
    f = encode(tok, [TagExample(list(text))], "ner", LABELS, 16, stride=4)
    (tags,) = predict_features(model, f)
    assert len(tags) == 56
    with pytest.raises(bertkit.BertkitError, match="--stride must be between 0 and half"):
        encode(tok, [TagExample(list(text))], "ner", LABELS, 16, stride=8)


def test_cut_windows_keep_the_crf_constraints():
    """A window that opens inside an entity starts it (I- -> B-); in BIOES a window that closes one ends it."""
    from bertkit.data.metrics import bio_problems, entities

    assert cut_tags(["I-PER", "I-PER", "O", "B-LOC"], True, True) == ["B-PER", "I-PER", "O", "B-LOC"]
    assert cut_tags(["I-PER", "O"], False, True) == ["I-PER", "O"]  # not cut: left as it is
    assert cut_tags(["E-PER", "O", "B-LOC", "I-LOC"], True, True) == ["S-PER", "O", "B-LOC", "E-LOC"]
    assert cut_tags(["I-PER", "E-PER", "B-LOC"], True, True) == ["B-PER", "E-PER", "S-LOC"]
    rng = random.Random(1)
    for _ in range(200):  # every cut of a valid BIO sentence is valid and keeps the entities inside it
        tags = []
        while len(tags) < 30:
            kind = rng.choice(["PER", "LOC", None])
            tags += ["O"] if kind is None else [f"B-{kind}"] + [f"I-{kind}"] * rng.randint(0, 4)
        a, b = sorted(rng.sample(range(len(tags) + 1), 2))
        piece = cut_tags(tags[a:b], a > 0, b < len(tags))
        assert not bio_problems(piece)
        whole = {(k, s - a, e - a) for k, s, e in entities(tags) if a <= s and e <= b}
        assert whole <= set(entities(piece))


def test_head_and_tail_of_a_long_review():
    """classify with truncation head+tail: [CLS], the first quarter of the room, the last three quarters, [SEP]."""
    from bertkit.data.datasets import TextExample

    tok = bertkit.train_wordpiece(["质量很好物流很快", "屏幕有坏点很失望"] * 20, 200, lowercase=True)
    text = "质量很好" * 10 + "屏幕有坏点很失望" * 5  # 80 characters
    f = encode(tok, [TextExample(text, "1"), TextExample("很好", "0")], "classify", ["0", "1"], 18, truncation="head+tail")
    pieces = tok.backend.encode(text, add_special_tokens=False).ids
    assert f.input_ids[0] == [tok.cls_token_id, *pieces[:4], *pieces[-12:], tok.sep_token_id] and f.truncated == [0]
    assert f.input_ids[1] == tok.backend.encode("很好").ids and f.labels == [1, 0]
    head = encode(tok, [TextExample(text, "1")], "classify", ["0", "1"], 18)
    assert head.input_ids[0] == [tok.cls_token_id, *pieces[:16], tok.sep_token_id]
