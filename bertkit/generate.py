"""Generation with a causal (GPT-style) or UniLM seq2seq mask: greedy, top-k sampling, beam search.

A model with `attention_mode="causal"` or `"unilm"` and an MLM head reads position t and predicts
the token at t + 1 (how bert4keras and UniLM train such models: Dong et al. 2019). In unilm mode
the prompt is the source (segment 0, bidirectional) and the generated tokens are the target
(segment 1, causal); in causal mode everything is segment 0.

No key/value cache: every step re-runs the whole prefix, O(T^2) forwards in all. That is fine for
the short outputs these models write and keeps this file a readable reference.
Shapes: K beams (or 1), T current length, V vocabulary.
"""

from __future__ import annotations

import torch

from .errors import BertkitError

STRATEGIES = ("greedy", "topk", "beam")


def _next_log_probs(model, seqs: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """[K, T] token ids -> [K, V] log-probabilities of the next token."""
    types = torch.zeros_like(seqs)
    if model.config.attention_mode == "unilm":
        types[:, prompt_len:] = 1
    h = model.bert(seqs, token_type_ids=types).last_hidden_state[:, -1]  # [K, H]
    logits = model.mlm(h, model.bert.embed.word.weight)  # [K, V]
    return logits.float().log_softmax(-1)


@torch.no_grad()
def generate(
    model,
    prompt: list[int] | torch.Tensor,
    max_new_tokens: int = 32,
    strategy: str = "greedy",
    end_id: int | None = None,
    top_k: int = 10,
    temperature: float = 1.0,
    num_beams: int = 4,
    length_penalty: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[int]:
    """The generated token ids (without the prompt; ending with end_id if it was produced).

    model: a BertForMaskedLM whose config.attention_mode is "causal" or "unilm".
    strategy: "greedy"; "topk" samples from the top_k tokens at `temperature`; "beam" keeps
        num_beams hypotheses and returns the one with the best log-probability / length**length_penalty.
    """
    mode = model.config.attention_mode
    if mode not in ("causal", "unilm"):
        raise BertkitError(f"generation needs attention_mode 'causal' or 'unilm', not {mode!r}: a bidirectional model sees the future it should predict.")
    if strategy not in STRATEGIES:
        raise BertkitError(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}.")
    device = next(model.parameters()).device
    prompt = torch.as_tensor(prompt, dtype=torch.long, device=device).flatten()
    if prompt.numel() == 0:
        raise BertkitError("the prompt is empty; give at least one token (e.g. [CLS]).")
    room = model.config.max_length - prompt.numel()
    if room < 1:
        raise BertkitError(f"the prompt has {prompt.numel()} tokens, leaving no room under the model's maximum of {model.config.max_length}.")
    steps = min(max_new_tokens, room)
    model.eval()
    if strategy == "beam":
        return _beam(model, prompt, steps, end_id, num_beams, length_penalty)
    seq = prompt[None]  # [1, T]
    for _ in range(steps):
        logp = _next_log_probs(model, seq, prompt.numel())[0]  # [V]
        if strategy == "greedy":
            token = logp.argmax()
        else:
            top = (logp / temperature).topk(min(top_k, logp.numel()))
            pick = torch.multinomial(top.values.softmax(-1).cpu(), 1, generator=generator)
            token = top.indices[pick.item()]
        seq = torch.cat([seq, token.view(1, 1)], dim=1)
        if token.item() == end_id:
            break
    return seq[0, prompt.numel():].tolist()


def _beam(model, prompt, steps, end_id, num_beams, length_penalty) -> list[int]:
    """Beam search: expand every live hypothesis by every token, keep the num_beams best."""
    live = [(prompt.tolist(), 0.0)]  # (tokens, summed log-probability)
    done: list[tuple[list[int], float]] = []
    n = prompt.numel()
    for _ in range(steps):
        seqs = torch.tensor([s for s, _ in live], device=prompt.device)  # [K, T]
        logp = _next_log_probs(model, seqs, n)  # [K, V]
        scores = torch.tensor([s for _, s in live], device=prompt.device)[:, None] + logp  # [K, V]
        best = scores.flatten().topk(min(num_beams, scores.numel()))
        V = logp.shape[1]
        live = []
        for score, index in zip(best.values.tolist(), best.indices.tolist()):
            tokens = seqs[index // V].tolist() + [index % V]
            (done if index % V == end_id else live).append((tokens, score))
        if not live:
            break
    done += live

    def normalised(h):
        return h[1] / max(len(h[0]) - n, 1) ** length_penalty

    return max(done, key=normalised)[0][n:]
