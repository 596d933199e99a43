"""bertkit against transformers on tiny random models: every output within 1e-5 (fp32),
on batches with padding (compared at the real tokens), for each checkpoint format, and the round trip back."""

from __future__ import annotations

import pytest
import torch
import transformers

import bertkit
from conftest import padded_batch, randomise, save_hf, tiny_config, tiny_hf_config

TOL = 1e-5

CASES = [
    (transformers.BertModel, bertkit.BertModel),
    (transformers.BertForMaskedLM, bertkit.BertForMaskedLM),
    (transformers.BertForPreTraining, bertkit.BertForPreTraining),
]


def outputs(model, batch) -> dict[str, torch.Tensor]:
    """The comparable outputs of either library's model, by one set of names."""
    with torch.no_grad():
        o = model(**batch)
    names = {
        "last_hidden_state": "last_hidden_state",
        "pooler_output": "pooler_output",
        "logits": "logits",
        "prediction_logits": "mlm_logits",
        "mlm_logits": "mlm_logits",
        "seq_relationship_logits": "nsp_logits",
        "nsp_logits": "nsp_logits",
    }
    out = {ours: getattr(o, theirs) for theirs, ours in names.items() if getattr(o, theirs, None) is not None}
    return {k: at_real_tokens(v, batch.get("attention_mask")) for k, v in out.items()}


def at_real_tokens(t: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Per-token outputs with padding positions zeroed: what a model computes there means nothing
    (bertkit's fast path skips padding and leaves zeros), so comparisons are of real tokens."""
    if attention_mask is None or t.dim() < 2 or t.shape[:2] != attention_mask.shape:
        return t
    return t * attention_mask.view(*attention_mask.shape, *[1] * (t.dim() - 2)).to(t.dtype)


def assert_close(ours: dict, ref: dict) -> None:
    assert ours.keys() == ref.keys(), (ours.keys(), ref.keys())
    for k in ref:
        assert ours[k].shape == ref[k].shape, k
        err = (ours[k] - ref[k]).abs().max().item()
        assert err <= TOL, f"{k}: max abs error {err}"


@pytest.mark.parametrize("fmt,act", [("safetensors", "gelu"), ("safetensors", "gelu_new"), ("sharded", "gelu"), ("bin", "gelu")])
@pytest.mark.parametrize("hf_cls,our_cls", CASES, ids=lambda c: c.__name__)
def test_loads_transformers_checkpoint(tmp_path, fmt, hf_cls, our_cls, act):
    ref = randomise(hf_cls(tiny_hf_config(hidden_act=act)))
    d = save_hf(ref, tmp_path / "ckpt", fmt)
    ours = our_cls.from_pretrained(d)
    batch = padded_batch()
    assert_close(outputs(ours, batch), outputs(ref, batch))


@pytest.mark.parametrize("hf_cls,our_cls", CASES, ids=lambda c: c.__name__)
def test_save_pretrained_round_trip_through_transformers(tmp_path, hf_cls, our_cls):
    ref = randomise(hf_cls(tiny_hf_config()), seed=3)
    ours = our_cls.from_pretrained(save_hf(ref, tmp_path / "src", "safetensors"))
    ours.save_pretrained(tmp_path / "out")
    back = hf_cls.from_pretrained(tmp_path / "out").eval()
    batch = padded_batch()
    assert_close(outputs(back, batch), outputs(ref, batch))
    # ... and bertkit reads its own output again, bit for bit
    again = our_cls.from_pretrained(tmp_path / "out")
    for k, v in ours.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def test_base_model_reads_task_checkpoint_and_reports_unused_heads(tmp_path, capsys):
    ref = randomise(transformers.BertForPreTraining(tiny_hf_config()))
    model = bertkit.BertModel.from_pretrained(save_hf(ref, tmp_path / "ckpt", "safetensors"))
    assert "mlm.*" in capsys.readouterr().err
    batch = padded_batch()
    base = transformers.BertModel(tiny_hf_config()).eval()
    base.load_state_dict(ref.bert.state_dict())
    assert_close(outputs(model, batch), outputs(base, batch))


def test_missing_head_is_an_error_unless_asked(tmp_path):
    ref = randomise(transformers.BertModel(tiny_hf_config()))
    d = save_hf(ref, tmp_path / "ckpt", "safetensors")
    with pytest.raises(bertkit.BertkitError, match="mlm"):
        bertkit.BertForMaskedLM.from_pretrained(d)
    model = bertkit.BertForMaskedLM.from_pretrained(d, new_heads=True)
    assert model.load_report.initialised and all(k.startswith("mlm.") for k in model.load_report.initialised)


def test_padding_never_changes_real_tokens():
    """A sequence alone and the same sequence padded inside a batch give the same vectors."""
    model = randomise(bertkit.BertModel(tiny_config()))
    batch = padded_batch()
    with torch.no_grad():
        full = model(**batch).last_hidden_state
        for i, n in enumerate(batch["attention_mask"].sum(1).tolist()):
            alone = model(**{k: v[i : i + 1, :n] for k, v in batch.items()}).last_hidden_state
            assert (alone[0] - full[i, :n]).abs().max() <= TOL


def test_masked_lm_loss_on_masked_positions_equals_full_logits_loss():
    model = randomise(bertkit.BertForMaskedLM(tiny_config()))
    batch = padded_batch()
    labels = torch.full_like(batch["input_ids"], -100)
    labels[0, 2], labels[1, 4], labels[2, 0] = 7, 8, 9
    with torch.no_grad():
        fast = model(**batch, labels=labels)
        full = model(**batch).logits
    ref = torch.nn.functional.cross_entropy(full.view(-1, 99), labels.view(-1), ignore_index=-100)
    assert fast.logits.shape == (3, 99)
    assert abs(fast.loss.item() - ref.item()) <= TOL


def test_the_lazy_pooler_read_after_inference_mode_runs_as_inside():
    """README's ten lines read `out.pooler_output` after the `with torch.inference_mode():` block: the lazy pooler
    then runs in the forward's mode (it raised 'Inference tensors cannot be saved for backward')."""
    model = randomise(bertkit.BertModel(tiny_config())).eval()
    batch = padded_batch()
    with torch.inference_mode():
        out = model(**batch)
        inside = model(**batch).pooler_output
    assert torch.equal(out.pooler_output, inside)
    assert not model(**batch).pooler_output.is_inference() and model(**batch).pooler_output.requires_grad
