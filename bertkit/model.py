"""The one BERT backbone: embeddings, masked multi-head self-attention, feed-forward, post-LN
blocks, pooler. Every family member is this code plus a few visible switches in BertConfig.

Reference: Devlin et al. 2018, "BERT: Pre-training of Deep Bidirectional Transformers"
(arXiv:1810.04805), and Google's `modeling.py`; Vaswani et al. 2017 for the block.

Shape legend, used in the comments below:
    B batch, T sequence length, H hidden size, N heads, D = H / N head size,
    F intermediate (FFN) size, E embedding size (= H unless factorised), P max positions.

Where the family differs (the switches, each a few lines; key names live in weights.py):
    - RoBERTa: positions count from pad_token_id + 1, padding gets pad_token_id (`padding_positions`).
    - ALBERT: factorised embeddings projected E -> H (`Embeddings.project`), and layers sharing
      the weights of `num_hidden_groups` groups (`config.layer_schedule`).
    - ELECTRA: the E -> H projection when E != H; no pooler.
    - DistilBERT: no segment embedding (`type_vocab_size == 0`); no pooler.
    - RoFormer, NEZHA, ModernBERT, DeBERTa: their own attention (or block) in a module of their own
      (rotary.py, relative.py, modern.py, deberta.py), registered as `FamilyParts` and imported by name
      the first time a model of theirs is built (`parts_of`, from the member's record).
    - Any member: `config.attention_mode` bidirectional (BERT), causal (GPT), unilm (seq2seq),
      see `build_mask`; in causal and unilm mode a `Cache` of each layer's keys and values lets a
      generation step feed only the new tokens (generate.py).

The fast path, on by default where it gives the reference path's numbers (tests/test_fastpath.py):
    - Packing (`Packed`, `BertModel.unpad`): a right-padded bidirectional batch with >= 10% padding
      runs as its real tokens only, [sum of lengths, H]: embeddings, every Linear, LayerNorm and
      GELU see no padding; attention views the sequences in at most MAX_BUCKETS buckets of similar
      lengths (one SDPA call each, so the calls per layer do not grow with the batch), or runs as one
      variable-length FlashAttention call on CUDA in half precision; the states are put back in
      [B, T, H] at the end (zeros at padding). Cost follows real tokens, not the padded shape.
      A batch without padding runs without a mask (found from the same lengths, read once per forward).
    - q, k and v are one stored parameter `attn.qkv` [3H, H] (one matmul: 6% faster than three in bf16
      at batch 1 on 2 CPU cores, equal elsewhere; no cache to go stale); checkpoints keep their three
      weights, stacked and split at the border (weights.py).
    - The pooler runs only when `pooler_output` is read; the MLM head computes logits only at
      labelled positions when given labels (heads.py).
    - bf16: `model.to(torch.bfloat16)`. torch's CPU kernels accumulate LayerNorm and the attention
      softmax in fp32; sentence pooling casts to fp32 first.
    - `BertModel.checkpointing`: recompute each layer in backward (training long sequences).

Why ~580 lines: the backbone's parts (embeddings, attention with its packed and explicit CPU paths, FFN, layer, pooler),
the masks, the key/value cache and BertModel; the packing plan is packing.py, the memory check memory.py, and the
members whose compute differs have modules of their own (rotary.py, relative.py, modern.py, deberta.py).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import families
from .checkpoint import PretrainedMixin
from .config import BertConfig
from .errors import BertkitError
from .memory import check_fits
from .packing import NO_PADDING, Packed


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


# config.hidden_act -> function. "gelu" is the exact erf form Google's BERT uses.
ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_fast": gelu_tanh,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


BIGRAM_PRIME = 2_147_483_647  # 2^31 - 1: pair numbers are hashed modulo this prime, then into the table's rows


def bigram_ids(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, vocab_size: int, buckets: int) -> torch.Tensor:
    """[B, T] token ids -> [B, T] rows of the bigram table: the pair (this token, the next real one), the last real
    token paired with "end" (id vocab_size). Padding never enters a pair, so a text's rows do not depend on its batch."""
    nxt = F.pad(input_ids[:, 1:], (0, 1), value=vocab_size)
    if attention_mask is not None:
        real_next = F.pad(attention_mask[:, 1:].bool(), (0, 1), value=False)
        nxt = torch.where(real_next, nxt, vocab_size)
    pair = input_ids.long() * (vocab_size + 1) + nxt.long()  # times 40503 stays exact in int64 below ~10M tokens
    return (pair * 40_503 + 12_345) % BIGRAM_PRIME % buckets


