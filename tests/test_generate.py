"""The generation helper: greedy against a hand loop, beam against brute force, top-k within its k."""

from __future__ import annotations

import itertools

import pytest
import torch

import bertkit
from bertkit.generate import generate
from conftest import randomise


def lm(mode: str, vocab: int = 7):
    c = bertkit.BertConfig(vocab_size=vocab, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=40, max_position_embeddings=16, attention_mode=mode)
    return randomise(bertkit.BertForMaskedLM(c), seed=5)


def next_log_probs(model, seq, n_prompt):
    types = torch.zeros(1, len(seq), dtype=torch.long)
    if model.config.attention_mode == "unilm":
        types[0, n_prompt:] = 1
    with torch.no_grad():
        logits = model(torch.tensor([seq]), token_type_ids=types).logits[0, -1]
    return logits.log_softmax(-1)


@pytest.mark.parametrize("mode", ["causal", "unilm"])
def test_greedy_equals_a_hand_loop(mode):
    model, prompt = lm(mode), [1, 4, 2]
    seq = list(prompt)
    for _ in range(5):
        seq.append(int(next_log_probs(model, seq, 3).argmax()))
    assert generate(model, prompt, max_new_tokens=5) == seq[3:]


@pytest.mark.heavy
@pytest.mark.parametrize("mode", ["causal", "unilm"])
def test_beam_wide_enough_equals_brute_force(mode):
    """With as many beams as sequences, beam search finds the most probable 3-token continuation."""
    model, prompt = lm(mode), [1, 3]
    best = max(itertools.product(range(7), repeat=3),
               key=lambda cont: sum(float(next_log_probs(model, prompt + list(cont[:i]), 2)[cont[i]]) for i in range(3)))
    assert generate(model, prompt, max_new_tokens=3, strategy="beam", num_beams=7 ** 3) == list(best)


def test_one_beam_is_greedy_and_top1_is_greedy():
    model = lm("causal")
    greedy = generate(model, [2], max_new_tokens=6)
    assert generate(model, [2], max_new_tokens=6, strategy="beam", num_beams=1) == greedy
    assert generate(model, [2], max_new_tokens=6, strategy="topk", top_k=1) == greedy


def test_topk_samples_only_the_top_k():
    model = lm("causal")
    top = next_log_probs(model, [2], 1).topk(3)
    allowed = set(top.indices.tolist())
    g = torch.Generator().manual_seed(0)
    draws = [generate(model, [2], max_new_tokens=1, strategy="topk", top_k=3, generator=g)[0] for _ in range(600)]
    assert set(draws) <= allowed and len(set(draws)) > 1
    want = top.values.softmax(-1)  # the top 3 renormalised: each token's share of the draws
    for token, p in zip(top.indices.tolist(), want.tolist()):
        assert abs(draws.count(token) / 600 - p) < 0.06, (token, draws.count(token) / 600, p)


def test_stops_at_end_token_and_length_limit():
    model = lm("causal")
    first = generate(model, [2], max_new_tokens=1)[0]
    assert generate(model, [2], max_new_tokens=10, end_id=first) == [first]
    assert len(generate(model, [1] * 14, max_new_tokens=10)) == 2  # 16 positions in all


def test_bad_requests():
    with pytest.raises(bertkit.BertkitError, match="needs attention_mode 'causal' or 'unilm'"):
        generate(lm("bidirectional"), [1])
    with pytest.raises(bertkit.BertkitError, match="prompt is empty"):
        generate(lm("causal"), [])
    with pytest.raises(bertkit.BertkitError, match="strategy 'nucleus'"):
        generate(lm("causal"), [1], strategy="nucleus")


# ---- the key/value cache of the encoder family (causal and UniLM modes) -------------------------------------

MEMBERS = [dict(), dict(model_type="roberta", pad_token_id=1), dict(model_type="albert", embedding_size=20, num_hidden_groups=1),
           dict(model_type="electra"), dict(model_type="distilbert", type_vocab_size=0), dict(model_type="roformer"),
           dict(model_type="nezha")]
MEMBER_IDS = ["bert", "roberta", "albert", "electra", "distilbert", "roformer", "nezha"]


def member(kind: dict, mode: str, seed: int = 3):
    c = bertkit.BertConfig(**(dict(vocab_size=40, hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=40,
                                   max_position_embeddings=40, attention_mode=mode) | kind))
    return randomise(bertkit.BertForMaskedLM(c), seed=seed)


@pytest.mark.parametrize("mode", ["causal", "unilm"])
@pytest.mark.parametrize("kind", MEMBERS, ids=MEMBER_IDS)
def test_cached_steps_give_the_whole_sequence_states(kind, mode):
    """Feeding a sequence in pieces through the cache gives each position the states of one whole pass."""
    model = member(kind, mode)
    ids = torch.randint(5, 40, (2, 9), generator=torch.Generator().manual_seed(0))
    types = torch.zeros_like(ids)
    if mode == "unilm":
        types[:, 4:] = 1  # a 4-token source, then the target
    with torch.no_grad():
        whole = model.bert(ids, token_type_ids=types).last_hidden_state
        first = model.bert(ids[:, :4], token_type_ids=types[:, :4], use_cache=True)
        parts = [first.last_hidden_state]
        for t in range(4, 9):
            parts.append(model.bert(ids[:, t:t + 1], token_type_ids=types[:, t:t + 1], past_key_values=first.past_key_values).last_hidden_state)
    assert (torch.cat(parts, 1) - whole).abs().max() < 1e-5


@pytest.mark.parametrize("mode", ["causal", "unilm"])
@pytest.mark.parametrize("kind", MEMBERS, ids=MEMBER_IDS)
def test_cached_generation_of_a_batch_equals_each_prompt_alone(kind, mode):
    """A batch of prompts of different lengths (left-padded, cached) writes what each prompt writes alone without a cache."""
    model = member(kind, mode)
    prompts = [[2, 7, 9, 11, 5], [3, 8], [6, 6, 12]]
    for strategy in ("greedy", "beam"):
        batch = generate(model, prompts, max_new_tokens=6, strategy=strategy, num_beams=3)
        alone = [generate(model, p, max_new_tokens=6, strategy=strategy, num_beams=3, use_cache=False) for p in prompts]
        assert batch == alone, (strategy, batch, alone)


def test_a_bidirectional_model_refuses_a_cache():
    model = member({}, "bidirectional")
    with pytest.raises(bertkit.BertkitError, match="needs attention_mode 'causal' or 'unilm'"):
        model.bert(torch.tensor([[2, 3]]), use_cache=True)
