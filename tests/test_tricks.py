"""Fine-tuning tricks: losses against torch's own and closed forms, exact restores, schedules at their corners."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bertkit import BertConfig, BertModel
from bertkit.errors import BertkitError
from bertkit.train.tricks import (
    EMA,
    FGM,
    PGD,
    adversarial_step,
    class_weights,
    focal_loss,
    fused_supported,
    label_smoothing_loss,
    loss_fn,
    make_optimizer,
    param_groups,
    rdrop_loss,
    warmup_schedule,
)


class Classifier(nn.Module):
    """Tiny BERT + a linear head on [CLS]; dropout off so two forwards agree."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        cfg = BertConfig(vocab_size=99, hidden_size=36, num_hidden_layers=2, num_attention_heads=3,
                         intermediate_size=52, max_position_embeddings=40,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        self.bert = BertModel(cfg)
        self.head = nn.Linear(36, 3)

    def forward(self, ids):
        return self.head(self.bert(ids).pooler_output)


def batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return {"ids": torch.randint(1, 99, (4, 7), generator=g), "y": torch.tensor([0, 2, 1, 2])}


def ce_of(model, b):
    return F.cross_entropy(model(b["ids"]), b["y"])


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def logits_and_targets(N=40, C=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, C, generator=g) * 3
    target = torch.randint(0, C, (N,), generator=g)
    target[::7] = -100
    return logits, target


# ---- losses ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_focal_gamma_0_is_cross_entropy(weighted, reduction):
    logits, target = logits_and_targets()
    w = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.1]) if weighted else None
    got = focal_loss(logits, target, gamma=0.0, alpha=w, reduction=reduction)
    want = F.cross_entropy(logits, target, weight=w, reduction=reduction)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)  # rtol: "sum" adds 35 terms in another order


def test_focal_token_level_shapes_and_ignore():
    logits, target = logits_and_targets(N=24)
    got = focal_loss(logits.view(4, 6, 5), target.view(4, 6), gamma=0.0, reduction="none")
    assert got.shape == (4, 6)
    torch.testing.assert_close(got.view(-1), F.cross_entropy(logits, target, reduction="none"), atol=1e-6, rtol=0)


def test_focal_down_weights_easy_examples():
    logits = torch.tensor([[6.0, 0.0, 0.0], [0.5, 0.0, 0.0]])  # both right; the first is easy
    target = torch.tensor([0, 0])
    ce = F.cross_entropy(logits, target, reduction="none")
    focal = focal_loss(logits, target, gamma=2.0, reduction="none")
    p = logits.softmax(-1)[:, 0]
    torch.testing.assert_close(focal, (1 - p) ** 2 * ce)  # the closed form
    ratio = focal / ce
    assert ratio[0] < 1e-4 and ratio[1] > 0.2


def test_label_smoothing_and_factory_match_torch():
    logits, target = logits_and_targets()
    w = class_weights([10, 30, 60, 5, 1])
    torch.testing.assert_close(label_smoothing_loss(logits, target, 0.1),
                               F.cross_entropy(logits, target, label_smoothing=0.1))
    torch.testing.assert_close(loss_fn("ce", class_weight=w)(logits, target), F.cross_entropy(logits, target, weight=w))
    torch.testing.assert_close(loss_fn("smooth", smoothing=0.2)(logits, target),
                               F.cross_entropy(logits, target, label_smoothing=0.2))
    torch.testing.assert_close(loss_fn("focal", gamma=1.5, class_weight=w)(logits, target),
                               focal_loss(logits, target, 1.5, w))
    with pytest.raises(BertkitError):
        loss_fn("hinge")


def test_class_weights():
    counts = torch.tensor([10, 30, 60])
    torch.testing.assert_close(class_weights(counts), torch.tensor([100 / 30, 100 / 90, 100 / 180]))
    for kind in ("inverse", "sqrt_inverse"):
        w = class_weights(counts, kind)
        assert (w * counts).sum().item() == pytest.approx(100)  # average weight per example is 1
        assert w[0] > w[1] > w[2]
    s = class_weights(counts, "sqrt_inverse")
    assert s[0] / s[2] == pytest.approx(math.sqrt(6))


def test_rdrop():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 5, 4, generator=g), torch.randn(2, 5, 4, generator=g)
    assert rdrop_loss(a, a.clone()).item() == 0.0
    assert torch.equal(rdrop_loss(a, b), rdrop_loss(b, a))  # symmetric to the bit
    la, lb = a.log_softmax(-1), b.log_softmax(-1)
    kl = lambda p, q: (p.exp() * (p - q)).sum(-1)  # noqa: E731  KL(p||q) from log-probabilities
    torch.testing.assert_close(rdrop_loss(a, b), (0.5 * (kl(la, lb) + kl(lb, la))).mean())
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, :3] = mask[1, :1] = True
    b2 = b.clone()
    b2[~mask] = 100.0  # what the mask hides does not count
    torch.testing.assert_close(rdrop_loss(a, b2, mask), (0.5 * (kl(la, lb) + kl(lb, la)))[mask].mean())


