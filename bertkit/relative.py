"""NEZHA's attention on the backbone's parts (Wei et al. 2019, "NEZHA: Neural Contextualized Representation for
Chinese Language Understanding", arXiv:1909.00204, section 3.2): no position table in the embeddings; a fixed sinusoid
of the clipped distance j - i joins the keys and the values inside attention. The block is BERT's `Layer`;
`model.parts_of` imports this module for model_type "nezha" (its record's `compute`).

Shape legend as in model.py: B batch, N heads, T queries, S keys (with a cache, S = past + T), D head size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .model import Attention, FamilyParts, register_family


class RelativeAttention(Attention):
    """NEZHA: a_ij, a fixed sinusoid of the clipped distance j - i, joins the keys and the values.

    scores_ij = q_i . (k_j + a_ij) / sqrt(D);  y_i = sum_j p_ij (v_j + a_ij). No SDPA: it cannot
    add the a_ij term to the values.
    """

    def attend(self, q, k, v, mask, pos):  # pos: the [S, S, D] table; the T queries are the last T positions
        T = q.shape[2]
        if pos.shape[0] != T:  # with a cache: the new queries' rows (no slice at all otherwise: traced graphs keep it dynamic)
            pos = pos[-T:]
        pos = pos.to(q.dtype)  # [T, S, D]
        scores = (q @ k.transpose(-1, -2) + torch.einsum("bntd,tsd->bnts", q, pos)) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        p = F.dropout(scores.softmax(-1), self.p_drop, self.training)  # [B, N, T, T]
        return p @ v + torch.einsum("bnts,tsd->bntd", p, pos)


def relative_table(T: int, D: int, max_distance: int, device) -> torch.Tensor:
    """NEZHA's a_ij [T, T, D]: the sinusoid of row (clip(j - i, -K, K) + K), interleaved sin/cos,
    as in Huawei's code and transformers' former port (the row index, not the distance, is the angle)."""
    K = max_distance
    w = 10000.0 ** (-torch.arange(0, D, 2, dtype=torch.float64, device=device) / D)  # [D/2]
    angles = torch.arange(2 * K + 1, dtype=torch.float64, device=device)[:, None] * w  # [2K+1, D/2]
    table = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1).float()  # [2K+1, D]: sin, cos, sin, ...
    i = torch.arange(T, device=device)
    return table[(i[None, :] - i[:, None]).clamp(-K, K) + K]  # [T, T, D]


def positions(backbone, S: int, device):  # -> [S, S, D]
    c = backbone.config
    return relative_table(S, c.head_size, c.max_relative_position, device)


register_family("nezha", FamilyParts(attention=RelativeAttention, positions=positions))
