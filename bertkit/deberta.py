"""DeBERTa-v2 and v3's disentangled attention on the backbone's post-LN `Layer` (He et al. 2020, "DeBERTa: Decoding-
enhanced BERT with Disentangled Attention", arXiv:2006.03654; v3: He et al. 2021, arXiv:2111.09543).

The block is BERT's; only the attention scores differ. For queries q_i, keys k_j and a shared table of relative
position embeddings P (2 * span rows, LayerNorm'd where the config says "layer_norm"), with d(i, j) the log-bucketed
distance i - j shifted into 0 .. 2 * span - 1:

    score_ij = (q_i . k_j  +  q_i . Pk[d(i, j)]  +  k_j . Pq[d(j, i)]) / sqrt(D * (1 + terms))
               content->content  content->position ("c2p")  position->content ("p2c")

Pk and Pq are P through the layer's own key and query projections (`share_att_key`, v3) or through projections of
their own (`pos_k`, `pos_q`). The distance is bucketed as DeBERTa does: exact up to position_buckets / 2, logarithmic
beyond, up to max_relative_positions (`log_buckets`). No absolute positions unless the config has
`position_biased_input`. Where the rest lives: the table and its norm on the backbone (`BertModel.rel`,
`BertModel.rel_norm`), the embeddings' projection before their norm (`Embeddings.project_first`), the key names in
weights.py. transformers' MLM head for DeBERTa-v2 (the "legacy" one or lm_predictions) is BERT's head; the enhanced
mask decoder of the paper's pretraining is not part of transformers' model and not of this one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import BertConfig
from .model import Attention, FamilyParts, register_family


def log_buckets(rel: torch.Tensor, buckets: int, max_position: int) -> torch.Tensor:
    """DeBERTa's bucketed relative positions: exact within +-buckets/2, then log-spaced up to max_position."""
    sign = torch.sign(rel)
    mid = buckets // 2
    near = (rel < mid) & (rel > -mid)
    absolute = torch.where(near, torch.tensor(mid - 1).type_as(rel), rel.abs())
    log_pos = torch.ceil(torch.log(absolute / mid) / torch.log(torch.tensor((max_position - 1) / mid)) * (mid - 1)) + mid
    return torch.where(absolute <= mid, rel.type_as(log_pos), log_pos * sign).long()


def relative_index(T: int, buckets: int, farthest: int, device) -> torch.Tensor:
    """[T, T] bucketed i - j (position_buckets, max_relative_positions), as transformers' build_relative_position."""
    i = torch.arange(T, device=device)
    rel = i[:, None] - i[None, :]
    return log_buckets(rel, buckets, farthest) if buckets > 0 else rel


@dataclass
class RelativePositions:
    """What every layer's attention needs: the normalised table [2 * span, H] and the bucketed distances [T, T]."""

    table: torch.Tensor
    index: torch.Tensor

    def cut(self, n: int) -> RelativePositions:  # a length bucket of the packed path: its first n positions
        return RelativePositions(self.table, self.index[:n, :n])


class DisentangledAttention(Attention):
    def __init__(self, c: BertConfig):
        super().__init__(c)
        o = c.deberta
        self.span, self.terms, self.share = o.span, o.pos_att_type, o.share_att_key
        H = c.hidden_size
        self.pos_k = nn.Linear(H, H) if o.relative_attention and not self.share and "c2p" in self.terms else None
        self.pos_q = nn.Linear(H, H) if o.relative_attention and not self.share and "p2c" in self.terms else None
        self.relative = o.relative_attention
        self.p_drop_hidden = c.hidden_dropout_prob  # transformers' pos_dropout on the table

    def projected(self, table: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The table through the query and key projections: ([N, 2 span, D] or None) each."""
        if self.share:
            pq, pk, _ = self.qkv(table).chunk(3, dim=-1)
        else:
            pq = self.pos_q(table) if self.pos_q is not None else None
            pk = self.pos_k(table) if self.pos_k is not None else None
        return self.by_head(pq), self.by_head(pk)

    def by_head(self, t: torch.Tensor | None) -> torch.Tensor | None:  # [2 span, H] -> [N, 2 span, D]
        return None if t is None else t.unflatten(-1, (self.n_heads, -1)).transpose(0, 1)

    def attend(self, q, k, v, mask, pos):  # q, k, v [B, N, T, D]; pos: RelativePositions (None without relative_attention)
        factor = 1 + (len(self.terms) if self.relative else 0)
        scale = torch.sqrt(torch.tensor(q.shape[-1], dtype=torch.float) * factor).to(q.dtype)
        scores = q @ (k.transpose(-1, -2) / scale)  # [B, N, T, T], as transformers orders the division
        if self.relative:
            table = nn.functional.dropout(pos.table, self.p_drop_hidden, self.training)
            pq, pk = self.projected(table)
            span = self.span
            if "c2p" in self.terms:
                at = (pos.index + span).clamp(0, 2 * span - 1)  # [T, T]: query i, key j -> the row of d(i, j)
                c2p = (q @ pk.transpose(-1, -2)).gather(-1, at.expand(*q.shape[:2], -1, -1))
                scores = scores + c2p / scale
            if "p2c" in self.terms:
                at = (-pos.index + span).clamp(0, 2 * span - 1)  # [T, T]: key j, query i -> the row of d(i, j)
                p2c = (k @ pq.transpose(-1, -2)).gather(-1, at.expand(*k.shape[:2], -1, -1)).transpose(-1, -2)
                scores = scores + p2c / scale
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        p = nn.functional.dropout(scores.softmax(-1), self.p_drop, self.training)
        return p @ v


def relative_table(c: BertConfig) -> dict[str, nn.Module]:
    """The shared relative position embeddings [2 * span, H] (`rel`) and their LayerNorm (`rel_norm`, norm_rel_ebd
    "layer_norm"), held by the backbone."""
    o = c.deberta
    if not o.relative_attention:
        return {}
    parts = {"rel": nn.Embedding(2 * o.span, c.hidden_size)}
    parts["rel"].buckets, parts["rel"].farthest = o.position_buckets, o.max_relative_positions  # read by every forward
    if o.norm_rel_ebd:
        parts["rel_norm"] = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
    return parts


def positions(backbone, T: int, device) -> RelativePositions | None:
    if getattr(backbone, "rel", None) is None:
        return None
    rel, norm = backbone.rel, getattr(backbone, "rel_norm", None)
    return RelativePositions(rel.weight if norm is None else norm(rel.weight), relative_index(T, rel.buckets, rel.farthest, device))


register_family("deberta-v2", FamilyParts(attention=DisentangledAttention, modules=relative_table, positions=positions))
