"""The CRF against brute force: log Z and the best path by enumerating every one of the K^n paths."""

from __future__ import annotations

import itertools

import pytest
import torch

from bertkit.crf import CRF, Allowed, bio_constraints
from bertkit.errors import BertkitError

BIO = ["O", "B-X", "I-X"]
BIO2 = ["O", "B-X", "I-X", "B-Y", "I-Y"]
BIOES = ["O", "B-X", "I-X", "E-X", "S-X"]


def random_crf(K, constraints, gen):
    crf = CRF(K, constraints)
    with torch.no_grad():
        for p in (crf.start, crf.end, crf.trans):
            p.copy_(torch.randn(p.shape, generator=gen))
    return crf


def all_paths(crf, n):
    """Every allowed path of length n as a [P, n] tensor: forbidden ones are simply never listed."""
    paths = torch.tensor(list(itertools.product(range(crf.num_tags), repeat=n)))
    ok = crf.allowed_start[paths[:, 0]] & crf.allowed_end[paths[:, -1]]
    if n > 1:
        ok &= crf.allowed_trans[paths[:, :-1], paths[:, 1:]].all(1)
    return paths[ok]


def path_scores(crf, e, paths):
    """s(y) of each path [P, n] under emissions e [n, K], in float64 from the raw parameters."""
    start, trans, end, e = (x.detach().double() for x in (crf.start, crf.trans, crf.end, e))
    n = paths.shape[1]
    s = start[paths[:, 0]] + end[paths[:, -1]] + e[torch.arange(n), paths].sum(1)
    return s + trans[paths[:, :-1], paths[:, 1:]].sum(1) if n > 1 else s


CASES = [(K, None) for K in (3, 4)] + [(3, BIO), (5, BIO2), (5, BIOES)]


@pytest.mark.parametrize("K, labels", CASES)
@pytest.mark.parametrize("seed", range(4))
def test_nll_and_decode_equal_brute_force(K, labels, seed):
    gen = torch.Generator().manual_seed(seed)
    constraints = bio_constraints(labels) if labels else None
    crf = random_crf(K, constraints, gen)
    lengths = [5, 1, 3, 4] if K < 5 else [4, 1, 3]  # different lengths in one batch; K=5 keeps 5^n small
    B, T = len(lengths), max(lengths)
    e = torch.randn(B, T, K, generator=gen) * 2
    mask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    tags = torch.full((B, T), -100)  # padding carries the ignore index, as the data pipeline writes it
    expected = []
    for b, n in enumerate(lengths):
        paths = all_paths(crf, n)
        gold = paths[torch.randint(len(paths), (1,), generator=gen)][0]
        tags[b, :n] = gold
        scores = path_scores(crf, e[b, :n], paths)
        expected.append((scores, path_scores(crf, e[b, :n], gold[None])[0], paths))
    nll = crf.nll(e, tags, mask)
    best = crf.decode(e, mask)
    for b, (scores, gold, paths) in enumerate(expected):
        want = torch.logsumexp(scores, 0) - gold
        assert abs(nll[b].item() - want.item()) < 1e-4, (b, nll[b].item(), want.item())
        assert best[b] == paths[scores.argmax()].tolist()
        assert len(best[b]) == lengths[b]


def test_padding_never_matters():
    gen = torch.Generator().manual_seed(7)
    crf = random_crf(4, None, gen)
    e = torch.randn(2, 6, 4, generator=gen, requires_grad=True)
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3]).bool()
    tags = torch.randint(4, (2, 6), generator=gen)
    nll = crf.nll(e, tags, mask)
    nll.sum().backward()
    assert torch.all(e.grad[1, 3:] == 0)  # no gradient reaches padding
    noisy = e.detach().clone()
    noisy[1, 3:] = 100 * torch.randn(3, 4, generator=gen)
    tags[1, 3:] = 3
    assert torch.allclose(crf.nll(noisy, tags, mask), nll)
    assert crf.decode(noisy, mask) == crf.decode(e, mask)
    assert crf.decode(e[1:, :3], mask[1:, :3]) == crf.decode(e, mask)[1:]