# ---- optimizer and schedule ------------------------------------------------------------------------------------

def test_param_groups_no_decay_on_norms_and_biases():
    model = Classifier()
    groups = param_groups(model, 0.01)
    decay, no_decay = ({id(p) for p in g["params"]} for g in groups)
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]
    norms = [p for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    assert len(norms) == 2 * (1 + 2 * 2)  # embeddings + two per layer, weight and bias each
    assert {id(p) for p in norms + biases} == no_decay
    assert all(p.ndim == 2 for p in model.parameters() if id(p) in decay)
    assert len(decay) + len(no_decay) == len(list(model.parameters()))
    model.head.weight.requires_grad_(False)  # frozen weights are left out
    assert sum(len(g["params"]) for g in param_groups(model, 0.01)) == len(list(model.parameters())) - 1


def test_make_optimizer_steps():
    model = Classifier()
    opt = make_optimizer(model, lr=1e-3, weight_decay=0.1)
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    cpu_fused = "cpu" in _get_fused_kernels_supported_devices()  # torch >= 2.4
    assert isinstance(opt, torch.optim.AdamW) and bool(opt.defaults.get("fused")) == cpu_fused
    decay, no_decay = opt.param_groups
    assert (decay["weight_decay"], no_decay["weight_decay"], decay["lr"]) == (0.1, 0.0, 1e-3)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith(".weight") and p.ndim == 2 for p in decay["params"])  # matrices only
    assert {names[id(p)] for p in no_decay["params"]} == {n for n, p in model.named_parameters() if p.ndim == 1}  # biases, norms
    before = model.head.weight.detach().clone()
    ce_of(model, batch()).backward()
    g = model.head.weight.grad.clone()
    opt.step()
    # AdamW's first step: w - lr * (g / (|g| + eps) + weight_decay * w), the direction of the gradient
    want = before * (1 - 1e-3 * 0.1) - 1e-3 * g / (g.abs() + 1e-6)
    torch.testing.assert_close(model.head.weight.detach(), want, atol=1e-6, rtol=1e-5)
    # the fused kernel takes the same steps as torch's multi-tensor update
    torch.manual_seed(0)
    a, b = Classifier(), Classifier()
    b.load_state_dict(a.state_dict())
    oa, ob = make_optimizer(a, lr=1e-3), make_optimizer(b, lr=1e-3, fused=False)
    assert not ob.defaults.get("fused")
    for _ in range(3):
        for m, o in ((a, oa), (b, ob)):
            ce_of(m, batch()).backward()
            o.step()
            o.zero_grad()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-5)
    assert not fused_supported([torch.zeros(2), torch.zeros(2, dtype=torch.int64)])
    assert not fused_supported([torch.zeros(2, device="meta")])  # no kernel for that device
    assert not fused_supported([torch.zeros(2), torch.zeros(2, device="meta")])  # two device types
    assert fused_supported([torch.zeros(2, dtype=torch.bfloat16), nn.Parameter(torch.zeros(2))]) == cpu_fused


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant"])
def test_schedule_corners(kind):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = warmup_schedule(opt, warmup_steps=10, total_steps=110, kind=kind)
    lrs = []
    for _ in range(120):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(1.0) and lrs[10] == pytest.approx(2.0)
    want_mid, want_end = {"linear": (1.0, 0.0), "cosine": (1.0, 0.0), "constant": (2.0, 2.0)}[kind]
    assert lrs[60] == pytest.approx(want_mid) and lrs[110] == pytest.approx(want_end, abs=1e-12)
    assert lrs[119] == pytest.approx(want_end, abs=1e-12)  # stays there past the end
    if kind == "cosine":
        assert lrs[35] == pytest.approx(1.0 + math.cos(math.pi / 4))


def test_schedule_resumes_exactly():
    def fresh():
        opt = torch.optim.AdamW([nn.Parameter(torch.zeros(3))], lr=1e-3)
        return opt, warmup_schedule(opt, 5, 50, "cosine")

    opt, sched = fresh()
    for _ in range(17):
        opt.step()
        sched.step()
    saved = opt.state_dict(), sched.state_dict()
    assert saved[1]["lr_lambdas"][0] == {"warmup_steps": 5, "total_steps": 50, "kind": "cosine"}
    opt2, sched2 = fresh()
    opt2.load_state_dict(saved[0])
    sched2.load_state_dict(saved[1])
    for _ in range(10):
        for o, s in ((opt, sched), (opt2, sched2)):
            o.step()
            s.step()
        assert sched.get_last_lr() == sched2.get_last_lr()
    with pytest.raises(BertkitError):
        warmup_schedule(opt, 5, 50, "step")