class Embeddings(nn.Module):
    """word + segment + position, then LayerNorm and dropout (and E -> H if factorised)."""

    def __init__(self, c: BertConfig):
        super().__init__()
        E = c.embed_size
        self.word = nn.Embedding(c.vocab_size, E, padding_idx=c.pad_token_id)
        self.segment = nn.Embedding(c.type_vocab_size, E) if c.type_vocab_size > 0 else None
        pad = c.pad_token_id if c.positions_after_padding else None  # RoBERTa's padding position
        self.position = nn.Embedding(c.max_position_embeddings, E, padding_idx=pad) if c.has_position_table else None
        self.task = nn.Embedding(c.task_types, E) if c.task_types else None  # ERNIE 3.0's task type (row 0 by default)
        self.bigram = nn.Embedding(c.bigram_buckets, E) if c.bigram_buckets else None  # bertkit's hashed bigrams (bigram_ids)
        modern = c.model_type == "modernbert"
        # DeBERTa projects E -> H (no bias) before its norm; ALBERT and ELECTRA after it
        self.project_first = c.model_type == "deberta-v2"
        width = c.hidden_size if self.project_first else E
        self.norm = nn.LayerNorm(width, eps=c.layer_norm_eps, bias=c.modern.norm_bias if modern else True)
        self.drop = nn.Dropout(c.modern.embedding_dropout if modern else c.hidden_dropout_prob)
        self.project = nn.Linear(E, c.hidden_size, bias=not self.project_first) if c.has_projection else None

    def forward(self, input_ids, token_type_ids, position_ids, bigrams=None):  # [B, T] each -> [B, T, H]
        x = self.word(input_ids)
        if self.bigram is not None:
            x = x + self.bigram(bigrams)
        if self.segment is not None:
            x = x + self.segment(token_type_ids)
        if self.position is not None:
            x = x + self.position(position_ids)
        if self.task is not None:  # transformers' ERNIE adds task type 0 when it is given no task_type_ids
            x = x + self.task.weight[0]
        if self.project_first and self.project is not None:
            return self.drop(self.norm(self.project(x)))
        x = self.drop(self.norm(x))
        return self.project(x) if self.project is not None else x


