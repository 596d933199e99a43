"""benchmarks/speed.py end to end on a tiny random model: it runs, prints every path, and the
correctness columns hold (no timing is asserted: timings on a shared machine prove nothing)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bertkit import BertModel

pytestmark = pytest.mark.heavy  # every benchmark script end to end: not in make test-fast

ROOT = Path(__file__).resolve().parent.parent


def test_speed_tiny_runs_and_agrees(tmp_path):
    pytest.importorskip("transformers")
    out = tmp_path / "speed.md"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    # one thread: on a busy machine torch's two-thread parallel regions can take 100x longer (no timing is checked)
    engines = "transformers,bertkit-torch,bertkit,bertkit-fp32,bertkit-int8,bertkit-onnx,ort-fused,openvino,openvino-default,ct2,ct2-int8"
    command = ["benchmarks/speed.py", "--tiny", "--threads", "1", "--write-docs", "--out", str(out), "--engines", engines]
    run = subprocess.run([sys.executable, *command],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]

    paths = ["bertkit fp32", "bertkit bf16", "transformers fp32", "transformers bf16"]
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        paths.append("onnxruntime fp32")
    if hasattr(BertModel, "unpad"):
        paths.append("bertkit fp32 reference")
    for name in paths:
        assert f"| {name} |" in run.stdout, f"no row for {name} in the table"
    for name in ("bertkit fp32", "bertkit bf16 autocast", "transformers fp32", "transformers bf16 autocast"):
        assert f"| {name} | AdamW" in run.stdout, f"no pretraining row for {name}"

    res = json.loads(out.with_suffix(".json").read_text())
    assert f"`python {' '.join(command)}`" in out.read_text()  # the exact command line
    assert len(res["inference"]) == 5  # every --tiny case, the padded one included
    for row in res["inference"]:
        got = row["paths"]
        assert set(got) == set(paths)
        for name, p in got.items():
            if name.endswith("fp32") or name.endswith("reference"):
                if not name.startswith("transformers"):
                    assert p["max_abs_diff"] <= 1e-4, (row["case"], name, p)
            else:
                assert p["min_cosine"] >= 0.99, (row["case"], name, p)
    assert any(row["padding"] > 0.2 for row in res["inference"])
    loss = res["training"]["initial_loss"]
    assert abs(loss["bertkit"] - loss["transformers"]) <= 1e-4


    # the engines, each in its own process: every installed one ran every case and agrees with transformers
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import engines as peers_module  # benchmarks/engines.py

    race = res["peers"]["tiny"]
    expected = [e for e in engines.split(",") if peers_module.available(e)]
    assert race["engines"] == expected, (race["engines"], run.stderr[-2000:])
    for case, cell in race["cases"].items():
        assert set(cell) == set(expected), case
        for name, c in cell.items():
            assert c["ms"] > 0 and c["calls"] >= 1
            least = 0.999 if name in peers_module.FP32 else 0.99
            assert c["min_cosine"] >= least, (case, name, c)
    assert "## Engines, each in its own process: tiny" in run.stdout and "## Targets against the engines" in run.stdout
    assert "the default path (`bertkit`) vs the fastest fp32 peer" in run.stdout  # the speed issue's targets, per case
    assert "Share of the measured matmul peak" in run.stdout and "vendor" in res["machine"]  # the CPU named
    assert race["notes"]["bertkit"].split(" ")[0] in ("fp32", "bf16")  # what the default chose, in the report


def test_gpu_check_runs_on_the_cpu(tmp_path):
    """benchmarks/gpu_check.py's code on the CPU with tiny models (the GPU run is by hand, on a GPU machine)."""
    pytest.importorskip("transformers")
    out = tmp_path / "gpu.md"
    run = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--tiny", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    assert run.returncode == 0, run.stderr[-3000:]
    text = out.read_text()
    for member in ("bert", "roberta", "albert", "electra", "distilbert", "roformer"):
        row = next(line for line in text.splitlines() if line.startswith(f"| {member} |"))
        diff, cos = (float(x) for x in row.strip("|").split("|")[1:3])
        assert diff <= 1e-4 and cos >= 0.99, row
    assert "| tiny | 32 x 32 | bertkit |" in text and "| bertkit | " in text


