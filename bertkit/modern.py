"""ModernBERT's block on the backbone's parts (Warner et al. 2024, "Smarter, Better, Faster, Longer", arXiv:2412.13663).

Where it differs from BERT's post-LN `Layer`, and where each difference lives here:
    - pre-norm: x + f(norm(x)) for attention and the FFN; the first block has no attention norm (its input is the
      embedding LayerNorm's output) and `BertModel.final_norm` closes the stack;
    - no biases in the linear layers and LayerNorms (`norm_bias`, `attention_bias`, `mlp_bias` in its config);
    - GeGLU FFN: Wi maps H -> 2F, the first half activated times the second (`GatedFeedForward`);
    - rotary positions that rotate the two halves of each head (GPT-NeoX's layout, `rotate_halves`; RoFormer rotates
      neighbouring pairs), with one base for the global layers and another for the local ones (`Rope`), and no table
      in the checkpoint;
    - alternating attention: every layer but each `global_attn_every_n_layers`-th sees only keys within
      local_attention / 2 positions of the query (`ModernAttention.window`).
The rest is the backbone's: the packed fast path (padding stripped once before the embeddings, put back once at the
end), the length buckets, explicit CPU attention, the oneDNN kernels.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import BertConfig
from .model import ACTIVATIONS, Attention, FamilyParts, register_family


class Rope(nn.Module):
    """sin and cos of every position for the global and the local base: (global sin, cos, local sin, cos), each [T, D/2].
    The inverse frequencies are buffers outside the state dict (ModernBERT's checkpoints hold none)."""

    def __init__(self, c: BertConfig):
        super().__init__()
        D = c.head_size
        for name, base in (("global_freq", c.modern.global_theta), ("local_freq", c.modern.local_theta)):
            # computed as transformers does (float32 powers), so the angles agree to the bit
            self.register_buffer(name, 1.0 / (base ** (torch.arange(0, D, 2, dtype=torch.float) / D)), persistent=False)

    def forward(self, T: int, device) -> tuple[torch.Tensor, ...]:
        t = torch.arange(T, device=device, dtype=torch.float)[:, None]
        out = []
        for freq in (self.global_freq, self.local_freq):
            angles = t * freq.to(device)  # [T, D/2]
            out += [angles.sin(), angles.cos()]
        return tuple(out)


def rotate_halves(x, sin, cos):
    """Rotate each pair (x[i], x[i + D/2]) by its angle, in fp32: x [B, N, T, D]; sin, cos [T, D/2]."""
    a, b = x.float().chunk(2, dim=-1)
    return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1).to(x.dtype)


class ModernAttention(Attention):
    """Self-attention with rotary positions on q and k; in a local layer, keys farther than `window` are masked."""

    def __init__(self, c: BertConfig, layer: int):
        nn.Module.__init__(self)
        H, m = c.hidden_size, c.modern
        self.n_heads = c.num_attention_heads
        self.qkv = nn.Linear(H, 3 * H, bias=m.attention_bias)  # transformers' Wqkv: already q, k, v stacked
        self.o = nn.Linear(H, H, bias=m.attention_bias)
        self.p_drop = c.attention_probs_dropout_prob
        self.is_global = m.global_layers[layer]
        self.window = None if self.is_global else m.local_attention // 2

    def attend(self, q, k, v, mask, pos):  # pos: (global sin, cos, local sin, cos), each [T, D/2]
        sin, cos = pos[:2] if self.is_global else pos[2:]
        q, k = rotate_halves(q, sin, cos), rotate_halves(k, sin, cos)
        if self.window is not None:
            T, S = q.shape[-2], k.shape[-2]
            i, j = torch.arange(T, device=q.device)[:, None], torch.arange(S, device=q.device)[None]
            near = ((i - j).abs() <= self.window)[None, None]  # [1, 1, T, S]
            # a query keeps itself, so a padding query past every real key still has a finite softmax
            mask = near if mask is None else (mask & near) | (i == j)[None, None]
        return super().attend(q, k, v, mask, pos)


class GatedFeedForward(nn.Module):
    """GeGLU: Wo(act(a) * g) with [a, g] = Wi x (Shazeer 2020)."""

    def __init__(self, c: BertConfig):
        super().__init__()
        bias = c.modern.mlp_bias
        self.up = nn.Linear(c.hidden_size, 2 * c.intermediate_size, bias=bias)
        self.down = nn.Linear(c.intermediate_size, c.hidden_size, bias=bias)
        self.act = ACTIVATIONS[c.hidden_act]
        self.drop = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, x):  # [..., H] -> [..., 2F] -> [..., F] -> [..., H]
        a, g = self.up(x).chunk(2, dim=-1)
        return self.down(self.drop(self.act(a) * g))


class ModernLayer(nn.Module):
    """One pre-norm block: x + attn(norm(x)), then x + ffn(norm(x)); block 0 has no attention norm."""

    def __init__(self, c: BertConfig, layer: int):
        super().__init__()
        m = c.modern
        self.attn_norm = None if layer == 0 else nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps, bias=m.norm_bias)
        self.attn = ModernAttention(c, layer)
        self.attn_drop = nn.Dropout(c.attention_probs_dropout_prob)  # transformers' out_drop, after Wo
        self.ffn_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps, bias=m.norm_bias)
        self.ffn = GatedFeedForward(c)

    def forward(self, x, mask, pos=None, cache=None):
        h = x if self.attn_norm is None else self.attn_norm(x)
        x = x + self.attn_drop(self.attn(h, mask, pos, cache))
        return x + self.ffn(self.ffn_norm(x))


def final_norm(c: BertConfig) -> nn.LayerNorm:
    return nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps, bias=c.modern.norm_bias)


def norm_like(c: BertConfig, width: int) -> nn.LayerNorm:
    """A LayerNorm as the family builds them (ModernBERT's without a bias unless its config says so)."""
    bias = c.modern.norm_bias if c.model_type == "modernbert" else True
    return nn.LayerNorm(width, eps=c.layer_norm_eps, bias=bias)


register_family("modernbert", FamilyParts(
    layer=ModernLayer,
    modules=lambda c: {"rope": Rope(c), "final_norm": final_norm(c)},
    positions=lambda backbone, T, device: backbone.rope(T, device),  # (global sin, cos, local sin, cos)
))

__all__ = ["GatedFeedForward", "ModernAttention", "ModernLayer", "Rope", "final_norm", "norm_like", "rotate_halves"]
