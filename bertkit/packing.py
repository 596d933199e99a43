"""The fast path's packing: a right-padded batch as its real tokens only, [sum of lengths, H], and the buckets of
similar lengths attention views them in (model.py's `Attention.attend_packed`, modern.py, deberta.py).

Built once per forward with one copy of the lengths to the host (`Packed.of`); the layers then run without host
synchronisation, and `Packed.unpack` puts the states back in [B, T, H] with zeros at padding. Shape legend as in
model.py: B batch, T length, H hidden size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Bucket:
    """Sequences of similar length in a packed batch, attended together as a padded [n, T] view."""

    n: int  # sequences
    T: int  # the longest of them
    gather: torch.Tensor  # [n * T] the packed token behind each slot of the view (padding slots repeat a real one)
    keys: torch.Tensor | None  # [n, 1, 1, T] key mask; None when the n sequences have one length
    rows: torch.Tensor  # [tokens of these sequences] the slot of each real token, in packed order


@dataclass
class Packed:
    """A right-padded batch as its real tokens only (the fast path): the layers see [sum of lengths, H].

    The sequences lie back to back, in order of length; attention views them in at most MAX_BUCKETS
    buckets of similar lengths. Built once per forward with one copy of the lengths to the host;
    the layers then run without host synchronisation.
    """

    index: torch.Tensor  # [sum L] where each packed token sits in the flattened [B * T] batch
    buckets: list[Bucket]
    starts: torch.Tensor  # [sequences + 1] int32: where each sequence starts among the packed tokens (varlen kernels)
    longest: int

    @staticmethod
    def of(attention_mask: torch.Tensor) -> Packed | str | None:
        """Packing for a batch worth it (padded, right-aligned, >= 10% padding); NO_PADDING for a batch
        without padding (it runs without a mask: SDPA's unmasked kernels are faster, 8% on bert-base bf16);
        else None (the padded path with its mask)."""
        keep = attention_mask.bool()
        B, T = keep.shape
        lengths, prefix = torch.stack((keep.sum(1), keep.cumprod(1).sum(1))).cpu()  # the one host synchronisation
        if int(lengths.sum()) == keep.numel():
            return NO_PADDING
        if int(lengths.sum()) >= UNPAD_BELOW * keep.numel() or not torch.equal(prefix, lengths):
            return None  # (almost) no padding, or padding not only at the right: the padded path
        order = [i for i in sorted(range(B), key=lambda i: int(lengths[i])) if lengths[i] > 0]  # shortest first; empty rows hold nothing
        n = lengths[order]  # [S]
        starts = torch.cat((torch.zeros(1, dtype=torch.long), n.cumsum(0)))  # [S + 1]
        index = torch.cat([i * T + torch.arange(int(lengths[i])) for i in order])
        buckets = []
        for part in bucket_plan(n.tolist(), MAX_BUCKETS):
            ln, Tb = n[part], int(n[part].max())
            t = torch.arange(Tb)
            real = t[None] < ln[:, None]  # [n, T_b]
            gather = starts[part][:, None] + torch.minimum(t[None], ln[:, None] - 1)  # padding slots repeat the last real token
            keys = None if bool(real.all()) else real[:, None, None, :]
            buckets.append(Bucket(len(part), Tb, gather.flatten(), keys, real.flatten().nonzero().squeeze(1)))
        dev = attention_mask.device
        moved = [Bucket(b.n, b.T, b.gather.to(dev), None if b.keys is None else b.keys.to(dev), b.rows.to(dev)) for b in buckets]
        return Packed(index.to(dev), moved, starts.to(dev, torch.int32), int(n.max()))

    def unpack(self, x: torch.Tensor, B: int, T: int) -> torch.Tensor:  # [sum L, H] -> [B, T, H], zeros at padding
        return x.new_zeros(B * T, x.shape[-1]).index_copy(0, self.index, x).view(B, T, -1)


def bucket_plan(lengths: list[int], k: int) -> list[torch.Tensor]:
    """Sorted lengths cut into at most k runs of consecutive sequences of equal counts (a DP that minimises the
    padded attention cost measured no faster on 2 CPU cores, within the noise of 5%)."""
    return list(torch.arange(len(lengths)).tensor_split(min(k, len(lengths))))


UNPAD_BELOW = 0.9  # pack a batch whose real tokens are fewer than this share of its padded shape
NO_PADDING = "no padding"  # Packed.of's answer for a batch whose mask is all ones
MAX_BUCKETS = 8  # attention calls per layer of a packed batch, at most: it does not grow with the batch size