def test_gradients_flow_and_are_finite_with_constraints():
    gen = torch.Generator().manual_seed(3)
    crf = random_crf(5, bio_constraints(BIOES), gen)
    e = torch.randn(3, 5, 5, generator=gen, requires_grad=True)
    mask = torch.tensor([[1] * 5, [1] * 2 + [0] * 3, [1] + [0] * 4]).bool()
    tags = torch.tensor([[0, 1, 2, 3, 0], [4, 0, 0, 0, 0], [4, 0, 0, 0, 0]])
    crf.nll(e, tags, mask).sum().backward()
    for g in (e.grad, crf.start.grad, crf.trans.grad, crf.end.grad):
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert torch.all(crf.trans.grad[~crf.allowed_trans] == 0)  # forbidden entries are pinned, not learnt


def test_emission_gradient_is_marginal_minus_gold():
    """d nll / d emit[t, k] = p(y_t = k) - [gold_t == k], the marginals from brute force."""
    gen = torch.Generator().manual_seed(11)
    crf = random_crf(3, bio_constraints(BIO), gen)
    e = torch.randn(1, 4, 3, generator=gen, dtype=torch.float32, requires_grad=True)
    tags = torch.tensor([[1, 2, 0, 1]])
    crf.nll(e, tags, torch.ones(1, 4, dtype=torch.bool)).sum().backward()
    paths = all_paths(crf, 4)
    p = torch.softmax(path_scores(crf, e[0], paths), 0)  # [P]
    marginals = torch.zeros(4, 3, dtype=torch.float64)
    for t in range(4):
        marginals[t].index_add_(0, paths[:, t], p)
    want = marginals - torch.nn.functional.one_hot(tags[0], 3)
    assert torch.allclose(e.grad[0].double(), want, atol=1e-5)


@pytest.mark.parametrize("K, labels", CASES)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_log_marginals_equal_brute_force(K, labels, temperature):
    """p(y_t = k) summed over every allowed path, with all scores divided by the temperature; padding rows 0."""
    gen = torch.Generator().manual_seed(K + int(temperature))
    crf = random_crf(K, bio_constraints(labels) if labels else None, gen)
    lengths = [4, 1, 3, 2]
    B, T = len(lengths), max(lengths)
    e = torch.randn(B, T, K, generator=gen) * 2
    mask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    got = crf.log_marginals(e, mask, temperature)
    for b, n in enumerate(lengths):
        paths = all_paths(crf, n)
        p = torch.softmax(path_scores(crf, e[b, :n], paths) / temperature, 0)
        want = torch.zeros(n, K, dtype=torch.float64)
        for t in range(n):
            want[t].index_add_(0, paths[:, t], p)
        assert torch.allclose(got[b, :n].exp().double(), want, atol=1e-5), b
        assert torch.all(got[b, n:] == 0)


def test_log_marginals_are_differentiable_and_ignore_padding():
    gen = torch.Generator().manual_seed(2)
    crf = random_crf(5, bio_constraints(BIO2), gen)
    e = torch.randn(2, 4, 5, generator=gen, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]).bool()
    lm = crf.log_marginals(e, mask)
    (lm * torch.randn(lm.shape, generator=gen)).masked_fill(~mask[..., None], 0).sum().backward()
    assert torch.isfinite(e.grad).all() and torch.all(e.grad[1, 2:] == 0)
    assert torch.isfinite(crf.trans.grad).all() and crf.trans.grad.abs().sum() > 0
    noisy = e.detach().clone()
    noisy[1, 2:] = 50 * torch.randn(2, 5, generator=gen)
    assert torch.allclose(crf.log_marginals(noisy, mask)[1, :2], lm[1, :2].detach(), atol=1e-6)