class Attention(nn.Module):
    """Multi-head self-attention through torch's fused scaled_dot_product_attention.

    Two layouts: a padded batch x [B, T, H] with a boolean mask (see build_mask), or the real
    tokens of a right-padded batch packed back to back, x [sum of lengths, H] with `Packed`
    bounds. Packed attention runs once per length bucket (at most MAX_BUCKETS per layer, whatever
    the batch size), or as one variable-length kernel call on CUDA.
    """

    def __init__(self, c: BertConfig):
        super().__init__()
        H = c.hidden_size
        self.n_heads = c.num_attention_heads
        # q, k and v as one stored [3H, H] matrix (one matmul; 6% faster than three in bf16 at batch 1, equal
        # elsewhere); checkpoints keep their three weights: weights.fuse_qkv / split_qkv stack and split them.
        self.qkv = nn.Linear(H, 3 * H)
        self.o = nn.Linear(H, H)
        self.p_drop = c.attention_probs_dropout_prob

    def forward(self, x, mask, pos=None, cache: LayerCache | None = None):
        q, k, v = (t.unflatten(-1, (self.n_heads, -1)) for t in self.qkv(x).chunk(3, dim=-1))  # [..., N, D] each
        if isinstance(mask, Packed):
            y = self.attend_packed(q, k, v, mask, pos)  # [sum L, N, D]
        else:
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, N, T, D]
            if cache is not None:  # the new tokens' keys and values join the cached ones: [B, N, S, D]
                k, v = cache.extend(k, v)
            y = self.attend(q, k, v, mask, pos).transpose(1, 2)  # [B, T, N, D]
        return self.o(y.flatten(-2))  # [..., H]

    def attend(self, q, k, v, mask, pos):  # q, k, v [B, N, T, D] -> [B, N, T, D]
        p_drop = self.p_drop if self.training else 0.0
        if p_drop == 0.0 and explicit_is_faster(q, k):
            return explicit_attention(q, k, v, mask)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p_drop)

    def attend_packed(self, q, k, v, packed: Packed, pos):  # q, k, v [sum L, N, D] -> [sum L, N, D]
        """Each bucket's sequences viewed padded [b, N, T_b, D] (padding slots repeat a real token and are
        masked as keys), attended in one call, and only the real rows kept: no loop over sequences."""
        if type(self).attend is Attention.attend and use_varlen(q, self.p_drop if self.training else 0.0):
            return varlen_kernel()(q, k, v, packed.starts, packed.starts, packed.longest, packed.longest)
        out = []
        for b in packed.buckets:
            qb, kb, vb = (t.index_select(0, b.gather).unflatten(0, (b.n, b.T)).transpose(1, 2) for t in (q, k, v))  # [b, N, T_b, D]
            y = self.attend(qb, kb, vb, b.keys, first(pos, b.T))
            out.append(y.transpose(1, 2).flatten(0, 1).index_select(0, b.rows))  # the real tokens, in packed order
        return torch.cat(out)


def use_varlen(q: torch.Tensor, p_drop: float) -> bool:
    """Whether the CUDA variable-length kernel can run this packed attention: CUDA, half precision, no dropout."""
    return q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and p_drop == 0.0 and varlen_kernel() is not None


@functools.cache
def varlen_kernel():
    """FlashAttention over packed sequences (CUDA only: one call for the whole batch), or None on an older torch.
    Imported on first use: the module pulls in torch's compiler stack (~1 s), which no CPU run needs."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


EXPLICIT_CHUNK = 2**19  # scores per chunk of explicit attention (2 MiB in fp32)
EXPLICIT_MAX_KEYS = 256  # CPU inference: up to this many keys, softmax(q k^T) v as three ops beats SDPA's kernel


def explicit_is_faster(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether to attend with explicit matmuls: CPU inference (no autograd) over at most EXPLICIT_MAX_KEYS keys.
    torch's fused CPU kernel tiles for long sequences; at 128 keys and D = 32 it ran 1.5x (fp32) to 2.5x
    (bf16) slower than two batched matmuls and a softmax (2 cores, AMD EPYC; at 512 keys it is 3x faster)."""
    return (q.device.type == "cpu" and k.shape[-2] <= EXPLICIT_MAX_KEYS and not torch.jit.is_tracing()
            and not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)))


def explicit_attention(q, k, v, mask):  # q [B, N, T, D], k, v [B, N, S, D], mask bool [B, 1|N, 1|T, S] -> [B, N, T, D]
    """softmax(q k^T / sqrt(D) + mask) v, the computation SDPA does, written out (fp32 softmax in bf16 too)."""
    B, N, T, S = *q.shape[:3], k.shape[2]
    rows = max(1, EXPLICIT_CHUNK // (N * T * S))  # sequences per chunk: its scores stay in the cache
    if rows < B:
        return torch.cat([explicit_attention(q[i:i + rows], k[i:i + rows], v[i:i + rows],
                                             None if mask is None else mask[i:i + rows] if mask.shape[0] > 1 else mask)
                          for i in range(0, B, rows)])
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)  # [B, N, T, S]
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return scores.float().softmax(-1).to(v.dtype) @ v