# ---- EMA -------------------------------------------------------------------------------------------------------

def test_ema_closed_form():
    model = nn.Linear(3, 2)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    ema = EMA(model, decay=0.9, warmup=False)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)  # held constant: shadow_k = d^k start + (1 - d^k) * 1
    for _ in range(5):
        ema.update()
    for n in start:
        torch.testing.assert_close(ema.shadow[n], 0.9**5 * start[n] + (1 - 0.9**5))


def test_ema_warmup_decay():
    model = nn.Linear(3, 2)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    ema = EMA(model, decay=0.5, warmup=True)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    ds = []
    for _ in range(20):
        ds.append(ema.current_decay())
        ema.update()
    assert ds[0] == pytest.approx(0.1) and ds[1] == pytest.approx(2 / 11) and ds[-1] == 0.5
    for n in start:
        torch.testing.assert_close(ema.shadow[n], math.prod(ds) * start[n])


def test_ema_applied_restores_exactly_and_resumes():
    model = Classifier()
    ema = EMA(model, decay=0.99)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        ce_of(model, batch()).backward()
        opt.step()
        opt.zero_grad()
        ema.update()
    live = {n: p.detach().clone() for n, p in model.named_parameters()}
    with ema.applied():
        for n, p in model.named_parameters():
            assert torch.equal(p, ema.shadow[n])
    for n, p in model.named_parameters():
        assert torch.equal(p, live[n])
    with pytest.raises(ValueError), ema.applied():
        raise ValueError("evaluation failed")
    assert all(torch.equal(p, live[n]) for n, p in model.named_parameters())  # restored despite the error

    other = EMA(Classifier(seed=1))
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 3 and other.decay == 0.99
    assert all(torch.equal(other.shadow[n], ema.shadow[n]) for n in ema.shadow)
    with pytest.raises(BertkitError, match="unexpected"):
        EMA(nn.Linear(2, 2)).load_state_dict(ema.state_dict())


# ---- adversarial training --------------------------------------------------------------------------------------

def test_fgm_attacks_by_epsilon_and_restores_bit_identically():
    model = Classifier()
    emb = model.bert.embed.word.weight
    b = batch()
    ce_of(model, b).backward()
    clean_grads, before = grads(model), emb.detach().clone()
    fgm = FGM(model, epsilon=0.5)
    fgm.attack()
    delta = emb.detach() - before
    g = clean_grads["bert.embed.word.weight"]
    torch.testing.assert_close(delta, 0.5 * g / g.norm(), atol=1e-6, rtol=1e-5)  # ascent, along the gradient
    touched = delta.abs().sum(1) > 0
    assert set(touched.nonzero().flatten().tolist()) <= set(b["ids"].flatten().tolist())  # only the batch's rows
    adv = torch.autograd.grad(ce_of(model, b), list(model.parameters()))
    fgm.restore()
    assert torch.equal(emb, before)

    model.zero_grad()
    adversarial_step(model, ce_of, b, FGM(model, epsilon=0.5))
    assert torch.equal(emb, before)
    for (n, p), g in zip(model.named_parameters(), adv):
        torch.testing.assert_close(p.grad, clean_grads[n] + g, atol=1e-6, rtol=1e-5)


def test_pgd_projects_restores_and_sums_grads():
    model = Classifier()
    emb = model.bert.embed.word.weight
    b = batch()
    before = emb.detach().clone()
    ce_of(model, b).backward()
    clean_grads = grads(model)
    pgd = PGD(model, epsilon=0.5, alpha=0.3, steps=3)  # 3 x 0.3 > 0.5: the projection must act
    pgd.backup_grad()
    g = clean_grads["bert.embed.word.weight"]
    for t in range(pgd.steps):
        pgd.attack(first=t == 0)
        if t == 0:
            torch.testing.assert_close(emb.detach() - before, 0.3 * g / g.norm(), atol=1e-6, rtol=1e-5)
        assert (emb.detach() - before).norm().item() <= 0.5 + 1e-5
        if t < pgd.steps - 1:
            model.zero_grad()
        else:
            pgd.restore_grad()
            assert all(torch.equal(p.grad, clean_grads[n]) for n, p in model.named_parameters())
        loss = ce_of(model, b)
        if t == pgd.steps - 1:
            adv = torch.autograd.grad(loss, list(model.parameters()), retain_graph=True)
        loss.backward()
    assert (emb.detach() - before).norm().item() == pytest.approx(0.5, rel=1e-5)  # on the ball's surface
    pgd.restore()
    assert torch.equal(emb, before)
    for (n, p), g in zip(model.named_parameters(), adv):
        torch.testing.assert_close(p.grad, clean_grads[n] + g, atol=1e-6, rtol=1e-5)

    model.zero_grad()
    adversarial_step(model, ce_of, b, PGD(model, epsilon=0.5, alpha=0.3, steps=3))
    assert torch.equal(emb, before)
    for (n, p), g in zip(model.named_parameters(), adv):
        torch.testing.assert_close(p.grad, clean_grads[n] + g, atol=1e-6, rtol=1e-5)


