"""Attention mask modes: no position attends where it must not."""

from __future__ import annotations

import torch

import bertkit
from conftest import randomise, tiny_config


def run(model, ids, types=None, mask=None):
    with torch.no_grad():
        return model(ids, attention_mask=mask, token_type_ids=types).last_hidden_state


def test_causal_future_tokens_do_not_change_the_past():
    model = randomise(bertkit.BertModel(tiny_config(attention_mode="causal")))
    ids = torch.randint(5, 99, (2, 10), generator=torch.Generator().manual_seed(0))
    base = run(model, ids)
    for t in range(10):
        changed = ids.clone()
        changed[:, t] = (changed[:, t] + 1) % 99
        out = run(model, changed)
        assert torch.allclose(out[:, :t], base[:, :t], atol=1e-6), t  # the past is untouched
        assert not torch.allclose(out[:, t:], base[:, t:], atol=1e-6)  # the present and future see it


def test_unilm_source_is_bidirectional_and_target_causal():
    model = randomise(bertkit.BertModel(tiny_config(attention_mode="unilm")))
    ids = torch.randint(5, 99, (1, 10), generator=torch.Generator().manual_seed(1))
    types = torch.tensor([[0] * 4 + [1] * 6])  # 4 source tokens, 6 target tokens
    base = run(model, ids, types)
    for t in range(10):
        changed = ids.clone()
        changed[0, t] = (changed[0, t] + 1) % 99
        out = run(model, changed, types)
        if t < 4:  # a source token is seen by every position
            assert not torch.allclose(out[0, :4], base[0, :4], atol=1e-6)
        else:  # a target token is seen by no source position and no earlier target
            assert torch.allclose(out[0, :t], base[0, :t], atol=1e-6), t
            assert not torch.allclose(out[0, t], base[0, t], atol=1e-6)


def test_causal_with_padding_stays_finite_and_ignores_pads():
    model = randomise(bertkit.BertModel(tiny_config(attention_mode="causal")))
    ids = torch.randint(5, 99, (2, 6), generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3])
    out = run(model, ids, mask=mask)
    assert torch.isfinite(out).all()
    alone = run(model, ids[1:, :3])
    assert torch.allclose(out[1, :3], alone[0], atol=1e-6)