def first(pos, n: int):
    """The position information attention needs, cut to a bucket of n tokens (packed layout)."""
    if pos is None:
        return None
    if hasattr(pos, "cut"):  # DeBERTa's RelativePositions
        return pos.cut(n)
    if isinstance(pos, tuple):  # rotary (sin, cos), each [T, D/2]; ModernBERT's global and local pairs
        return tuple(p[:n] for p in pos)
    return pos[:n, :n]  # NEZHA's [S, S, D] table


class FeedForward(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.up = nn.Linear(c.hidden_size, c.intermediate_size)
        self.down = nn.Linear(c.intermediate_size, c.hidden_size)
        self.act = ACTIVATIONS[c.hidden_act]

    def forward(self, x):  # [B, T, H] -> [B, T, F] -> [B, T, H]
        return self.down(self.act(self.up(x)))


class Layer(nn.Module):
    """One post-LN transformer block: LayerNorm after each residual addition, as in BERT."""

    def __init__(self, c: BertConfig):
        super().__init__()
        own = parts_of(c.model_type)  # RoFormer, NEZHA, DeBERTa: the block is BERT's, its attention is not (rotary.py, ...)
        self.attn = own.attention(c) if own is not None and own.attention is not None else Attention(c)
        self.attn_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.ffn = FeedForward(c)
        self.ffn_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.drop = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, x, mask, pos=None, cache: LayerCache | None = None):
        x = self.attn_norm(x + self.drop(self.attn(x, mask, pos, cache)))
        return self.ffn_norm(x + self.drop(self.ffn(x)))


class Pooler(nn.Module):
    """tanh(W h_[CLS] + b): the sentence vector BERT's NSP head and classifiers read."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, h):  # [B, T, H] -> [B, H]
        return torch.tanh(self.dense(h[:, 0]))


def build_mask(attention_mask, token_type_ids, mode: str, T: int, device, cache: Cache | None = None) -> torch.Tensor | None:
    """The boolean mask SDPA takes (True = query may attend to key), or None for "attend everywhere".

    attention_mask [B, S]: 1 for real tokens, 0 for padding (keys at padding are never attended).
    mode "bidirectional": every token sees every real token (BERT).
    mode "causal": token i sees tokens j <= i (GPT).
    mode "unilm": segment 0 (source) sees the source; segment 1 (target) sees the source and
        the target up to itself (Dong et al. 2019). With c = cumsum(token_type_ids), i sees j iff
        c[j] <= c[i].
    With a cache, the T new tokens are queries at positions past .. past + T - 1 over all S = past + T keys,
    and the cache keeps every token's c (updated here).
    """
    # No branch on the mask's values (a compiled or exported graph cannot hold one): an all-ones mask is passed as is.
    keys = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
    if mode == "bidirectional":
        return keys  # [B, 1, 1, S]
    past = cache.length if cache is not None else 0
    i, j = torch.arange(past, past + T, device=device)[:, None], torch.arange(past + T, device=device)[None]  # query, key positions
    if mode == "causal":
        allowed = (j <= i)[None, None]  # [1, 1, T, S]
    else:
        c = token_type_ids.cumsum(dim=1)  # [B, T]
        if cache is not None:
            c = cache.count_segments(c)  # [B, S]: the cached tokens' counts, then the new ones' after them
        allowed = (c[:, None, :] <= c[:, -T:, None])[:, None]  # [B, 1, T, S]
    if keys is not None:
        # A padding query may see nothing else; it always sees itself so softmax stays finite.
        allowed = (allowed & keys) | (i == j)  # an identity ONNX can export (a bool EyeLike it cannot run)
    return allowed


def padding_positions(input_ids, pad: int) -> torch.Tensor:
    """RoBERTa's position ids: real tokens count from pad + 1, padding sits at pad. [B, T] -> [B, T]."""
    real = (input_ids != pad).long()
    return real.cumsum(1) * real + pad


