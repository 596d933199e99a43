"""Google's original TF checkpoints, read without TensorFlow: the fixture (written by
tensorflow, see fixtures/make_tf_fixture.py) gives its recorded outputs, converts to an HF
directory transformers loads, and a fresh TF checkpoint (where tensorflow is installed) loads too."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import transformers

import bertkit
from bertkit.cli import main
from bertkit.weights import BACKBONE_KEYS, HEAD_KEYS
from conftest import FIXTURES, padded_batch, randomise, tiny_hf_config

TF_DIR = FIXTURES / "tf_bert_tiny"


def expected():
    e = np.load(TF_DIR / "expected.npz")
    batch = {k: torch.from_numpy(e[k]) for k in ("input_ids", "attention_mask", "token_type_ids")}
    return batch, {k: torch.from_numpy(e[k]) for k in e.files if k not in batch}


def close(a, b, attention_mask=None):
    # expected.npz was computed by transformers in the fixture's environment: allow float32 rounding;
    # per-token outputs are compared at the real tokens (padding positions mean nothing)
    if attention_mask is not None:
        a, b = a[attention_mask.bool()], b[attention_mask.bool()]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_pretraining_outputs_match_the_recorded_reference():
    batch, ref = expected()
    model = bertkit.BertForPreTraining.from_pretrained(TF_DIR)
    with torch.no_grad():
        out = model(**batch)
        base = bertkit.BertModel.from_pretrained(TF_DIR)(**batch)
    close(out.mlm_logits, ref["mlm_logits"], batch["attention_mask"])
    close(out.nsp_logits, ref["nsp_logits"])
    close(base.last_hidden_state, ref["last_hidden_state"], batch["attention_mask"])
    close(base.pooler_output, ref["pooler_output"])


def test_prefix_and_index_paths_load_too():
    for path in (TF_DIR / "bert_model.ckpt", TF_DIR / "bert_model.ckpt.index"):
        assert bertkit.BertModel.from_pretrained(path, verbose=False).config.hidden_size == 24


def test_convert_writes_a_directory_transformers_loads(tmp_path, capsys):
    assert main(["convert", str(TF_DIR), str(tmp_path / "hf")]) == 0
    assert "BertForPreTraining" in capsys.readouterr().out
    batch, ref = expected()
    hf = transformers.BertForPreTraining.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        out = hf(**batch)
    close(out.prediction_logits, ref["mlm_logits"])
    close(out.seq_relationship_logits, ref["nsp_logits"])
    # the tokenizer came along: Google's vocab.txt, lower-casing inferred from the vocabulary
    text = "The Cat sat on the MAT."
    ours = bertkit.Tokenizer.from_pretrained(TF_DIR)(text)["input_ids"]
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")(text, return_tensors="pt")["input_ids"]
    assert torch.equal(ours, theirs) and (ours != 1).all()  # 1 is [UNK]: the words were found lower-cased


def test_truncated_tf_data_file_names_the_file(tmp_path):
    d = tmp_path / "tf"
    shutil.copytree(TF_DIR, d)
    data = d / "bert_model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(bertkit.BertkitError, match="bert_model.ckpt.data-00000-of-00001"):
        bertkit.BertModel.from_pretrained(d)


def google_name(hf_key: str) -> tuple[str, bool] | None:
    """transformers' name -> (Google's name, transpose?), straight from the key table."""
    import re

    rows = [(f"bert.{h}", g) for _, h, g in BACKBONE_KEYS] + [(h, g) for _, h, g in HEAD_KEYS]
    for h, g in rows:
        m = re.fullmatch(re.escape(h).replace(r"\{\}", r"(\d+)"), hf_key)
        if m and g:
            return g.format(*m.groups()), g.endswith("/kernel")
    return None


@pytest.mark.heavy
def test_fresh_checkpoint_written_by_tensorflow(tmp_path):
    tf = pytest.importorskip("tensorflow")
    ref = randomise(transformers.BertForPreTraining(tiny_hf_config()), seed=5)
    graph = tf.Graph()
    with graph.as_default():
        for key, t in ref.state_dict().items():
            named = google_name(key)
            if named is None:  # the tied decoder copies
                continue
            value = t.numpy().T if named[1] else t.numpy()
            tf.compat.v1.Variable(value, name=named[0])
        tf.compat.v1.train.get_or_create_global_step()
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(tmp_path / "model.ckpt"), global_step=7)
    (tmp_path / "bert_config.json").write_text(ref.config.to_json_string())
    ours = bertkit.BertForPreTraining.from_pretrained(tmp_path)
    batch = padded_batch()
    with torch.no_grad():
        a, b = ours(**batch), ref(**batch)
    m = batch["attention_mask"].bool()
    assert (a.mlm_logits[m] - b.prediction_logits[m]).abs().max() <= 1e-5
    assert (a.nsp_logits - b.seq_relationship_logits).abs().max() <= 1e-5
