"""RoFormer's attention on the backbone's parts (Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position
Embedding", arXiv:2104.09864): no position table in the embeddings; q and k (and v with `rotary_value`) rotated by
position in every layer, so q . k depends on i - j only. The sinusoids are a frozen weight (`rotary.weight`), as in
its checkpoints and parameter counts. The block is BERT's `Layer`; `model.parts_of` imports this module for
model_type "roformer" (its record's `compute`).

Shape legend as in model.py: B batch, N heads, T queries, S keys (with a cache, S = past + T), D head size.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import BertConfig
from .model import Attention, FamilyParts, register_family


def sinusoids(n: int, dim: int) -> torch.Tensor:
    """[n, dim]: row p is [sin(p w_0) .. sin(p w_{dim/2-1}) | cos(p w_0) ..] with w_i = 10000^(-2i/dim)."""
    w = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # [dim/2]
    angles = torch.arange(n, dtype=torch.float64)[:, None] * w  # [n, dim/2]
    return torch.cat((angles.sin(), angles.cos()), dim=1).float()


class RotaryTable(nn.Module):
    """RoFormer's sinusoid table [P, D], a frozen weight as in its checkpoints (and parameter counts)."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.weight = nn.Parameter(sinusoids(c.max_position_embeddings, c.head_size), requires_grad=False)

    def forward(self, T: int):  # -> (sin, cos), each [T, D/2]
        return self.weight[:T].chunk(2, dim=-1)


def rotate(x, sin, cos):
    """Rotate each pair (x[2i], x[2i+1]) by its angle: x [B, N, T, D]; sin, cos [T, D/2]."""
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


class RotaryAttention(Attention):
    """RoFormer: q and k (and v if asked) rotated by position, so q.k depends on i - j only."""

    def __init__(self, c: BertConfig):
        super().__init__(c)
        self.rotary_value = c.rotary_value

    def attend(self, q, k, v, mask, pos):  # pos: (sin, cos), each [S, D/2]; the T queries are the last T positions
        sin, cos = pos
        T = q.shape[2]
        qsin, qcos = (sin, cos) if sin.shape[0] == T else (sin[-T:], cos[-T:])  # with a cache: the new queries' rows
        q, k = rotate(q, qsin, qcos), rotate(k, sin, cos)  # cached keys are kept unrotated: rotated here
        return super().attend(q, k, rotate(v, sin, cos) if self.rotary_value else v, mask, pos)


def positions(backbone, S: int, device):  # -> (sin, cos), each [S, D/2]
    return backbone.rotary(S)


register_family("roformer", FamilyParts(attention=RotaryAttention, modules=lambda c: {"rotary": RotaryTable(c)}, positions=positions))