@dataclass
class LayerCache:
    """One layer's keys and values so far (and, in a decoder of an encoder-decoder, its cross-attention's)."""

    k: torch.Tensor | None = None  # [B, N, S, D]
    v: torch.Tensor | None = None
    cross_k: torch.Tensor | None = None  # [B, N, S_enc, D], from the encoder's states once
    cross_v: torch.Tensor | None = None

    def extend(self, k, v):  # the new tokens' [B, N, T, D] -> all [B, N, S, D], kept
        if self.k is not None:
            k, v = torch.cat((self.k, k), dim=2), torch.cat((self.v, v), dim=2)
        self.k, self.v = k, v
        return k, v


@dataclass
class Cache:
    """Every layer's keys and values; each forward appends its new tokens' (in place). A generation step then
    feeds only the tokens just chosen (generate.py). segments: UniLM's running segment counts of every token."""

    layers: list[LayerCache]
    segments: torch.Tensor | None = None  # [B, S] cumsum of token_type_ids (unilm masks)

    @staticmethod
    def empty(n_layers: int) -> Cache:
        return Cache([LayerCache() for _ in range(n_layers)])

    @property
    def length(self) -> int:
        """Tokens the cache holds (the position of the next token)."""
        k = self.layers[0].k if self.layers else None
        return 0 if k is None else k.shape[2]

    def count_segments(self, c: torch.Tensor) -> torch.Tensor:  # the new tokens' counts [B, T] -> every token's [B, S]
        if self.segments is not None:
            c = torch.cat((self.segments, self.segments[:, -1:] + c), dim=1)
        self.segments = c
        return c

    def reorder(self, index: torch.Tensor) -> None:
        """Rows follow index (beam search: each surviving beam takes its parent's cache)."""
        for layer in self.layers:
            for name in ("k", "v", "cross_k", "cross_v"):
                t = getattr(layer, name)
                if t is not None:
                    setattr(layer, name, t.index_select(0, index))
        if self.segments is not None:
            self.segments = self.segments.index_select(0, index)


@dataclass(frozen=True)
class FamilyParts:
    """What a family member written in its own module gives the backbone; modern.py and deberta.py register theirs
    (`register_family`) when imported, which `parts_of` does by name the first time a model of theirs is built."""

    layer: object = None  # (config, index) -> a block, instead of Layer
    attention: object = None  # (config) -> Layer's attention, instead of the position type's
    modules: object = None  # (config) -> {name: module} the backbone holds (ModernBERT's rope and final_norm, DeBERTa's table)
    positions: object = None  # (backbone, length, device) -> what every layer's attention reads of positions


PARTS: dict[str, FamilyParts] = {}


def register_family(model_type: str, parts: FamilyParts) -> None:
    PARTS[model_type] = parts


def parts_of(model_type: str) -> FamilyParts | None:
    """The parts a member registers, its compute module (its record's `compute`) imported by name on first use, so
    neither `import bertkit` nor a BERT pays for the others; None for the members written in this file."""
    compute = families.member(model_type).compute
    if model_type not in PARTS and compute:
        importlib.import_module(f"bertkit.{compute}")
    return PARTS.get(model_type)


class BertOutput:
    """What BertModel returns. The pooler runs when pooler_output is first read: no work unless asked."""

    def __init__(self, last_hidden_state: torch.Tensor, pooler: nn.Module | None = None,
                 hidden_states: tuple[torch.Tensor, ...] | None = None, past_key_values: Cache | None = None):
        self.last_hidden_state = last_hidden_state  # [B, T, H]
        self.hidden_states = hidden_states  # embeddings + each layer, when asked
        self.past_key_values = past_key_values  # with use_cache (or a cache given): the updated cache
        self._pooler, self._pooled = pooler, None

    @property
    def pooler_output(self) -> torch.Tensor | None:  # [B, H], None when the model has no pooler
        if self._pooled is None and self._pooler is not None:
            h = self.last_hidden_state
            # read after a `with torch.inference_mode():` block, the states are inference tensors: pool them as inside it
            with torch.inference_mode() if h.is_inference() else contextlib.nullcontext():
                self._pooled = self._pooler(h)
        return self._pooled