def test_adversarial_step_without_method_is_plain_backward_and_param_lookup_is_strict():
    model = Classifier()
    b = batch()
    loss = adversarial_step(model, ce_of, b)
    want = torch.autograd.grad(ce_of(model, b), list(model.parameters()))
    assert not loss.requires_grad
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), want))
    with pytest.raises(BertkitError, match="candidates"):
        FGM(model, param_name="embeddings.word.weight")


@pytest.mark.parametrize("kind", ["fgm", "pgd"])
def test_adversarial_step_under_accumulation_attacks_along_this_batchs_gradient(kind):
    """Two micro-batches in one step: the second attack follows the second batch's own gradient, not the
    sum of both, so the accumulated grads equal the two batches' adversarial grads computed apart."""
    model = Classifier()
    b1, b2 = batch(1), batch(2)
    make = (lambda: FGM(model, epsilon=0.5)) if kind == "fgm" else (lambda: PGD(model, epsilon=0.5, alpha=0.3, steps=3))
    apart = []
    for b in (b1, b2):
        model.zero_grad()
        adversarial_step(model, ce_of, b, make())
        apart.append(grads(model))
    model.zero_grad()
    adversarial_step(model, ce_of, b1, make())
    adversarial_step(model, ce_of, b2, make())
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, apart[0][n] + apart[1][n], atol=1e-6, rtol=1e-5)


def test_crf_lr_and_layer_decay_scale_the_groups():
    """--crf-lr multiplies the CRF's rate only; --layer-decay gives the top layer lr * d, each layer below one more d,
    the embeddings d ** (L + 1), and the heads above the layers lr."""
    from bertkit.train.tricks import lr_scale

    assert lr_scale("crf.trans", 4, crf_lr=100.0) == 100.0
    assert lr_scale("classifier.weight", 4, crf_lr=100.0, layer_decay=0.5) == 1.0
    assert [lr_scale(f"bert.layers.{i}.attn.qkv.weight", 4, layer_decay=0.5) for i in range(4)] == [0.5**4, 0.5**3, 0.5**2, 0.5]
    assert lr_scale("bert.embed.word.weight", 4, layer_decay=0.5) == 0.5**5
    assert lr_scale("bert.final_norm.weight", 4, layer_decay=0.5) == 1.0
    from bertkit import BertForTokenClassification

    model = BertForTokenClassification(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                                                                  intermediate_size=16, extra={"id2label": {"0": "O", "1": "B-X", "2": "I-X"},
                                                                                               "bertkit": {"task": "ner", "crf": True}}))
    opt = make_optimizer(model, lr=1e-3, crf_lr=100.0, layer_decay=0.8)
    rate = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert rate[id(names["crf.trans"])] == pytest.approx(0.1)
    assert rate[id(names["bert.layers.1.ffn.up.weight"])] == pytest.approx(8e-4)
    assert rate[id(names["bert.layers.0.ffn.up.weight"])] == pytest.approx(6.4e-4)
    assert rate[id(names["bert.embed.word.weight"])] == pytest.approx(5.12e-4)
    assert rate[id(names["classifier.weight"])] == pytest.approx(1e-3)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(names)


def test_crf_lr_and_layer_decay_bad_values_are_refused(tmp_path):
    from bertkit.train import TrainConfig, train

    base = dict(task="ner", model="bert-tiny", data="peoples-daily-ner", out=str(tmp_path / "out"), quiet=True)
    for change, message in ((dict(crf=True, crf_lr=0.0), "--crf-lr must be a positive multiple of --lr"),
                            (dict(crf_lr=100.0), "the run has no CRF"), (dict(layer_decay=1.5), "--layer-decay must be above 0")):
        with pytest.raises(BertkitError, match=message):
            train(TrainConfig(**(base | change)))
    assert not (tmp_path / "out").exists()
