"""Generation: greedy, sampling (temperature, top-k, top-p), beam search; for decoders (GPT-2), encoder-decoders
(T5, BART) and the encoder family with a causal or UniLM mask.

A model is driven through `Steps`: the first call reads the prompts, each later call only the token each row
just chose, with a key/value cache (model.Cache), so a step costs one token's forward. An encoder-family model
(BertForMaskedLM with attention_mode "causal" or "unilm": position t predicts the token at t + 1, as bert4keras
and UniLM train them, Dong et al. 2019) caches as a decoder does: in unilm mode the prompt is the source
(segment 0, bidirectional) and the generated tokens the target (segment 1, causal), and a target token's keys
never change once written.

Batches of prompts of different lengths: a decoder's (and an encoder's) prompts are left-padded, positions
counting real tokens only (rotary and relative positions see only distances); an encoder-decoder's sources
are right-padded. Beam search follows transformers' (4.50+) algorithm, so both
choose the same tokens: at each step the 2K best continuations of all K beams; those ending in the end token
and ranked in the top K join the finished set with score sum(log p) / generated_length ** length_penalty;
the K best unfinished continue; a sentence stops when no running beam can beat its worst finished one.
Shapes: B prompts, K beams, R = B * K rows, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import BertkitError

STRATEGIES = ("greedy", "sample", "topk", "beam")  # "topk": sampling from the top_k tokens (the older name)
NEG = -1.0e9  # a score that never wins


@dataclass
class Settings:
    max_new_tokens: int
    strategy: str
    end_id: int | None
    top_k: int
    top_p: float
    temperature: float
    repetition_penalty: float
    min_new_tokens: int
    num_beams: int
    length_penalty: float
    generator: torch.Generator | None


class Steps:
    """How generation drives a model, with its key/value cache (or without: use_cache=False re-reads the whole
    sequence each step, the reference the cache is tested against). Three shapes:
      decoder        CausalLM; prompts left-padded, positions counting real tokens only
      encoder-decoder Seq2SeqLM; sources right-padded and encoded once, the decoder starts from its start token
      encoder        BertForMaskedLM with the causal or UniLM mask, left-padded as a decoder; in unilm mode the
                     prompt is segment 0 and every generated token segment 1
    """

    def __init__(self, model, prompts: list[list[int]], repeat: int, use_cache: bool, start_id: int | None):
        self.model, self.use_cache = model, use_cache
        device = next(model.parameters()).device
        c = model.config
        self.pad = c.pad_token_id if c.pad_token_id is not None else (c.eos_token_id or 0)
        self.shape = "encoder-decoder" if c.is_encoder_decoder else "decoder" if c.is_decoder else "encoder"
        T = max(len(p) for p in prompts)
        self.n_prompt = T
        if self.shape == "encoder-decoder":
            ids = torch.tensor([p + [self.pad] * (T - len(p)) for p in prompts], device=device)
            mask = torch.tensor([[1] * len(p) + [0] * (T - len(p)) for p in prompts], device=device)
            self.source_mask = mask.repeat_interleave(repeat, 0)
            self.memory = model.encode(ids, mask).repeat_interleave(repeat, 0)  # [R, S, H]
            self.ids = torch.full((len(prompts) * repeat, 1), start_id, device=device)  # the decoder's tokens so far
            self.mask = None
        else:  # left-padded: every row's next token is at the right end
            ids = torch.tensor([[self.pad] * (T - len(p)) + p for p in prompts], device=device)
            mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts], device=device)
            self.ids, self.mask = ids.repeat_interleave(repeat, 0), mask.repeat_interleave(repeat, 0)
        self.cache = None

    @property
    def history(self) -> torch.Tensor:  # [R, L]: what the repetition penalty counts as already said
        if self.mask is None:
            return self.ids
        return torch.where(self.mask.bool(), self.ids, self.ids[:, -1:])  # padding is not said: it repeats a real token

    def positions(self) -> torch.Tensor:  # [R, L]: a left-padded row's real tokens count from 0
        return (self.mask.cumsum(1) - 1).clamp(min=0)

    def run(self, ids, cache) -> tuple[torch.Tensor, object]:  # -> (logits [R, V] of the last position, the cache)
        m, n = self.model, ids.shape[1]
        if self.shape == "encoder-decoder":
            out = m(None, self.source_mask, ids, past_key_values=cache, use_cache=self.use_cache, encoder_outputs=self.memory)
            return out.logits[:, -1], out.past_key_values
        pos = self.positions()[:, -n:]
        if self.shape == "decoder":
            out = m(ids, attention_mask=self.mask, position_ids=pos, past_key_values=cache, use_cache=self.use_cache)
            return out.logits[:, -1], out.past_key_values
        c = m.config
        at = torch.arange(self.ids.shape[1] - n, self.ids.shape[1], device=ids.device)  # where these tokens sit
        types = (at >= self.n_prompt).long()[None].expand_as(ids) if c.attention_mode == "unilm" else torch.zeros_like(ids)
        offset = c.pad_token_id + 1 if c.positions_after_padding else 0  # RoBERTa counts from pad + 1
        out = m.bert(ids, attention_mask=self.mask, token_type_ids=types, position_ids=pos + offset, past_key_values=cache,
                     use_cache=self.use_cache)
        return m.mlm(out.last_hidden_state[:, -1], m.bert.embed.word.weight), out.past_key_values

    def first(self) -> torch.Tensor:  # -> [R, V] logits of each row's next token
        logits, self.cache = self.run(self.ids, None)
        return logits

    def next(self, tokens: torch.Tensor) -> torch.Tensor:  # tokens [R] -> [R, V]
        self.ids = torch.cat((self.ids, tokens[:, None]), 1)
        if self.mask is not None:
            self.mask = torch.cat((self.mask, torch.ones_like(self.mask[:, :1])), 1)
        logits, self.cache = self.run(tokens[:, None], self.cache) if self.use_cache else self.run(self.ids, None)
        return logits

    def reorder(self, index: torch.Tensor) -> None:  # row r continues from row index[r] (beam search)
        self.ids = self.ids.index_select(0, index)
        if self.mask is not None:
            self.mask = self.mask.index_select(0, index)
        if self.cache is not None:
            self.cache.reorder(index)


def process(scores: torch.Tensor, history: torch.Tensor, step: int, s: Settings) -> torch.Tensor:
    """transformers' logits processors, in its order: repetition penalty (a seen token's score divided by the
    penalty when positive, multiplied when negative), then no end token before min_new_tokens."""
    if s.repetition_penalty != 1.0:
        seen = scores.gather(1, history)
        scores = scores.scatter(1, history, torch.where(seen < 0, seen * s.repetition_penalty, seen / s.repetition_penalty))
    if s.end_id is not None and step < s.min_new_tokens:
        scores = scores.clone()
        scores[:, s.end_id] = -float("inf")
    return scores


def warp(scores: torch.Tensor, s: Settings) -> torch.Tensor:
    """Sampling's filters, in transformers' order: temperature, then top-k, then top-p (the smallest set of tokens
    whose probability reaches top_p, always at least one)."""
    scores = scores / s.temperature
    if s.top_k > 0:
        kth = scores.topk(min(s.top_k, scores.shape[-1])).values[:, -1:]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if s.top_p < 1.0:
        sorted_scores, order = scores.sort(descending=True)
        cum = sorted_scores.softmax(-1).cumsum(-1)
        drop = cum - sorted_scores.softmax(-1) >= s.top_p  # tokens after the set already reached top_p
        scores = scores.masked_fill(drop.scatter(1, order, drop), -float("inf"))
    return scores


def decode_simple(steps, B: int, s: Settings) -> list[list[int]]:
    """Greedy or sampling: one row per prompt; a finished row is padded until all are done."""
    logits = steps.first()
    done = torch.zeros(B, dtype=torch.bool, device=logits.device)
    chosen = []
    for step in range(s.max_new_tokens):
        scores = process(logits.float(), steps.history, step, s)
        if s.strategy == "greedy":
            token = scores.argmax(-1)
        else:
            p = warp(scores, s).softmax(-1)
            token = torch.multinomial(p.cpu() if s.generator is not None and s.generator.device.type == "cpu" else p, 1,
                                      generator=s.generator).squeeze(1).to(p.device)
        if s.end_id is not None:
            token = token.masked_fill(done, s.end_id)
            done = done | (token == s.end_id)
        chosen.append(token)
        if bool(done.all()) or step == s.max_new_tokens - 1:
            break
        logits = steps.next(token)
    return trim(torch.stack(chosen, 1), s.end_id)


def decode_beam(steps, B: int, s: Settings) -> list[list[int]]:
    """Beam search as transformers runs it (see the file docstring); returns each prompt's best finished beam."""
    K, n = s.num_beams, s.max_new_tokens
    logits = steps.first()
    device, V = logits.device, logits.shape[-1]
    running = torch.zeros(B, K, 0, dtype=torch.long, device=device)  # [B, K, t] generated tokens of the live beams
    running_scores = torch.full((B, K), NEG, device=device)
    running_scores[:, 0] = 0.0  # all K rows start equal: only the first may expand at step 0
    finished = torch.zeros(B, K, n, dtype=torch.long, device=device)  # [B, K, n] the K best finished, end-padded
    finished_scores = torch.full((B, K), NEG, device=device)
    is_finished = torch.zeros(B, K, dtype=torch.bool, device=device)
    improvable = torch.ones(B, 1, dtype=torch.bool, device=device)  # may a running beam still beat the finished?
    top_k_mask = torch.arange(2 * K, device=device) < K  # only the K best continuations may finish
    for step in range(n):
        logp = process(logits.float().log_softmax(-1), steps.history, step, s)  # [R, V]
        total = (logp.view(B, K, V) + running_scores[..., None]).view(B, K * V)
        cand_scores, cand = total.topk(2 * K)  # [B, 2K]
        parent, token = cand // V, cand % V
        cand_seqs = torch.cat((running.gather(1, parent[..., None].expand(-1, -1, step)), token[..., None]), 2)  # [B, 2K, t + 1]
        ends = (token == s.end_id) if s.end_id is not None else torch.zeros_like(token, dtype=torch.bool)
        ends = ends | (step == n - 1)  # the length limit ends every continuation
        # the K best continuations that did not end run on
        live = (cand_scores + ends.float() * NEG).topk(K).indices  # [B, K]
        running, running_scores = cand_seqs.gather(1, live[..., None].expand(-1, -1, step + 1)), (cand_scores + ends.float() * NEG).gather(1, live)
        # those that ended, ranked in the top K, join the finished if they beat its worst
        normed = cand_scores / (step + 1) ** s.length_penalty + (~(ends & top_k_mask) | ~improvable).float() * NEG
        padded = torch.nn.functional.pad(cand_seqs, (0, n - step - 1), value=s.end_id if s.end_id is not None else 0)
        merged = torch.cat((finished_scores, normed), 1).topk(K).indices  # [B, K] among 3K
        finished = torch.cat((finished, padded), 1).gather(1, merged[..., None].expand(-1, -1, n))
        finished_scores = torch.cat((finished_scores, normed), 1).gather(1, merged)
        is_finished = torch.cat((is_finished, ends & top_k_mask), 1).gather(1, merged)
        best_running = running_scores[:, :1] / (step + 1) ** s.length_penalty
        worst_finished = torch.where(is_finished, finished_scores.min(1, keepdim=True).values, torch.full_like(finished_scores, NEG))
        improvable = improvable & (best_running > worst_finished).any(1, keepdim=True)
        if step == n - 1 or not bool(improvable.any()):
            break
        rows = (torch.arange(B, device=device)[:, None] * K + parent.gather(1, live)).flatten()  # each live beam's parent row
        steps.reorder(rows)
        logits = steps.next(running[:, :, -1].flatten())
    return trim(finished[:, 0], s.end_id)


