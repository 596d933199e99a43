"""The inference fast path equals the reference path: packed (unpadded) execution with bucketed
attention (and the CUDA variable-length kernel's wiring), the lazy pooler, activation checkpointing,
torch.compile and the dynamo ONNX exporter, and bf16 within a stated tolerance.

The reference path is the same model with `unpad = False` and gradients on (the padded batch):
what the parity tests prove equal to transformers.
"""

from __future__ import annotations

import copy

import pytest
import torch
from test_family import CASES, reference

import bertkit
import bertkit.packing
from bertkit.packing import Packed
from conftest import randomise

TOL = 1e-5
FAMILY = {name: make for name, make, _, ours in CASES if ours is bertkit.BertModel}  # roberta, albert, electra, distilbert, roformer, ...


def tiny_bert(**kw):
    config = bertkit.BertConfig(vocab_size=99, hidden_size=36, num_hidden_layers=2, num_attention_heads=3, intermediate_size=52,
                                max_position_embeddings=64, **kw)
    return randomise(bertkit.BertModel(config)).eval()


def encoder(tmp_path, name):
    """A randomised bertkit encoder of a family member, loaded from a transformers checkpoint
    (NEZHA, which transformers no longer has, and plain BERT are built directly)."""
    if name == "bert":
        return tiny_bert()
    if name == "nezha":
        return tiny_bert(model_type="nezha", max_relative_position=8)
    hf_cls = next(hf for n, _, hf, ours in CASES if n == name and ours is bertkit.BertModel)
    reference(FAMILY[name], hf_cls).save_pretrained(tmp_path / name)
    return bertkit.BertModel.from_pretrained(tmp_path / name).eval()


def hard_batches(pad: int, max_len: int, vocab: int = 99):
    """Heavy padding, a single token, a full-length row, and an all-padding row."""
    g = torch.Generator().manual_seed(3)
    out = []
    for lengths, T in [([9, 1, 4, 2], 9), ([1], 1), ([max_len, 3], max_len), ([5, 0, 2], 6)]:
        ids = torch.randint(5, vocab, (len(lengths), T), generator=g)
        mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()
        ids[mask == 0] = pad
        out.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)})
    return out


def reference_run(model, batch):
    """The reference path: padded, three q/k/v matmuls (gradients on), no packing."""
    model.unpad = False
    try:
        with torch.enable_grad():
            out = model(**batch)
        return out.last_hidden_state.detach(), out.pooler_output.detach() if out.pooler_output is not None else None
    finally:
        model.unpad = True


def real(h, mask):
    return h[mask.bool()]


@pytest.mark.parametrize("name", ["bert", *FAMILY, "nezha"])
def test_fast_path_equals_reference(tmp_path, name):
    model = encoder(tmp_path, name)
    c = model.config
    batch_types = c.type_vocab_size >= 1
    for batch in hard_batches(c.pad_token_id, min(c.max_length, 40)):
        if not batch_types:
            batch.pop("token_type_ids")
        ref, ref_pooled = reference_run(model, batch)
        with torch.no_grad():
            out = model(**batch)
        mask = batch["attention_mask"]
        assert torch.isfinite(real(out.last_hidden_state, mask)).all()
        assert (real(out.last_hidden_state, mask) - real(ref, mask)).abs().max() <= TOL, name
        if ref_pooled is not None:
            rows = mask.sum(1) > 0  # a row with no real token has no [CLS] to pool
            assert (out.pooler_output[rows] - ref_pooled[rows]).abs().max() <= TOL