class BertModel(PretrainedMixin, nn.Module):
    """The encoder of every family member: `BertModel.from_pretrained(dir)`."""

    is_backbone = True
    unpad = True  # the fast path: a padded batch runs as its real tokens only (False: the reference path)
    checkpointing = False  # activation checkpointing when training: recompute each layer in backward

    def __init__(self, config: BertConfig, add_pooler: bool = True):
        super().__init__()
        if config.is_decoder or config.is_encoder_decoder:
            raise BertkitError(f"BertModel builds encoders; a {config.model_type} config is a "
                               f"{'decoder: bertkit.CausalLM' if config.is_decoder else 'encoder-decoder: bertkit.Seq2SeqLM'} builds it.")
        check_fits(config, lambda: BertModel(config, add_pooler))  # before any tensor is built (memory.py)
        self.config = config
        self.embed = Embeddings(config)
        self.parts = parts_of(config.model_type) or FamilyParts()  # ModernBERT's and DeBERTa's own modules (registered)
        self.final_norm = None  # pre-norm stacks (ModernBERT) end with a norm
        for name, module in (self.parts.modules(config) if self.parts.modules else {}).items():
            setattr(self, name, module)  # e.g. ModernBERT's rope and final_norm, DeBERTa's relative table and its norm
        if self.parts.layer is not None:  # a block of the member's own (ModernBERT's pre-norm GeGLU block)
            self.layers = nn.ModuleList(self.parts.layer(config, i) for i in range(config.num_blocks))
        else:  # one block per layer, or (ALBERT) fewer blocks shared across layers: see config.layer_schedule
            self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_blocks))
        self.pooler = Pooler(config) if add_pooler and config.has_pooler else None
        self.apply(self.init_weights)
        if self.embed.bigram is not None:  # zeros: the model starts as the one without bigrams, and learns them
            nn.init.zeros_(self.embed.bigram.weight)

    def init_weights(self, m: nn.Module) -> None:
        """Truncation-free normal(0, initializer_range) init, as BERT's fresh weights."""
        std = self.config.initializer_range
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            nn.init.zeros_(m.weight[m.padding_idx])
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        past_key_values: Cache | None = None,
        use_cache: bool = False,
    ) -> BertOutput:
        """past_key_values / use_cache (causal and unilm modes): input_ids are the new tokens after the cached
        ones, attention_mask covers the cached and the new; the output carries the updated cache."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        (B, T), cache = input_ids.shape, self.cache_for(past_key_values, use_cache)
        past = cache.length if cache is not None else 0
        token_type_ids, position_ids = self.defaults(input_ids, token_type_ids, position_ids, past)
        inputs, mask, packed = self.route(input_ids, attention_mask, token_type_ids, position_ids, cache)
        x = self.embed(*inputs)  # [B, T, H] (or [sum L, H] packed)
        pos = self.positions(past, T, x)  # what attention needs to know of positions, once for all layers
        states = [x] if output_hidden_states else None
        x = self.blocks(x, mask, pos, cache, states)
        if self.final_norm is not None:  # pre-norm stacks end normalised (the hidden states are the blocks' outputs)
            x = self.final_norm(x)
        if packed is not None:
            x = packed.unpack(x, B, T)
            states = [packed.unpack(h, B, T) for h in states] if states is not None else None
        return BertOutput(x, self.pooler, tuple(states) if states is not None else None, cache)

    def defaults(self, input_ids, token_type_ids, position_ids, past: int):  # -> token_type_ids [B, T], position_ids [B|1, T]
        """Segment 0 and positions counted from the cached tokens (RoBERTa's from pad_token_id + 1) where not given."""
        c, T = self.config, input_ids.shape[1]
        if past + T > c.max_length:
            raise ValueError(f"input length {past + T} exceeds the model's maximum of {c.max_length} tokens")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if position_ids is None and c.positions_after_padding:
            position_ids = padding_positions(input_ids, c.pad_token_id) + past  # [B, T]
        elif position_ids is None:
            position_ids = torch.arange(past, past + T, device=input_ids.device)[None]  # [1, T]
        return token_type_ids, position_ids

    def route(self, input_ids, attention_mask, token_type_ids, position_ids, cache):
        """The embeddings' inputs and the layers' mask: packed (only the real tokens, [sum L] inputs and the Packed plan
        as the mask) where the fast path applies, else the padded [B, T] inputs and a boolean mask."""
        c, (B, T) = self.config, input_ids.shape
        packed = self.packing(attention_mask, position_ids) if cache is None else None
        if packed is NO_PADDING:  # nothing to mask (the eager fast path knows it from the lengths it read)
            packed, attention_mask = None, None
        bigrams = bigram_ids(input_ids, attention_mask, c.vocab_size, c.bigram_buckets) if c.bigram_buckets else None
        if packed is None:
            mask = build_mask(attention_mask, token_type_ids, c.attention_mode, T, input_ids.device, cache)
            return (input_ids, token_type_ids, position_ids, bigrams), mask, None
        i = packed.index
        position_ids = position_ids.expand(B, T).flatten()[i]
        bigrams = bigrams.flatten()[i] if bigrams is not None else None
        return (input_ids.flatten()[i], token_type_ids.flatten()[i], position_ids, bigrams), packed, packed

    def positions(self, past: int, T: int, x: torch.Tensor):
        """What every layer's attention reads of the S = past + T positions (the last T are the queries'), from the
        member's parts: RoFormer's (sin, cos), NEZHA's [S, S, D] table, ModernBERT's sin/cos pairs, DeBERTa's table;
        None where the positions are a table in the embeddings."""
        return self.parts.positions(self, past + T, x.device) if self.parts.positions is not None else None

    def blocks(self, x, mask, pos, cache: Cache | None, states: list | None):
        """The layers in their schedule (ALBERT's shared blocks run several times); each layer's output appended to
        `states` when kept; recomputed in backward with `checkpointing`."""
        n = 0  # layers run so far: the cache is kept per layer
        for blocks in self.config.layer_schedule():
            for i in blocks:
                if self.checkpointing and self.training and torch.is_grad_enabled():  # recompute in backward: less memory
                    x = torch.utils.checkpoint.checkpoint(self.layers[i], x, mask, pos, use_reentrant=False)
                else:
                    x = self.layers[i](x, mask, pos, cache.layers[n] if cache is not None else None)
                n += 1
            if states is not None:
                states.append(x)
        return x

    def cache_for(self, past_key_values, use_cache: bool) -> Cache | None:
        """The cache this call extends: the one given, a new one (use_cache), or none."""
        if past_key_values is None and not use_cache:
            return None
        if self.config.attention_mode == "bidirectional":
            raise BertkitError("a key/value cache needs attention_mode 'causal' or 'unilm': a bidirectional token's keys change with every new token.")
        if past_key_values is not None and not isinstance(past_key_values, Cache):
            raise BertkitError("past_key_values must be the Cache a previous call returned.")
        return past_key_values if past_key_values is not None else Cache.empty(sum(map(len, self.config.layer_schedule())))

    def packing(self, attention_mask, position_ids) -> Packed | str | None:
        """The fast path's packing of this batch (or NO_PADDING), when it applies and gives the reference path's result."""
        if not self.unpad or attention_mask is None or self.config.attention_mode != "bidirectional":
            return None
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or attention_mask.dim() != 2:
            return None  # packing reads the lengths on the host: a traced or compiled graph takes the padded path
        return Packed.of(attention_mask)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def mean_pool(h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the real tokens' vectors: [B, T, H], [B, T] -> [B, H] (sentence-transformers' pooling)."""
    m = attention_mask.to(h.dtype).unsqueeze(-1)  # [B, T, 1]
    return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)

