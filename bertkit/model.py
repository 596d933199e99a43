"""The one BERT backbone: embeddings, masked multi-head self-attention, feed-forward, post-LN
blocks, pooler. Every family member is this code plus a few visible switches in BertConfig.

Reference: Devlin et al. 2018, "BERT: Pre-training of Deep Bidirectional Transformers"
(arXiv:1810.04805), and Google's `modeling.py`; Vaswani et al. 2017 for the block.

Shape legend, used in the comments below:
    B batch, T sequence length, H hidden size, N heads, D = H / N head size,
    F intermediate (FFN) size, E embedding size (= H unless factorised), P max positions.

Where the family differs (the switches, each a few lines):
    - `config.embedding_size` != H: factorised embeddings projected E -> H (ALBERT, ELECTRA).
    - `config.type_vocab_size == 0`: no segment embedding (RoBERTa-style, DistilBERT).
    - `config.position_embedding_type`: "absolute" learnt table (BERT); later "rotary", "relative".
    - `config.attention_mode`: bidirectional (BERT), causal (GPT), unilm (seq2seq), see `build_mask`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import PretrainedMixin
from .config import BertConfig


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


class Embeddings(nn.Module):
    """word + segment + position, then LayerNorm and dropout (and E -> H if factorised)."""

    def __init__(self, c: BertConfig):
        super().__init__()
        E = c.embed_size
        self.word = nn.Embedding(c.vocab_size, E, padding_idx=c.pad_token_id)
        self.segment = nn.Embedding(c.type_vocab_size, E) if c.type_vocab_size > 0 else None
        self.position = nn.Embedding(c.max_position_embeddings, E) if c.position_embedding_type == "absolute" else None
        self.norm = nn.LayerNorm(E, eps=c.layer_norm_eps)
        self.drop = nn.Dropout(c.hidden_dropout_prob)
        self.project = nn.Linear(E, c.hidden_size) if E != c.hidden_size else None  # ALBERT, ELECTRA

    def forward(self, input_ids, token_type_ids, position_ids):  # [B, T] each -> [B, T, H]
        x = self.word(input_ids)
        if self.segment is not None:
            x = x + self.segment(token_type_ids)
        if self.position is not None:
            x = x + self.position(position_ids)
        x = self.drop(self.norm(x))
        return self.project(x) if self.project is not None else x


class Attention(nn.Module):
    """Multi-head self-attention through torch's fused scaled_dot_product_attention."""

    def __init__(self, c: BertConfig):
        super().__init__()
        H = c.hidden_size
        self.n_heads = c.num_attention_heads
        self.q, self.k, self.v, self.o = (nn.Linear(H, H) for _ in range(4))
        self.p_drop = c.attention_probs_dropout_prob

    def forward(self, x, mask):  # x [B, T, H]; mask bool [B, 1, 1|T, T] (True = may attend) or None
        B, T, H = x.shape
        N, D = self.n_heads, H // self.n_heads
        q, k, v = (f(x).view(B, T, N, D).transpose(1, 2) for f in (self.q, self.k, self.v))  # [B, N, T, D]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.p_drop if self.training else 0.0)
        return self.o(y.transpose(1, 2).reshape(B, T, H))  # [B, T, H]


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
        self.attn = Attention(c)
        self.attn_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.ffn = FeedForward(c)
        self.ffn_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.drop = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, x, mask):
        x = self.attn_norm(x + self.drop(self.attn(x, mask)))
        return self.ffn_norm(x + self.drop(self.ffn(x)))


class Pooler(nn.Module):
    """tanh(W h_[CLS] + b): the sentence vector BERT's NSP head and classifiers read."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, h):  # [B, T, H] -> [B, H]
        return torch.tanh(self.dense(h[:, 0]))


def build_mask(attention_mask, token_type_ids, mode: str, T: int, device) -> torch.Tensor | None:
    """The boolean mask SDPA takes (True = query may attend to key), or None for "attend everywhere".

    attention_mask [B, T]: 1 for real tokens, 0 for padding (keys at padding are never attended).
    mode "bidirectional": every token sees every real token (BERT).
    mode "causal": token i sees tokens j <= i (GPT).
    mode "unilm": segment 0 (source) sees the source; segment 1 (target) sees the source and
        the target up to itself (Dong et al. 2019). With c = cumsum(token_type_ids), i sees j iff
        c[j] <= c[i].
    """
    keys = None if attention_mask is None or bool(attention_mask.all()) else attention_mask.bool()[:, None, None, :]
    if mode == "bidirectional":
        return keys  # [B, 1, 1, T]
    if mode == "causal":
        allowed = torch.ones(T, T, dtype=torch.bool, device=device).tril()[None, None]  # [1, 1, T, T]
    else:
        c = token_type_ids.cumsum(dim=1)  # [B, T]
        allowed = (c[:, None, :] <= c[:, :, None])[:, None]  # [B, 1, T, T]
    if keys is not None:
        # A padding query may see nothing else; it always sees itself so softmax stays finite.
        allowed = (allowed & keys) | torch.eye(T, dtype=torch.bool, device=device)
    return allowed


@dataclass
class BertOutput:
    last_hidden_state: torch.Tensor  # [B, T, H]
    pooler_output: torch.Tensor | None  # [B, H], None when the model has no pooler
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings + each layer, when asked


class BertModel(PretrainedMixin, nn.Module):
    """The encoder of every family member: `BertModel.from_pretrained(dir)`."""

    is_backbone = True

    def __init__(self, config: BertConfig, add_pooler: bool = True):
        super().__init__()
        self.config = config
        self.embed = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.pooler = Pooler(config) if add_pooler else None
        self.apply(self.init_weights)

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
            nn.init.zeros_(m.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> BertOutput:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        if T > self.config.max_position_embeddings and self.embed.position is not None:
            raise ValueError(f"input length {T} exceeds max_position_embeddings {self.config.max_position_embeddings}")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device)[None]  # [1, T]
        mask = build_mask(attention_mask, token_type_ids, self.config.attention_mode, T, input_ids.device)
        x = self.embed(input_ids, token_type_ids, position_ids)  # [B, T, H]
        states = [x]
        for layer in self.layers:
            x = layer(x, mask)
            states.append(x)
        pooled = self.pooler(x) if self.pooler is not None else None
        return BertOutput(x, pooled, tuple(states) if output_hidden_states else None)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def mean_pool(h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the real tokens' vectors: [B, T, H], [B, T] -> [B, H] (sentence-transformers' pooling)."""
    m = attention_mask.to(h.dtype).unsqueeze(-1)  # [B, T, 1]
    return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)

