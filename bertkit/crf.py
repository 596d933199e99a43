"""Linear-chain conditional random field: the sequence-level loss and the Viterbi decoder a
tagging head (NER, chunking, POS) puts on top of BERT's per-token emission scores.

A tag path y_1..y_n of a sequence of n tokens scores
    s(y) = start[y_1] + sum_t emit[t, y_t] + sum_{t>1} trans[y_{t-1}, y_t] + end[y_n]
and p(y | x) = exp s(y) / Z, with Z summing exp s over all K^n paths. Training minimises
-log p(gold) = log Z - s(gold). The forward algorithm gets log Z in O(n K^2) by keeping, per
tag, the log-sum over all paths ending there; Viterbi is the same loop with max for logsumexp.

Hard constraints (`Allowed`, built for BIO/BIOES by `bio_constraints`) pin forbidden starts,
transitions and ends to FORBIDDEN in both the loss and the decoder, so no path using one
carries probability and Viterbi never returns one.

References: Lafferty, McCallum & Pereira 2001, "Conditional Random Fields"; Lample et al. 2016,
"Neural Architectures for Named Entity Recognition" (arXiv:1603.01360), section 2.2.

Shape legend: B batch, T padded length, K tags. Masks are bool [B, T], True on real tokens and
left-aligned (each row True..True False..False, at least one True). Everything is computed in
fp32 whatever the emissions' dtype: bf16 sums over a long path lose the small differences.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .errors import BertkitError

# A forbidden step's score. exp(-1e4) is exactly 0 in fp32, and unlike -inf it can never
# produce inf - inf = nan (in logsumexp or in gradients) when every option is forbidden.
FORBIDDEN = -1e4


class Allowed(NamedTuple):
    """Hard constraints on tag paths, True = allowed."""

    start: torch.Tensor  # bool [K]: may a sequence begin with tag j
    trans: torch.Tensor  # bool [K, K]: may tag i be followed by tag j
    end: torch.Tensor  # bool [K]: may a sequence end with tag i


def bio_constraints(labels: list[str]) -> Allowed:
    """The paths BIO allows over `labels` (tag id -> name), or BIOES if any label is E- or S-.

    BIO: I-X only after B-X or I-X, never first. BIOES adds: E-X also only after B-X or I-X;
    B-, S- and O only after O, E- or S- (the previous entity closed); never first I-/E-,
    never last B-/I-.
    """
    parts = [split_tag(label) for label in labels]
    bioes = any(prefix in "ES" for prefix, _ in parts)
    inside = "IE" if bioes else "I"  # the prefixes that continue an open entity
    trans = torch.ones(len(labels), len(labels), dtype=torch.bool)
    for i, (p, x) in enumerate(parts):
        for j, (q, y) in enumerate(parts):
            if q in inside:
                trans[i, j] = p in "BI" and x == y
            elif bioes:
                trans[i, j] = p in "OES"
    start = torch.tensor([p not in inside for p, _ in parts])
    end = torch.tensor([not bioes or p not in "BI" for p, _ in parts])
    return Allowed(start, trans, end)


class CRF(nn.Module):
    """start [K], end [K] and trans [K, K] scores (trans[i, j]: tag i followed by tag j)."""

    def __init__(self, num_tags: int, constraints: Allowed | None = None):
        super().__init__()
        K = self.num_tags = num_tags
        # Zeros: an untrained CRF adds nothing, and decoding is the per-token argmax (within constraints).
        self.start = nn.Parameter(torch.zeros(K))
        self.end = nn.Parameter(torch.zeros(K))
        self.trans = nn.Parameter(torch.zeros(K, K))
        self.constrained = constraints is not None
        shapes = ((K,), (K, K), (K,))  # start, trans, end
        c = constraints or Allowed(*(torch.ones(s, dtype=torch.bool) for s in shapes))
        for name, allowed, want in zip(Allowed._fields, c, shapes):
            if tuple(allowed.shape) != want:
                raise ValueError(f"CRF constraints.{name} has shape {tuple(allowed.shape)}, expected {want}")
            # Not saved with the weights: constraints follow from the label list, which the config holds.
            self.register_buffer(f"allowed_{name}", allowed.bool().clone(), persistent=False)

    def _scores(self):
        """start [K], trans [K, K], end [K] in fp32 with forbidden entries pinned (so they get no gradient)."""
        start = self.start.float().masked_fill(~self.allowed_start, FORBIDDEN)
        trans = self.trans.float().masked_fill(~self.allowed_trans, FORBIDDEN)
        end = self.end.float().masked_fill(~self.allowed_end, FORBIDDEN)
        return start, trans, end

    def _check(self, emissions, mask, tags=None) -> torch.Tensor:
        """Loud shape and mask checks; returns the mask as bool."""
        if emissions.dim() != 3 or emissions.shape[1] == 0 or emissions.shape[2] != self.num_tags:
            raise ValueError(f"CRF emissions must be [B, T >= 1, K={self.num_tags}], got {tuple(emissions.shape)}")
        if mask.shape != emissions.shape[:2]:
            raise ValueError(f"CRF mask {tuple(mask.shape)} does not match emissions {tuple(emissions.shape)} as [B, T]")
        if tags is not None and tags.shape != mask.shape:
            raise ValueError(f"CRF tags {tuple(tags.shape)} do not match mask {tuple(mask.shape)}")
        mask = mask.bool()
        if not mask[:, 0].all():
            raise ValueError("CRF mask must be True at position 0 of every sequence (mask[:, 0]); drop empty sequences")
        if (mask[:, 1:] & ~mask[:, :-1]).any():
            raise ValueError("CRF mask must be left-aligned (True then only False in each row): pad on the right")
        return mask

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """-log p(tags | emissions) per sequence, [B]. Tags at padding are ignored (may be -100)."""
        mask = self._check(emissions, mask, tags)
        tags = tags.long().masked_fill(~mask, 0)  # [B, T], padding made a valid index for the gathers
        if ((tags < 0) | (tags >= self.num_tags)).any():
            raise ValueError(f"CRF tags must be in 0..{self.num_tags - 1} at real positions")
        last = tags.gather(1, mask.sum(1, keepdim=True) - 1).squeeze(1)  # [B] tag at each last real position
        if self.constrained:
            self._check_gold(tags, mask, last)
        e = emissions.float()
        start, trans, end = self._scores()
        gold = (
            start[tags[:, 0]]
            + e.gather(2, tags.unsqueeze(2)).squeeze(2).masked_fill(~mask, 0).sum(1)  # [B, T] -> [B] emissions
            + trans[tags[:, :-1], tags[:, 1:]].masked_fill(~mask[:, 1:], 0).sum(1)  # [B, T-1] -> [B] transitions
            + end[last]
        )
        return self._log_partition(e, mask, start, trans, end) - gold

    def _check_gold(self, tags, mask, last) -> None:
        """A gold path through a forbidden step would cost ~1e4 and swamp the loss: refuse it."""
        steps = self.allowed_trans[tags[:, :-1], tags[:, 1:]] | ~mask[:, 1:]  # [B, T-1]
        ok = self.allowed_start[tags[:, 0]] & steps.all(1) & self.allowed_end[last]  # [B]
        if not ok.all():
            b = int((~ok).nonzero()[0])
            path = tags[b, : int(mask[b].sum())].tolist()
            raise BertkitError(f"gold tags {path} (batch item {b}) break the CRF's constraints; fix them (metrics.repair_bio)")

    @staticmethod
    def _log_partition(e, mask, start, trans, end) -> torch.Tensor:  # -> [B]
        alpha = start + e[:, 0]  # [B, K]: log-sum of exp score over all paths ending in each tag
        for t in range(1, e.shape[1]):
            # [B, K, 1] + [K, K] -> [B, K(from), K(to)], the previous tag summed out
            step = torch.logsumexp(alpha.unsqueeze(2) + trans, dim=1) + e[:, t]
            alpha = torch.where(mask[:, t, None], step, alpha)  # a finished sequence carries its alpha through
        return torch.logsumexp(alpha + end, dim=1)

    def log_marginals(self, emissions: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """log p(y_t = k | x) [B, T, K] by forward-backward, with every score divided by `temperature`.

        The CRF's own per-token distribution: what a CRF tagger believes about each token once the
        transitions are accounted for (softmax of the emissions alone ignores them). Differentiable, so a
        student's marginals can be trained towards a teacher's (structure-level distillation). Rows at
        padding are 0 (log 1) in no particular tag: mask them out."""
        mask = self._check(emissions, mask)
        e = emissions.float() / temperature
        start, trans, end = (s / temperature for s in self._scores())
        T = e.shape[1]
        alphas = [start + e[:, 0]]  # alpha_t [B, K]: log-sum over paths of tokens 0..t ending in each tag
        for t in range(1, T):
            step = torch.logsumexp(alphas[-1].unsqueeze(2) + trans, dim=1) + e[:, t]
            alphas.append(torch.where(mask[:, t, None], step, alphas[-1]))
        betas = [end.expand_as(alphas[0])]  # beta_t [B, K]: log-sum over the rest of the path after tag k at t
        for t in range(T - 2, -1, -1):
            step = torch.logsumexp(trans + (e[:, t + 1] + betas[-1]).unsqueeze(1), dim=2)  # [B, K(from)]
            betas.append(torch.where(mask[:, t + 1, None], step, end.expand_as(step)))  # t the last real token: end
        log_z = torch.logsumexp(alphas[-1] + end, dim=1)  # [B]
        out = torch.stack(alphas, 1) + torch.stack(betas[::-1], 1) - log_z[:, None, None]
        return out.masked_fill(~mask[..., None], 0.0)

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """The highest-scoring tag path of each sequence (Viterbi), each as long as its mask."""
        mask = self._check(emissions, mask)
        e = emissions.float()
        start, trans, end = self._scores()
        B, T, K = e.shape
        stay = torch.arange(K, device=e.device).expand(B, K)  # back-pointers of a padding step: keep the tag
        score = start + e[:, 0]  # [B, K]: best score of a path ending in each tag
        back = []  # T-1 tensors [B, K]: best previous tag for each current tag
        for t in range(1, T):
            best, arg = (score.unsqueeze(2) + trans).max(dim=1)  # [B, K(to)] over the previous tag
            real = mask[:, t, None]
            score = torch.where(real, best + e[:, t], score)
            back.append(torch.where(real, arg, stay))
        tag = (score + end).argmax(dim=1)  # [B] best last tag; padding steps just repeat it
        path = [tag]
        for arg in reversed(back):
            tag = arg.gather(1, tag.unsqueeze(1)).squeeze(1)
            path.append(tag)
        rows = torch.stack(path[::-1], dim=1).tolist()  # [B, T]
        return [row[:n] for row, n in zip(rows, mask.sum(1).tolist())]


PREFIXES = ("B", "I", "E", "S")  # begin, inside, end, single; "O" is outside


def split_tag(tag: str) -> tuple[str, str]:
    """Prefix and type: "B-PER" -> ("B", "PER"); "O" -> ("O", ""); bare "B" -> ("B", "_") as in seqeval.

    The type is everything after the first "-", so "B-ORG-CORP" is type "ORG-CORP".
    """
    if tag == "O":
        return "O", ""
    if tag[:1] in PREFIXES and tag[1:2] in ("-", ""):
        return tag[0], tag[2:] or "_"
    raise BertkitError(f"tag {tag!r} is neither 'O' nor one of B-, I-, E-, S- followed by a type")