def test_generate_cache_benchmark_runs_and_agrees(tmp_path):
    """benchmarks/generate_cache.py on a 2-layer model: every path (cached, uncached, transformers) writes the same tokens."""
    pytest.importorskip("transformers")
    out = tmp_path / "gen.md"
    run = subprocess.run([sys.executable, "benchmarks/generate_cache.py", "--tiny", "--new-tokens", "24", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    text = out.read_text()
    assert "All paths wrote the same 24 tokens: yes." in text and "| bertkit, key/value cache |" in text


def test_pretrain_report_renders_its_committed_results(tmp_path):
    """The results table in docs is what benchmarks/pretrain_report.py renders from its JSON: render the
    windows report again from its committed JSON and find its committed results rows in the output."""
    name, kept = "pretrain-60min-windows", ROOT / "docs" / "results" / "archive"
    (tmp_path / f"{name}.json").write_bytes((kept / f"{name}.json").read_bytes())
    run = subprocess.run([sys.executable, "benchmarks/pretrain_report.py", "--render-only", "--out", str(tmp_path / f"{name}.md")],
                         cwd=ROOT, env=os.environ | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    rendered = (tmp_path / f"{name}.md").read_text(encoding="utf-8")
    rows = [line for line in (kept / f"{name}.md").read_text(encoding="utf-8").splitlines()
            if line.startswith("| MLM + whole-word masking |")]
    assert rows and all(row in rendered.splitlines() for row in rows)
    assert "94.16 ± 0.17 (n=3)" in rendered and "85.14 ± 0.43 (n=3)" in rendered


@pytest.mark.slow
def test_pretrain_report_resumes_from_a_kept_checkpoint(tmp_path):
    """A later session resumes the report in a fresh work directory holding only the pretrained model (as
    benchmarks/checkpoints keeps it): nothing is pretrained again, and the students' teacher, gone with the old work
    directory, is fine-tuned again (the earlier run kept as superseded)."""
    work, out = tmp_path / "work", tmp_path / "report.md"
    args = [sys.executable, "benchmarks/pretrain_report.py", "--model", "benchmarks/configs/roformer-tiny-zh.json", "--objectives", "wwm",
            "--minutes", "0.02", "--calibration-steps", "5", "--tasks", "ner", "--seeds", "1", "--epochs", "1", "--ner-train-limit", "48",
            "--no-random", "--bigram-buckets", "0", "--adv", "none", "--no-bf16", "--work", str(work), "--out", str(out)]
    env = os.environ | {"OMP_NUM_THREADS": "2"}
    first = subprocess.run(args + ["--distill-tasks"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    before = json.loads(out.with_suffix(".json").read_text())
    kept = tmp_path / "kept"
    (work / "pre-wwm" / "model").rename(kept)
    shutil.rmtree(work)
    (work / "pre-wwm").mkdir(parents=True)
    kept.rename(work / "pre-wwm" / "model")
    second = subprocess.run(args + ["--distill-tasks", "ner", "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    after = json.loads(out.with_suffix(".json").read_text())
    assert after["pretrain"] == before["pretrain"] and "] pretraining wwm" not in second.stderr + second.stdout  # no log line
    assert "ner/student/s1" in after["runs"] and "ner/wwm/s1@0" in after["superseded_runs"]
    assert (work / "ft" / "ner-wwm-s1" / "model").is_dir()


@pytest.mark.slow
def test_electra_ablation_runs_and_probes(tmp_path):
    """benchmarks/electra_ablation.py on a small corpus: an MLM and an ELECTRA variant pretrain, the discriminator is
    probed on its generator's and on uniform replacements, and the table keeps its hand-written reading."""
    from bertkit.data.corpus import prepare
    from bertkit.data.datasets import load_dataset
    from bertkit.tokenizer import Tokenizer

    vocab = ROOT / "benchmarks" / "checkpoints" / "roformer-tiny-zh-wwm60"
    text = tmp_path / "text.txt"
    text.write_text("\n".join(e.text for e in list(load_dataset("reviews-zh")["train"])[:1500]), encoding="utf-8")
    prepare(str(text), Tokenizer.from_pretrained(vocab), tmp_path / "corpus", wwm=True)
    out = tmp_path / "ablation.md"
    args = [sys.executable, "benchmarks/electra_ablation.py", "--vocab", str(vocab), "--corpus", str(tmp_path / "corpus"),
            "--variants", "M", "E3", "--steps", "20", "--finetune-epochs", "0", "--work", str(tmp_path / "work"), "--out", str(out)]
    env = os.environ | {"OMP_NUM_THREADS": "2"}
    run = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    table = out.read_text(encoding="utf-8")
    assert "| M | whole-word-masked MLM" in table and "| E3 | E1 with ELECTRA-Small's generator: 1/4" in table
    e3 = json.loads(out.with_suffix(".json").read_text())["results"]["E3"]
    assert 0.05 < e3["probe_generator"]["replaced"] < 0.16 and 0.10 < e3["probe_uniform"]["replaced"] < 0.16
    out.write_text(table.replace("(written by hand after the run)", "kept words"), encoding="utf-8")
    again = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)  # nothing trained again
    assert again.returncode == 0 and "steps in" not in again.stdout, again.stderr[-3000:]
    assert "kept words" in out.read_text(encoding="utf-8")
    bad_args = args[:3] + ["/nonexistent"] + args[4:-4] + ["--work", str(tmp_path / "bad"), "--out", str(tmp_path / "bad.md")]
    bad = subprocess.run(bad_args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


def test_pretrain_report_records_windows_for_every_ner_run():
    """An NER run records that it read long sentences as windows whether or not adversarial training applies to it
    (the report's CRF-baseline target and its recall note depend on it); classification records nothing of windows."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from pretrain_report import make_parser, run_settings

    a = vars(make_parser().parse_args(["--adv", "fgm", "--adv-tasks", "classify", "ner"]))
    assert run_settings(a, "ner")["windows"] is True and run_settings(a, "ner")["adv"] == "fgm"
    assert run_settings(a, "ner", student=True)["windows"] is True and run_settings(a, "ner", student=True)["adv"] is None
    assert "windows" not in run_settings(a, "classify") and run_settings(a, "classify")["adv"] == "fgm"
    plain = vars(make_parser().parse_args([]))  # the defaults: FGM on both tasks (docs/results/pretrain-60min-kept-ner-nofgm.md)
    assert run_settings(plain, "ner")["windows"] is True and run_settings(plain, "ner")["adv"] == "fgm"
    no_ner = vars(make_parser().parse_args(["--adv-tasks", "classify"]))
    assert run_settings(no_ner, "ner")["windows"] is True and run_settings(no_ner, "ner")["adv"] is None