def test_bf16_emissions_run_in_fp32():
    gen = torch.Generator().manual_seed(5)
    crf = random_crf(4, None, gen)
    e = torch.randn(2, 4, 4, generator=gen).bfloat16()
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]).bool()
    tags = torch.randint(4, (2, 4), generator=gen)
    nll = crf.nll(e, tags, mask)
    assert nll.dtype == torch.float32
    assert torch.equal(nll, crf.nll(e.float(), tags, mask))
    assert crf.decode(e, mask) == crf.decode(e.float(), mask)
    crf_bf16 = random_crf(4, None, torch.Generator().manual_seed(5)).bfloat16()  # a whole model cast to bf16
    assert crf_bf16.nll(e, tags, mask).dtype == torch.float32


def test_constraints_override_emissions():
    crf = CRF(3, bio_constraints(BIO))
    e = torch.tensor([[[0.0, 1.0, 9.0], [9.0, 0.0, 0.0], [0.0, 1.0, 9.0]]])  # begs for I-X, O, I-X; B-X second best
    assert crf.decode(e, torch.ones(1, 3, dtype=torch.bool)) == [[1, 0, 1]]  # each I-X must be a B-X
    assert CRF(3).decode(e, torch.ones(1, 3, dtype=torch.bool)) == [[2, 0, 2]]


def test_bio_constraints_by_hand():
    c = bio_constraints(BIO2)  # O B-X I-X B-Y I-Y
    assert c.start.tolist() == [True, True, False, True, False]
    assert c.end.all()
    assert c.trans[:, 2].tolist() == [False, True, True, False, False]  # I-X after B-X, I-X only
    assert c.trans[:, 4].tolist() == [False, False, False, True, True]
    assert c.trans[:, [0, 1, 3]].all()  # O and B- may follow anything
    c = bio_constraints(BIOES)  # O B-X I-X E-X S-X
    assert c.start.tolist() == [True, True, False, False, True]
    assert c.end.tolist() == [True, False, False, True, True]
    opens = [True, False, False, True, True]  # O, E-, S- close; B- and I- leave an entity open
    for j in (0, 1, 4):  # O, B-X, S-X need nothing open
        assert c.trans[:, j].tolist() == opens
    for j in (2, 3):  # I-X, E-X continue B-X or I-X
        assert c.trans[:, j].tolist() == [False, True, True, False, False]
    with pytest.raises(BertkitError, match="'U-X'"):
        bio_constraints(["O", "U-X"])


def test_gold_tags_breaking_constraints_are_refused():
    crf = CRF(3, bio_constraints(BIO))
    e = torch.zeros(1, 3, 3)
    with pytest.raises(BertkitError, match=r"\[0, 2, 2\].*repair"):
        crf.nll(e, torch.tensor([[0, 2, 2]]), torch.ones(1, 3, dtype=torch.bool))  # O I-X I-X


def test_bad_masks_and_shapes_are_rejected():
    crf = CRF(3)
    e = torch.zeros(2, 4, 3)
    tags = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"position 0"):
        crf.nll(e, tags, torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]).bool())
    with pytest.raises(ValueError, match=r"position 0"):
        crf.decode(e, torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]]).bool())
    with pytest.raises(ValueError, match="left-aligned"):
        crf.decode(e, torch.tensor([[1, 0, 1, 1], [1, 1, 1, 1]]).bool())
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4, 3\)"):
        crf.decode(e, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"K=3.*\(2, 4, 5\)"):
        crf.decode(torch.zeros(2, 4, 5), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"tags \(2, 3\)"):
        crf.nll(e, tags[:, :3], torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="0..2"):
        crf.nll(e, tags + 3, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"trans has shape \(2, 2\)"):
        CRF(3, Allowed(torch.ones(3), torch.ones(2, 2), torch.ones(3)))


def test_int_attention_mask_is_accepted_and_weights_only_hold_parameters():
    crf = CRF(3, bio_constraints(BIO))
    e = torch.randn(1, 3, 3)
    assert crf.decode(e, torch.tensor([[1, 1, 0]])) == crf.decode(e, torch.tensor([[True, True, False]]))
    assert sorted(crf.state_dict()) == ["end", "start", "trans"]
