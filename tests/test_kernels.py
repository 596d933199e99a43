"""The CPU inference kernels (bertkit/kernels.py) against the plain ones: oneDNN prepacked fp32 within 1e-5,
int8 within its pooled-cosine bound on the real MiniLM weights and real text, and the load-time check that
drops a path that disagrees."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from test_fastpath import FAMILY, encoder, hard_batches, real, tiny_bert

import bertkit
from bertkit import kernels
from bertkit.cli import main
from bertkit.kernels import Int8Linear, PackedLinear, kernels_of, prepack, quantize_int8, reference_kernels
from bertkit.model import explicit_attention
from bertkit.serving import load

needs_onednn = pytest.mark.skipif(not kernels.onednn_linear(), reason="this torch has no oneDNN linear on the CPU")
needs_int8 = pytest.mark.skipif(not kernels.int8_matmul(), reason="torch._int_mm does not run on this CPU")
TOL = 1e-5


def both(model, batch):
    """(fast kernels, plain kernels) last_hidden_state of one batch."""
    with torch.inference_mode():
        fast = model(**batch).last_hidden_state
        with reference_kernels():
            ref = model(**batch).last_hidden_state
    return fast, ref


@needs_onednn
@pytest.mark.parametrize("name", ["bert", *FAMILY, "nezha"])
def test_prepacked_equals_plain_kernels(tmp_path, name):
    model = encoder(tmp_path, name)
    keys = {k: v.clone() for k, v in model.state_dict().items()}
    linears = sum(type(m) is torch.nn.Linear for m in model.modules())  # 4 a block (DeBERTa-v2: 6), pooler, projection
    assert linears >= 4 * model.config.num_blocks
    n = prepack(model)
    assert n == linears
    assert kernels_of(model) == "onednn"
    assert keys.keys() == model.state_dict().keys()  # the same names and values: save_pretrained is unchanged
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in keys.items())
    c = model.config
    for batch in hard_batches(c.pad_token_id, min(c.max_length, 40)):
        fast, ref = both(model, batch)
        assert (real(fast, batch["attention_mask"]) - real(ref, batch["attention_mask"])).abs().max() <= TOL


@needs_onednn
def test_gelu_is_fused_and_training_runs_plain_and_repacks():
    model = tiny_bert()
    prepack(model)
    ffn = model.layers[0].ffn
    assert isinstance(ffn.up, PackedLinear) and ffn.up.act is torch.nn.functional.gelu
    ids = torch.randint(5, 99, (2, 8))
    model.train()
    model(ids).last_hidden_state.sum().backward()  # autograd records: plain F.linear, gradients reach the weights
    assert ffn.up.weight.grad is not None and ffn.up.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        before, _ = both(model, {"input_ids": ids})
        ffn.up.weight.add_(0.5)  # a changed weight: the packed copy is rebuilt, never stale
        after, ref = both(model, {"input_ids": ids})
    assert (after - before).abs().max() > 1e-3 and (after - ref).abs().max() <= TOL


@needs_onednn
def test_kernels_of_tells_the_truth_where_onednn_refuses_a_dtype(monkeypatch):
    # an AVX2-only CPU refuses oneDNN bf16: the prepacked layers run F.linear and describe() must say "torch"
    model = tiny_bert().to(torch.bfloat16)
    prepack(model)
    assert kernels_of(model) == ("onednn" if kernels.onednn_dtype(torch.bfloat16) else "torch")
    monkeypatch.setattr(kernels, "onednn_dtype", lambda dtype: dtype == torch.float32)
    assert kernels_of(model) == "torch" and kernels_of(model.float()) == "onednn"
    ids = torch.randint(5, 99, (2, 8))
    with torch.no_grad():
        fast, ref = both(model, {"input_ids": ids})
    assert (fast - ref).abs().max() <= TOL


def test_explicit_attention_equals_sdpa():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 4, 7, 8, generator=g) for _ in range(3))
    masks = [None, torch.rand(3, 1, 1, 7, generator=g) > 0.3, torch.ones(7, 7, dtype=torch.bool).tril()[None, None]]
    masks[1][..., 0] = True  # every query sees at least one key
    for mask in masks:
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        assert (explicit_attention(q, k, v, mask) - ref).abs().max() <= TOL
    import bertkit.model as m

    old, m.EXPLICIT_CHUNK = m.EXPLICIT_CHUNK, 4 * 7 * 7  # one sequence per chunk
    try:
        assert (explicit_attention(q, k, v, masks[1]) - torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=masks[1])).abs().max() <= TOL
    finally:
        m.EXPLICIT_CHUNK = old


@needs_int8
def test_int8_linear_is_close_and_keeps_few_token_calls():
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(64, 48)
    q = Int8Linear(lin)
    for rows in (1, 16, 17, 100):
        x = torch.randn(rows, 64, generator=g)
        with torch.no_grad():
            ref, got = lin(x), q(x)
        assert got.shape == ref.shape
        assert float(torch.nn.functional.cosine_similarity(got, ref).min()) > 0.999
    x = torch.randn(2, 5, 64, generator=g)
    with torch.no_grad():
        assert q(x).shape == (2, 5, 48)


@pytest.mark.heavy
@needs_int8
def test_int8_minilm_keeps_the_pooled_vectors(minilm_dir):
    """The issue's bar on the real weights: the least cosine of mean-pooled vectors to fp32 >= 0.99, on
    English sentences and Chinese reviews."""
    from bertkit.data.datasets import load_dataset

    model, tok = load.load_for_inference(minilm_dir, kind="encoder", kernels="torch")
    q = copy.deepcopy(model)
    assert quantize_int8(q) == 4 * 6  # qkv, o, up, down in each of 6 layers
    texts = ["The quick brown fox jumps over the lazy dog.", "How do I reset my password?", "A man is playing a guitar.",
             "Stocks fell sharply after the central bank raised rates.", "hi"]
    texts += [e.text for e in load_dataset("reviews-zh")["test"][:64]]
    batch = tok(texts, max_length=128)
    with torch.inference_mode():
        a = bertkit.mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])
        b = bertkit.mean_pool(q(**batch).last_hidden_state, batch["attention_mask"])
    assert float(torch.nn.functional.cosine_similarity(a, b).min()) >= 0.99


@pytest.mark.heavy
@needs_onednn
def test_load_picks_the_fast_kernels_and_drops_ones_that_disagree(minilm_dir, monkeypatch, capsys):
    model, _ = load.load_for_inference(minilm_dir, kind="encoder", kernels="onednn", precision="fp32")
    assert kernels_of(model) == "onednn"
    assert kernels_of(load.load_for_inference(minilm_dir, kind="encoder", kernels="torch")[0]) == "torch"
    if kernels.int8_matmul():
        assert kernels_of(load.load_for_inference(minilm_dir, kind="encoder", int8=True)[0]) == "int8"
        monkeypatch.setattr(load, "INT8_BOUND", 1.01)  # no int8 result can pass: the check must drop the path
        model, _ = load.load_for_inference(minilm_dir, kind="encoder", int8=True)
        assert kernels_of(model) == "torch" and "int8 kernels disagree" in capsys.readouterr().err
        assert not any(isinstance(m, (Int8Linear, PackedLinear)) for m in model.modules())
    monkeypatch.setattr(load, "FP32_BOUND", -1.0)
    model, _ = load.load_for_inference(minilm_dir, kind="encoder", kernels="onednn", precision="fp32")
    assert kernels_of(model) == "torch" and "onednn kernels disagree" in capsys.readouterr().err
    assert model.layers[0].ffn.act is torch.nn.functional.gelu  # the fused GELU is back in place


@pytest.mark.parametrize("flags, needs", [([], "auto"), (["--precision", "fp32"], None), (["--precision", "fp32", "--kernels", "onednn"], None),
                                          (["--int8"], "int8")])
@pytest.mark.heavy
def test_embed_paths_agree(minilm_dir, tmp_path, flags, needs):
    if needs == "int8" and not kernels.int8_matmul():
        pytest.skip("torch._int_mm does not run on this CPU")
    src = tmp_path / "in.txt"
    src.write_text("A man is playing a guitar.\nThe weather is lovely today.\n一个男人在弹吉他。\n", encoding="utf-8")
    args = ["embed", str(minilm_dir), "--input", str(src), "--quiet"]
    assert main([*args, "--output", str(tmp_path / "ref.npy"), "--kernels", "torch", "--precision", "fp32"]) == 0
    assert main([*args, "--output", str(tmp_path / "x.npy"), *flags]) == 0
    a, b = np.load(tmp_path / "ref.npy"), np.load(tmp_path / "x.npy")
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() >= {"int8": 0.99, "auto": load.AUTO_BF16_BOUND}.get(needs, 1 - 1e-6), cos


def test_impossible_kernel_choices_are_refused(minilm_dir, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("hello\n", encoding="utf-8")
    args = ["embed", str(minilm_dir), "--input", str(src), "--output", str(tmp_path / "x.npy"), "--quiet"]
    assert main([*args, "--int8", "--bf16"]) == 1
    assert "choose one of --int8 and --bf16" in capsys.readouterr().err
    assert main([*args, "--int8", "--kernels", "torch"]) == 1
    assert "cannot be combined" in capsys.readouterr().err
    assert not (tmp_path / "x.npy").exists()


def test_serve_backend_reports_its_kernels(minilm_dir, tmp_path):
    from bertkit.errors import BertkitError
    from bertkit.serving.backend import backend_factory

    described = backend_factory(minilm_dir, "torch", kernels="onednn")().describe()
    assert described["kernels"] == ("onednn" if kernels.onednn_linear() else "torch")
    assert described["precision"] in ("fp32", "bf16") and described["precision_note"].startswith(described["precision"])
    assert backend_factory(minilm_dir, "torch", kernels="torch")().describe()["kernels"] == "torch"
    if kernels.int8_matmul():
        backend = backend_factory(minilm_dir, "torch", int8=True)()
        assert backend.describe()["kernels"] == "int8"
        rows = backend.run("embed", ["a man plays a guitar", "一个男人在弹吉他"], [7, 9])
        assert len(rows) == 2 and rows[0]["embedding"].shape == (384,)
    with pytest.raises(BertkitError, match="choose one of --int8 and --bf16"):
        backend_factory(minilm_dir, "torch", bf16=True, int8=True)
    with pytest.raises(BertkitError, match="applies to --backend torch"):
        backend_factory(tmp_path / "x.onnx", "onnx", int8=True)


@pytest.mark.heavy
@needs_onednn
def test_compiled_prepacked_model_equals_plain_kernels():
    """torch.compile of a prepacked model (the oneDNN call as an opaque custom op) equals torch's kernels."""
    if not hasattr(torch.library, "custom_op"):
        pytest.skip("this torch has no torch.library.custom_op")
    model = tiny_bert()
    prepack(model)
    ids = torch.randint(5, 99, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    compiled = torch.compile(model, dynamic=False)
    with torch.inference_mode():
        got = compiled(ids, mask).last_hidden_state
        with reference_kernels():
            ref = model(ids, mask).last_hidden_state
    assert (real(got, mask) - real(ref, mask)).abs().max() <= TOL


@pytest.mark.heavy
def test_int8_benchmark_runs_tiny(minilm_dir, tmp_path):
    """benchmarks/int8_accuracy.py on a few sentences (no classifier): it runs and its table holds the bound."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    try:
        import int8_accuracy
    finally:
        sys.path.pop(0)
    out = tmp_path / "int8.md"
    int8_accuracy.main(["--sentences", "6", "--out", str(out)])
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "bertkit int8" in line]
    assert len(rows) == 2 and all(float(r.split("|")[3]) >= 0.99 for r in rows), rows


def test_long_inputs_are_padded_to_a_few_shapes_and_still_equal_torch():
    """Rows are padded up to a bucket before the oneDNN call (a bounded set of shapes, so a server's memory stays
    bounded: 24 up to 512 rows, padding at most 12.5% past 128) and cut back: every row count gives F.linear's answer."""
    buckets = {kernels.padded_rows(r) for r in range(1, 513)}
    assert len(buckets) == 24 and all(kernels.padded_rows(r) >= r for r in range(1, 4097))
    assert max(kernels.padded_rows(r) / r for r in range(129, 4097)) <= 1.125
    if not kernels.onednn_linear():
        pytest.skip("this torch has no oneDNN prepacked linear")
    lin = torch.nn.Linear(24, 40)
    packed = PackedLinear(lin)
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for rows in (1, 15, 63, 64, 65, 127, 128, 200, 513):
            x = torch.randn(rows, 24, generator=g)
            got = packed(x)
            assert got.shape == (rows, 40) and torch.allclose(got, lin(x), atol=1e-5), rows
        x = torch.randn(3, 7, 24, generator=g)  # a padded batch: its 21 rows take the 32-row bucket too
        assert torch.allclose(packed(x), lin(x), atol=1e-5)


# ---- precision and kernels chosen on the machine at hand -------------------------------------------------------------

FAKE_TIMES = {"fp32/torch": 4.0, "fp32/onednn": 2.0, "bf16/torch": 1.5, "bf16/onednn": 1.0}


def fake_times(**changes):
    times = FAKE_TIMES | changes
    return lambda model, dtypes=(torch.float32, torch.bfloat16): {p: t for p, t in times.items()
                                                                 if kernels.DTYPES[p.split("/")[0]] in dtypes}


@pytest.mark.heavy
def test_auto_precision_takes_bf16_only_with_hardware_a_measured_gain_and_a_passing_check(minilm_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("BERTKIT_CACHE", str(tmp_path))  # an empty cache: the first load checks, the second reads it
    monkeypatch.setattr(load, "measured_paths", fake_times())
    monkeypatch.setattr(load, "bf16_is_fast", lambda device=None: True)  # as on a CPU with AVX512-BF16 or AMX
    model, _ = load.load_for_inference(minilm_dir, kind="encoder")
    assert model.precision == "bf16" and model.layers[0].attn.qkv.weight.dtype == torch.bfloat16
    assert "least pooled cosine to fp32 0.9999" in model.precision_note  # MiniLM on the check sentences: 0.99998
    again, _ = load.load_for_inference(minilm_dir, kind="encoder")  # the same weights: the check's answer is cached
    assert again.precision == "bf16" and "(cached)" in again.precision_note and "(cached)" not in model.precision_note
    assert again.layers[0].attn.qkv.weight.dtype == torch.bfloat16
    monkeypatch.setattr(load, "AUTO_BF16_BOUND", 1.01)  # no bf16 model can pass: fp32, and the note says why
    model, _ = load.load_for_inference(minilm_dir, kind="encoder")
    assert model.precision == "fp32" and next(model.parameters()).dtype == torch.float32 and "under 1.01" in model.precision_note
    monkeypatch.setattr(load, "measured_paths", fake_times(**{"bf16/torch": 9.0, "bf16/onednn": 8.0}))
    model, _ = load.load_for_inference(minilm_dir, kind="encoder")
    assert model.precision == "fp32" and "measured no faster" in model.precision_note
    monkeypatch.setattr(load, "bf16_is_fast", lambda device=None: False)
    model, _ = load.load_for_inference(minilm_dir, kind="encoder")
    assert model.precision == "fp32" and "no bf16 hardware" in model.precision_note


@needs_onednn
def test_auto_kernels_follow_the_measurement(minilm_dir, monkeypatch):
    monkeypatch.setattr(load, "measured_paths", fake_times())
    assert kernels_of(load.load_for_inference(minilm_dir, kind="encoder", precision="fp32")[0]) == "onednn"
    monkeypatch.setattr(load, "measured_paths", fake_times(**{"fp32/torch": 1.0}))  # as on an Intel Xeon with AMX
    model, _ = load.load_for_inference(minilm_dir, kind="encoder", precision="fp32")
    assert kernels_of(model) == "torch" and "torch's own kernels (measured here: 2.00x as fast as oneDNN" in model.precision_note
    assert kernels_of(load.load_for_inference(minilm_dir, kind="encoder", precision="fp32", kernels="onednn")[0]) == "onednn"


def test_measured_paths_are_timed_once_per_cpu_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTKIT_CACHE", str(tmp_path / "cache"))
    timed = []
    monkeypatch.setattr(kernels, "_time_path", lambda path, shapes: timed.append(path) or 1.0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 8), torch.nn.Linear(8, 16))
    assert kernels.linear_shapes(model) == {(16, 8): 2, (8, 16): 1}
    first = kernels.measured_paths(model, (torch.float32,))
    assert set(first) == {p for p in kernels.PATHS if p.startswith("fp32") and kernels._runs(p)} and timed
    count = len(timed)
    assert kernels.measured_paths(model, (torch.float32,)) == first and len(timed) == count  # from the cache file
    kernels.measured_paths(model, (torch.float32, torch.bfloat16))  # only the bf16 paths are new
    assert all(p.startswith("bf16") for p in timed[count:]) and len(timed) > count
    key = next(iter(json.loads(kernels.cache_file().read_text())))
    assert kernels.cpu_name() in key and torch.__version__ in key
    kernels.cache_file().write_text("{not json")  # a damaged cache is measured again, not an error
    assert kernels.measured_paths(model, (torch.float32,)) == first


def test_real_timings_name_a_kernel_per_dtype(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTKIT_CACHE", str(tmp_path))
    model = torch.nn.Sequential(torch.nn.Linear(24, 40), torch.nn.Linear(40, 24))
    times = kernels.measured_paths(model, (torch.float32,))
    assert all(t > 0 for t in times.values()) and kernels.fastest(times, torch.float32) in ("onednn", "torch")
    assert kernels.fastest({}, torch.bfloat16) == "torch"


def test_cpu_name_reads_the_model_and_the_flags_that_matter(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t\t: fpu avx2 avx512f amx_bf16 "
                    "amx_tile sse\n", encoding="utf-8")
    assert kernels.cpu_name(str(info)) == "Intel(R) Xeon(R) Platinum 8488C [avx2 avx512f amx_bf16 amx_tile]"
    assert load.bf16_is_fast("cpu", str(info))


@pytest.mark.parametrize("precision, bf16, int8, expect", [
    (None, False, False, "auto"), (None, True, False, "bf16"), (None, False, True, "int8"), ("fp32", False, False, "fp32"),
    ("bf16", True, False, "bf16"), ("int8", False, True, "int8"),
    ("fp32", True, False, "contradicts"), ("bf16", False, True, "contradicts"), (None, True, True, "choose one"),
    ("fp16", False, False, "must be one of")])
def test_precision_flags_resolve_or_are_refused(precision, bf16, int8, expect):
    from bertkit.errors import BertkitError

    if expect in load.PRECISIONS:
        assert load.resolve_precision(precision, bf16, int8) == expect
    else:
        with pytest.raises(BertkitError, match=expect):
            load.resolve_precision(precision, bf16, int8)


def test_bf16_matmuls_keep_fp32_between_them_and_beat_the_whole_cast(minilm_dir):
    """auto's bf16 on a plain-attention family: the layers' matmuls in bf16, the residual stream, norms and heads in
    fp32; closer to fp32 than casting the whole model (a one-word text included), on both kernels."""
    from bertkit.model import mean_pool

    ref, tok = load.load_for_inference(minilm_dir, kind="encoder", precision="fp32", kernels="torch")
    whole, _ = load.load_for_inference(minilm_dir, kind="encoder", precision="bf16", kernels="torch")
    batch = tok(["ok", "A man is playing a guitar on the street corner.", "这家酒店的服务态度非常差。"])
    def cosine(model):
        with torch.inference_mode():
            h = model(batch["input_ids"], batch["attention_mask"]).last_hidden_state
        assert h.dtype == (torch.float32 if model is not whole else torch.bfloat16)
        return float(torch.nn.functional.cosine_similarity(mean_pool(h.float(), batch["attention_mask"]), want).min())

    with torch.inference_mode():
        want = mean_pool(ref(batch["input_ids"], batch["attention_mask"]).last_hidden_state, batch["attention_mask"])
    for kernel in ("torch", "onednn"):
        mixed = copy.deepcopy(ref)
        assert kernels.bf16_matmuls(mixed) == 6 * 4  # qkv, o, up, down in each of the 6 layers
        if kernel == "onednn" and kernels.onednn_dtype(torch.bfloat16):
            prepack(mixed)  # the input cast survives the replacement
            assert isinstance(mixed.layers[0].attn.qkv, PackedLinear)
        assert mixed.embed.word.weight.dtype == mixed.layers[0].attn_norm.weight.dtype == torch.float32
        assert mixed.layers[0].ffn.down.weight.dtype == torch.bfloat16
        assert cosine(mixed) >= 0.9999 and cosine(mixed) > cosine(whole)
    load.unpack(mixed)  # back to nn.Linear: still casting its input
    assert cosine(mixed) >= 0.9999


def test_auto_casts_families_with_their_own_position_compute_whole(monkeypatch, tmp_path):
    """RoFormer's rotary terms meet the queries in the hidden states' dtype: auto casts such a model whole."""
    from test_family import roformer
    from conftest import save_hf

    monkeypatch.setenv("BERTKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(load, "measured_paths", fake_times())
    monkeypatch.setattr(load, "bf16_is_fast", lambda device=None: True)
    monkeypatch.setattr(load, "AUTO_BF16_BOUND", 0.99)  # a random tiny model: the mode is what is checked here
    import transformers

    d = save_hf(transformers.RoFormerModel(roformer()).eval(), tmp_path / "roformer", "safetensors")
    model, _ = load.load_for_inference(d, kind="encoder", tokenizer=False)
    assert model.precision == "bf16" and "bf16 throughout" in model.precision_note
    assert next(model.parameters()).dtype == torch.bfloat16