def trim(tokens: torch.Tensor, end_id: int | None) -> list[list[int]]:
    """[B, L] -> each row up to and including its first end token."""
    out = []
    for row in tokens.tolist():
        out.append(row[: row.index(end_id) + 1] if end_id is not None and end_id in row else row)
    return out


@torch.no_grad()
def generate(
    model,
    prompt: list[int] | list[list[int]] | torch.Tensor,
    max_new_tokens: int = 32,
    strategy: str = "greedy",
    end_id: int | None = None,
    top_k: int = 10,
    temperature: float = 1.0,
    num_beams: int = 4,
    length_penalty: float = 1.0,
    generator: torch.Generator | None = None,
    *,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    min_new_tokens: int = 0,
    use_cache: bool = True,
) -> list[int] | list[list[int]]:
    """The generated token ids (without the prompt; ending with the end token if it was produced).

    model: a CausalLM, a Seq2SeqLM (the prompt is the source), or a BertForMaskedLM whose attention_mode is
        "causal" or "unilm".
    prompt: token ids, or a batch of them (a list of lists, lengths may differ): then a list per prompt.
    strategy: "greedy"; "sample" draws from the distribution at `temperature`, cut to the top_k tokens
        (0: all) and to the top_p share of the probability; "topk" is "sample" with top_k; "beam" keeps
        num_beams hypotheses and returns the one with the best log-probability / length**length_penalty.
    end_id: the end token (default: the config's eos_token_id for decoders and encoder-decoders).
    min_new_tokens: the end token is forbidden before this many tokens; repetition_penalty > 1 discourages
        tokens the row already holds (CTRL's penalty, as transformers applies it).
    Decoding stops at max_new_tokens or when the positions the model covers run out.
    """
    batched = isinstance(prompt, list | tuple) and len(prompt) > 0 and all(isinstance(p, list | tuple | torch.Tensor) for p in prompt)
    prompts = [torch.as_tensor(p, dtype=torch.long).flatten().tolist() for p in (prompt if batched else [prompt])]
    c = model.config
    generative = c.is_decoder or c.is_encoder_decoder
    if end_id is None and generative:
        end_id = c.eos_token_id
    s = Settings(max_new_tokens, strategy, end_id, top_k if strategy in ("sample", "topk") else 0, top_p, temperature,
                 repetition_penalty, min_new_tokens, num_beams, length_penalty, generator)
    check(model, prompts, s)
    s.max_new_tokens = min(max_new_tokens, room(model, prompts))
    model.eval()
    decode = decode_beam if strategy == "beam" else decode_simple
    K = num_beams if strategy == "beam" else 1
    start = c.decoder_start_token_id
    if c.is_encoder_decoder and start is None:
        raise BertkitError(f"the {c.model_type} config has no decoder_start_token_id: set it to the token its decoder starts with.")
    out = decode(Steps(model, prompts, K, use_cache, start), len(prompts), s)
    return out if batched else out[0]