def test_packing_applies_only_where_exact():
    right = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    p = Packed.of(right)
    assert p is not None and p.index.tolist() == [4, 0, 1, 2]  # shortest first
    assert p.starts.tolist() == [0, 1, 4] and p.longest == 3
    assert [(b.n, b.T, b.gather.tolist(), b.rows.tolist(), b.keys) for b in p.buckets] == [(1, 1, [0], [0], None), (1, 3, [1, 2, 3], [0, 1, 2], None)]
    p = Packed.of(torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]]).repeat(5, 1))  # 10 sequences (5 empty) in 8 buckets
    assert len(p.buckets) == 8 and sum(b.n for b in p.buckets) == 10 and len(p.index) == 20
    assert Packed.of(torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])) is None  # left padding: the padded path
    assert Packed.of(torch.tensor([[1] * 10, [1] * 9 + [0]])) is None  # 5% padding: not worth packing
    assert Packed.of(torch.ones(2, 10, dtype=torch.long)) is bertkit.packing.NO_PADDING  # nothing to drop: no mask at all
    config = bertkit.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=40,
                                attention_mode="causal")
    assert bertkit.BertModel(config).packing(right, None) is None  # causal and unilm masks: the padded path


def test_in_place_weight_changes_reach_the_output():
    model = tiny_bert()
    batch = hard_batches(0, 20)[0]
    with torch.no_grad():
        before = model(**batch).last_hidden_state
        for p in model.layers[0].attn.qkv.parameters():
            p.mul_(1.5)  # an in-place change (as an optimizer step, EMA or pruning makes) must reach the output
        after = model(**batch).last_hidden_state
    ref, _ = reference_run(model, batch)
    mask = batch["attention_mask"]
    assert (real(after, mask) - real(before, mask)).abs().max() > 1e-3
    assert (real(after, mask) - real(ref, mask)).abs().max() <= TOL
    for p in model.layers[1].attn.qkv.parameters():
        p.data.copy_(p.data * 0.5)  # through .data: no version counter moves
    with torch.no_grad():
        assert (real(model(**batch).last_hidden_state, mask) - real(reference_run(model, batch)[0], mask)).abs().max() <= TOL
    model.to(torch.float64)
    with torch.no_grad():
        assert model(**batch).last_hidden_state.dtype == torch.float64


def test_training_through_the_packed_path_gives_the_reference_gradients():
    model = tiny_bert().train()
    for m in model.modules():  # dropout off: the two paths draw different masks
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    model.layers[0].attn.p_drop = model.layers[1].attn.p_drop = 0.0
    batch = hard_batches(0, 20)[0]
    mask = batch["attention_mask"]

    def grads(unpad: bool, checkpointing: bool = False):
        m = copy.deepcopy(model)
        m.unpad, m.checkpointing = unpad, checkpointing
        out = m(**batch)
        (real(out.last_hidden_state, mask).pow(2).sum() + out.pooler_output.sum()).backward()
        return {n: p.grad for n, p in m.named_parameters() if p.grad is not None}

    ref, fast, ckpt = grads(False), grads(True), grads(True, checkpointing=True)
    assert ref.keys() == fast.keys() == ckpt.keys()
    for n in ref:
        assert (fast[n] - ref[n]).abs().max() <= 1e-4 * max(1.0, ref[n].abs().max().item()), n
        assert torch.equal(ckpt[n], fast[n]), n  # recomputation changes nothing


def test_pooler_runs_only_when_read():
    model = tiny_bert()
    calls = []
    model.pooler.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        out = model(torch.tensor([[5, 6, 7]]))
        assert calls == []
        out.pooler_output, out.pooler_output  # noqa: B018  (read twice, computed once)
    assert calls == [1]


