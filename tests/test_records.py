"""A member cannot land half-done. Every record in bertkit/families/ must have:
- a parity row: a tiny random transformers model of its type that the family tests compare bertkit against
  (tests/test_family.py's CASES, tests/test_seq2seq.py's configs, tests/test_parity.py for BERT; NEZHA, which
  transformers no longer ships, against the paper's formula);
- presets whose parameter counts bertkit builds, equal to transformers' model of the same config.json;
- key rows covering a tiny model's every parameter both ways: its checkpoint loads strictly (no weight missing, no key
  unknown) and bertkit writes back exactly the keys transformers wrote.
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers as tf
from safetensors.torch import load_file

import bertkit
from bertkit import families
from bertkit.config import BertConfig
from test_family import CASES, reference
from test_seq2seq import configs as seq2seq_configs

# The members whose parity is proved without a transformers model, and the test that does it.
WITHOUT_REFERENCE = {"nezha": "tests/test_family.py::test_nezha_attention_equals_the_formula"}
ENCODERS = {make().model_type: (make, hf_cls, our_cls) for _, make, hf_cls, our_cls in CASES if our_cls is bertkit.BertModel}
ENCODERS["bert"] = (lambda: tf.BertConfig(vocab_size=99, hidden_size=36, num_hidden_layers=2, num_attention_heads=3,
                                          intermediate_size=52, max_position_embeddings=40), tf.BertModel, bertkit.BertModel)
DECODERS = {config.model_type: (cls, config) for cls, config in seq2seq_configs().values()}
TRANSFORMERS_CLASS = {"encoder": tf.AutoModel, "decoder": tf.AutoModelForCausalLM, "encoder-decoder": tf.AutoModelForSeq2SeqLM}


def test_every_member_has_a_parity_row():
    covered = set(ENCODERS) | set(DECODERS) | set(WITHOUT_REFERENCE)
    assert not set(families.MEMBERS) - covered, f"members without a parity row: {sorted(set(families.MEMBERS) - covered)}"


@pytest.mark.parametrize("model_type", sorted(families.MEMBERS))
def test_every_record_is_whole(model_type):
    from pathlib import Path

    from bertkit.weights import FAMILIES, table_of

    m = families.member(model_type)
    assert m.model_type == model_type and m.title and m.differs
    assert m.positions in families.POSITION_TYPES and m.shape in families.SHAPES
    assert m.presets or model_type in ("umt5", "mbart"), f"{model_type} has no preset (only UMT5 and mBART are read without one)"
    assert table_of(BertConfig(model_type=model_type, **({"attention_mode": "causal"} if m.shape == "decoder" else {}))) in FAMILIES
    if m.compute:
        assert (Path(bertkit.__file__).parent / f"{m.compute}.py").is_file(), f"{model_type}'s compute module {m.compute}.py"
    if m.classifier and model_type not in WITHOUT_REFERENCE:  # NEZHA's classifiers were written by transformers 4
        assert hasattr(tf, f"{m.hf_name}ForSequenceClassification"), f"transformers has no {m.hf_name}ForSequenceClassification"


def bertkit_count(name: str) -> int:
    config = BertConfig.from_preset(name)
    cls = {"encoder": bertkit.BertModel, "decoder": bertkit.CausalLM, "encoder-decoder": bertkit.Seq2SeqLM}[config.member.shape]
    with torch.device("meta"):
        return cls(config).num_parameters()


@pytest.mark.parametrize("name", sorted(families.PRESETS))
def test_every_preset_builds_its_count_and_transformers_agrees(name, tmp_path):
    """The count in the record is what bertkit builds, and transformers' model of the config.json bertkit writes
    has the same number of parameters (NEZHA: no transformers model to ask)."""
    ours = bertkit_count(name)
    assert ours == families.COUNTS[name], f"{name}: the record says {families.COUNTS[name]:,}, bertkit builds {ours:,}"
    config = BertConfig.from_preset(name)
    if config.model_type in WITHOUT_REFERENCE:
        return
    config.save(tmp_path / "config.json")
    hf_config = tf.AutoConfig.from_pretrained(tmp_path)
    with torch.device("meta"):
        model = TRANSFORMERS_CLASS[config.member.shape].from_config(hf_config)
    theirs = model.num_parameters()
    head = model.get_output_embeddings()
    if not config.tie_word_embeddings and head is not None and head.weight is model.get_input_embeddings().weight:
        theirs += head.weight.numel()  # transformers 5 ties every mT5's head whatever its config.json says; the published one is untied
    assert ours == theirs, f"{name}: bertkit {ours:,}, transformers {theirs:,}"


@pytest.mark.parametrize("model_type", sorted(set(ENCODERS) | set(DECODERS)))
def test_key_rows_cover_a_tiny_model_both_ways(model_type, tmp_path):
    if model_type in ENCODERS:
        make, hf_cls, our_cls = ENCODERS[model_type]
        ref = reference(make, hf_cls)
    else:
        hf_cls, config = DECODERS[model_type]
        ref = hf_cls(config)
        our_cls = bertkit.CausalLM if model_type == "gpt2" else bertkit.Seq2SeqLM
    ref.save_pretrained(tmp_path / "theirs")
    ours = our_cls.from_pretrained(tmp_path / "theirs")  # strict: a weight missing or a key unknown is an error
    ours.save_pretrained(tmp_path / "ours")
    written = set(load_file(tmp_path / "theirs" / "model.safetensors"))
    back = set(load_file(tmp_path / "ours" / "model.safetensors"))
    assert back == written, f"only transformers wrote {sorted(written - back)[:5]}; only bertkit wrote {sorted(back - written)[:5]}"
    saved = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert saved["model_type"] == model_type


def test_the_readme_maps_every_record():
    """README is the map: every member's record is linked from its family table, and it stays a map (<= 150 lines)."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    for module in {f.stem for f in (root / "bertkit" / "families").glob("*.py")} - {"__init__", "record"}:
        assert f"(bertkit/families/{module}.py)" in readme, f"README's family table does not link bertkit/families/{module}.py"
    assert len(readme.splitlines()) <= 150