def check(model, prompts: list[list[int]], s: Settings) -> None:
    """One sentence for each request generation cannot serve."""
    c = model.config
    if not (c.is_decoder or c.is_encoder_decoder) and c.attention_mode not in ("causal", "unilm"):
        raise BertkitError(f"generation needs attention_mode 'causal' or 'unilm', not {c.attention_mode!r}: a bidirectional model sees the future it should predict.")
    if s.strategy not in STRATEGIES:
        raise BertkitError(f"strategy {s.strategy!r} is not one of {', '.join(STRATEGIES)}.")
    if any(len(p) == 0 for p in prompts):
        raise BertkitError("the prompt is empty; give at least one token (e.g. [CLS] or the start-of-text token).")
    if not isinstance(s.max_new_tokens, int) or s.max_new_tokens < 1:
        raise BertkitError(f"max_new_tokens must be at least 1, not {s.max_new_tokens!r}.")
    if s.end_id is not None and not 0 <= s.end_id < c.vocab_size:
        raise BertkitError(f"the end token {s.end_id} is outside the model's {c.vocab_size}-token vocabulary.")
    bad = [t for p in prompts for t in p if not 0 <= t < c.vocab_size]
    if bad:
        raise BertkitError(f"the prompt holds token {bad[0]}, outside the model's {c.vocab_size}-token vocabulary.")
    for name, v, low in (("num_beams", s.num_beams, 1), ("top_k", s.top_k, 0), ("min_new_tokens", s.min_new_tokens, 0)):
        if not isinstance(v, int) or v < low:
            raise BertkitError(f"{name} must be a whole number of at least {low}, not {v!r}.")
    if not 0 < s.top_p <= 1 or s.temperature <= 0 or s.repetition_penalty <= 0:
        raise BertkitError("top_p must be in (0, 1], temperature and repetition_penalty above 0.")
    longest = max(len(p) for p in prompts)
    limit = c.max_length
    if longest > limit or (not c.is_encoder_decoder and longest >= limit):
        raise BertkitError(f"the prompt has {longest} tokens, leaving no room under the model's maximum of {limit}.")


def room(model, prompts: list[list[int]]) -> int:
    """How many tokens fit after the prompt: the decoder's positions (an encoder-decoder's decoder starts
    with one token of its own; T5's relative positions have no end)."""
    c = model.config
    if c.is_encoder_decoder:
        return 10**9 if c.position_embedding_type == "bucketed" else c.max_position_embeddings - 1
    return c.max_length - max(len(p) for p in prompts)