def test_bf16_keeps_minilm_embeddings(minilm_dir):
    """bf16 weights and activations: mean-pooled sentence vectors at cosine >= 0.999 of fp32 (real weights)."""
    model = bertkit.BertModel.from_pretrained(minilm_dir).eval()
    tok = bertkit.Tokenizer.from_pretrained(minilm_dir)
    texts = ["A man is playing a guitar.", "The new movie is awesome", "short", "A cat sits on the mat in the sun, " * 6]
    batch = tok(texts, padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        fp32 = bertkit.mean_pool(model(ids, mask).last_hidden_state, mask)
        model.to(torch.bfloat16)
        h = model(ids, mask).last_hidden_state
        assert h.dtype == torch.bfloat16
        bf16 = bertkit.mean_pool(h.float(), mask)
    cos = torch.nn.functional.cosine_similarity(fp32, bf16)
    assert cos.min() >= 0.999, cos


def test_embed_bf16_switch(minilm_dir, tmp_path):
    """`bertkit embed --bf16`: one switch, vectors at cosine >= 0.999 of fp32; refused with the onnx backend."""
    import numpy as np

    from bertkit.cli import main

    (tmp_path / "in.txt").write_text("A man is playing a guitar.\nshort\n" + "The weather is lovely today, " * 8 + "\n", encoding="utf-8")
    args = ["embed", str(minilm_dir), "--input", str(tmp_path / "in.txt"), "--quiet"]
    assert main([*args, "--output", str(tmp_path / "fp32.npy")]) == 0
    assert main([*args, "--output", str(tmp_path / "bf16.npy"), "--bf16"]) == 0
    a, b = np.load(tmp_path / "fp32.npy"), np.load(tmp_path / "bf16.npy")
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert b.dtype == np.float32 and cos.min() >= 0.999, cos
    assert main([*args, "--output", str(tmp_path / "x.npy"), "--bf16", "--backend", "onnx"]) == 1


def count_sdpa(monkeypatch):
    """Record each SDPA call's query shape (explicit CPU attention is turned off, so every call goes to SDPA)."""
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(bertkit.model, "explicit_is_faster", lambda q, k: False)

    def counted(*a, **kw):
        calls.append(a[0].shape)
        return sdpa(*a, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counted)
    return calls


def padded_batch(B: int, T: int, vocab: int = 99, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    return torch.randint(5, vocab, (B, T), generator=g) * mask, mask


def test_attention_calls_per_layer_do_not_grow_with_the_batch(monkeypatch):
    """A padded batch of 64 makes as many attention calls per layer as one of 16 (the former loop: 64 vs 16)."""
    model = tiny_bert()
    calls = count_sdpa(monkeypatch)
    per_layer = {}
    for B in (16, 64):
        ids, mask = padded_batch(B, 40)
        calls.clear()
        with torch.no_grad():
            out = model(ids, mask)
        per_layer[B] = len(calls) / model.config.num_hidden_layers
        ref, _ = reference_run(model, {"input_ids": ids, "attention_mask": mask})
        assert (real(out.last_hidden_state, mask) - real(ref, mask)).abs().max() <= TOL
    calls.clear()
    reference_run(model, {"input_ids": ids, "attention_mask": mask})
    assert len(calls) == model.config.num_hidden_layers  # the padded path: one call per layer
    assert per_layer[16] == per_layer[64] == bertkit.packing.MAX_BUCKETS, per_layer


def test_variable_length_kernel_gets_the_packed_bounds(monkeypatch):
    """The CUDA path's wiring, run on the CPU with a reference kernel in place of FlashAttention's varlen:
    the packed tokens, each sequence's start and the longest length, one call per layer."""
    import bertkit.model as core

    def reference_varlen(q, k, v, starts_q, starts_k, max_q, max_k):  # [sum L, N, D], one sequence at a time
        assert torch.equal(starts_q, starts_k) and starts_q.dtype == torch.int32
        bounds = starts_q.tolist()
        assert max_q == max_k == max(b - a for a, b in zip(bounds, bounds[1:]))
        return torch.cat([torch.nn.functional.scaled_dot_product_attention(*(t[a:b].transpose(0, 1) for t in (q, k, v))).transpose(0, 1)
                          for a, b in zip(bounds, bounds[1:])])

    calls = []
    monkeypatch.setattr(core, "varlen_kernel", lambda: lambda *a: calls.append(1) or reference_varlen(*a))
    monkeypatch.setattr(core, "use_varlen", lambda q, p: True)
    model = tiny_bert()
    ids, mask = padded_batch(12, 30)
    with torch.no_grad():
        out = model(ids, mask)
    ref, _ = reference_run(model, {"input_ids": ids, "attention_mask": mask})
    assert len(calls) == model.config.num_hidden_layers
    assert (real(out.last_hidden_state, mask) - real(ref, mask)).abs().max() <= TOL
    calls.clear()
    rotary = encoder(None, "nezha")  # attention with its own compute keeps the bucketed path
    with torch.no_grad():
        rotary(ids, mask)
    assert calls == []


def test_varlen_needs_cuda_half_precision_and_no_dropout():
    import bertkit.model as core

    core.varlen_kernel.cache_clear()
    assert not core.use_varlen(torch.zeros(2, 2, 2, dtype=torch.bfloat16), 0.0)  # the CPU
    if torch.cuda.is_available() and core.varlen_kernel() is not None:
        assert core.use_varlen(torch.zeros(2, 2, 2, dtype=torch.bfloat16, device="cuda"), 0.0)
        assert not core.use_varlen(torch.zeros(2, 2, 2, device="cuda"), 0.0)
    elif not torch.cuda.is_available():
        assert core.varlen_kernel.cache_info().currsize == 0  # a CPU run never imports the CUDA kernel's module


@pytest.mark.heavy
def test_torch_compile_fullgraph_equals_eager():
    """torch.compile(fullgraph=True) traces a padded batch (no data-dependent branch in the mask) and
    gives eager's outputs within 1e-5; causal masks too."""
    for mode in ("bidirectional", "causal"):
        model = tiny_bert(attention_mode=mode)
        ids, mask = padded_batch(4, 12)
        with torch.no_grad():
            eager = model(ids, mask).last_hidden_state
            compiled = torch.compile(model, fullgraph=True, backend="aot_eager")(ids, mask).last_hidden_state
        assert (real(compiled, mask) - real(eager, mask)).abs().max() <= TOL, mode


@pytest.mark.heavy
def test_dynamo_onnx_export_equals_eager(tmp_path):
    """The dynamo ONNX exporter (torch.export) takes the model with its padded-batch mask; onnxruntime runs
    the graph to eager's outputs within 1e-5."""
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")

    class Encoder(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids, attention_mask).last_hidden_state

    model = Encoder(tiny_bert()).eval()
    ids, mask = padded_batch(3, 10)
    path = tmp_path / "m.onnx"
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", max=64)
    torch.onnx.export(model, (ids, mask), str(path), dynamo=True, input_names=["input_ids", "attention_mask"],
                      dynamic_shapes={"input_ids": {0: batch, 1: length}, "attention_mask": {0: batch, 1: length}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for ids, mask in (padded_batch(3, 10, seed=1), padded_batch(5, 17, seed=2)):  # other shapes than traced
        got = torch.from_numpy(session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0])
        with torch.no_grad():
            want = model(ids, mask)
        assert (real(got, mask) - real(want, mask)).abs().max() <= TOL


def test_a_batch_without_padding_runs_without_a_mask(monkeypatch):
    """The eager fast path passes no mask for an all-ones attention mask (the unmasked kernels are faster);
    the outputs equal the masked reference path."""
    model = tiny_bert()
    masks = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", lambda *a, **kw: masks.append(kw.get("attn_mask")) or sdpa(*a, **kw))
    monkeypatch.setattr(bertkit.model, "explicit_is_faster", lambda q, k: False)  # every attention through SDPA
    ids = torch.randint(5, 99, (3, 12))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        out = model(ids, mask).last_hidden_state
    assert masks == [None, None]  # both layers
    ref, _ = reference_run(model, {"input_ids": ids, "attention_mask": mask})
    assert masks[2] is not None and (out - ref).abs().max() <= TOL
