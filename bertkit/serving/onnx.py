"""onnxruntime as bertkit's second backend (`--backend onnx`), OpenVINO as its third (`--backend openvino`): an export
of `bertkit export onnx` run through the same calls as the torch model it came from.

OpenVINO reads the same graph (onnxruntime's fused ops included) and picks its own precision: bf16 on a CPU with
AVX512-BF16 or AMX, where it reached 64-91% of the measured bf16 matmul peak against 31-75% for bertkit's eager
path (docs/results/speed-amd-epyc-avx512-bf16.md). bertkit's length buckets run in front of either engine.

`OnnxRunner` is called like that model (same inputs, a BertOutput or a logits tensor back), so
serving.predict's functions run it unchanged; a CRF tagger's Viterbi runs in Python on the emissions
(crf.safetensors beside the graph). Needs the `onnx` extra: onnx and onnxruntime.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from ..config import BertConfig
from ..errors import BertkitError
from ..heads import TaskEntry, own_entry
from ..model import BertOutput

EXPORT_TASKS = ("embed", "encoder", "classify", "pair", "ner")
OUTPUTS = {"embed": ("last_hidden_state", "sentence_embedding"), "encoder": ("last_hidden_state",),
           "classify": ("logits",), "pair": ("logits",), "ner": ("emissions",)}


def _require_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise BertkitError(f"ONNX needs the onnx extra ({e.name} is not installed): pip install 'bertkit[onnx]'.") from None
    return onnx, onnxruntime


# ---- running -------------------------------------------------------------------------------------

BUCKETS = 4  # sub-batches of similar lengths a padded batch runs as (0 or 1: as it comes)
PAD_SHARE = 0.1  # bucket a batch whose padding is at least this share of its shape


def length_buckets(mask: np.ndarray | None, k: int) -> list[tuple[np.ndarray, int]] | None:
    """(rows, their longest length) of up to k groups of similar lengths, for a right-padded batch with >= PAD_SHARE
    padding; None for a batch to run as it is (no mask, few rows, little padding, or not right-padded)."""
    if mask is None or k < 2 or mask.shape[0] < 2:
        return None
    lengths = mask.sum(1)
    if lengths.sum() > (1 - PAD_SHARE) * mask.size or (mask != (np.arange(mask.shape[1])[None] < lengths[:, None])).any():
        return None
    order = np.argsort(lengths, kind="stable")
    return [(rows, max(int(lengths[rows].max()), 1)) for rows in np.array_split(order, min(k, len(order)))]



def onnx_file(path) -> Path:
    """The .onnx file `path` names: the file itself, or the one .onnx file in a directory."""
    p = Path(path).expanduser()
    if p.is_dir():
        found = sorted(p.glob("*.onnx"))
        if len(found) != 1:
            raise BertkitError(f"{p} holds {len(found)} .onnx files; name the one to run.")
        p = found[0]
    if not p.is_file():
        raise BertkitError(f"{p} does not exist.")
    if not (p.parent / "config.json").is_file():
        raise BertkitError(f"{p.parent} has no config.json beside {p.name}: export it with `bertkit export onnx`.")
    return p


class OnnxRunner:
    """An exported model in onnxruntime (CUDA if present, else CPU), called like the torch model.

    runner(input_ids, attention_mask, token_type_ids) -> BertOutput (embed, encoder) or logits [B, C];
    runner(input_ids, attention_mask, token_type_ids, word_index) -> emissions [B, W, C] (ner).
    Inputs and outputs are torch tensors on the CPU; `run` takes and gives numpy arrays.
    """

    def __init__(self, path, task: str | None = None, threads: int | None = None, providers: list[str] | None = None,
                 engine: str = "onnxruntime"):
        self.path = onnx_file(path)
        self.source_dir = self.path.parent  # where the tokenizer is, as for a torch model
        self.config = BertConfig.from_json_file(self.source_dir / "config.json")
        self.engine = engine  # onnxruntime | openvino
        self.session = OpenVinoSession(self.path, threads) if engine == "openvino" else _ort_session(self.path, threads, providers)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.task = task or meta.get("bertkit_task")
        if self.task not in EXPORT_TASKS:
            raise BertkitError(f"{self.path} was not exported by bertkit (no bertkit_task in its metadata).")
        self.precision = meta.get("bertkit_precision", "fp32")
        self.precision_note = (f"a {self.precision} graph in OpenVINO, which runs it in {self.session.precision} on this CPU"
                               if engine == "openvino" else f"a {self.precision} graph in onnxruntime")
        self.inputs = {i.name for i in self.session.get_inputs()}  # an unused input (DistilBERT's types) is pruned
        self.buckets = BUCKETS
        self.crf = self._crf() if self.task == "ner" else None

    def _crf(self):
        from ..crf import CRF, bio_constraints
        from ..heads import labels_of

        f = self.source_dir / "crf.safetensors"
        if not (own_entry(self.config) or TaskEntry("ner")).crf:
            return None
        if not f.is_file():
            raise BertkitError(f"{self.source_dir} lacks crf.safetensors, which this CRF tagger needs.")
        from safetensors.torch import load_file

        labels = labels_of(self.config)
        crf = CRF(len(labels), bio_constraints(labels))
        crf.load_state_dict(load_file(str(f)))
        return crf.eval()

    def run(self, feeds: dict) -> list[np.ndarray]:
        """The graph's outputs for a batch (numpy or torch int64 arrays by input name), in OUTPUTS order.

        A right-padded batch with >= 10% padding runs as at most `buckets` sub-batches of similar lengths, each
        cut to its own longest (the torch fast path's packing, in the only form a graph of fixed layout takes);
        the outputs are put back in the batch's order and shape (zeros at padding)."""
        T = feeds["input_ids"].shape[1]
        if T > self.config.max_length:
            raise BertkitError(f"input length {T} exceeds the model's maximum of {self.config.max_length} tokens.")
        arrays = {k: np.ascontiguousarray(v.numpy() if isinstance(v, torch.Tensor) else v, dtype=np.int64)
                  for k, v in feeds.items() if k in self.inputs}
        parts = length_buckets(arrays.get("attention_mask"), self.buckets) if self.task != "ner" else None
        if parts is None:
            return self.session.run(list(OUTPUTS[self.task]), arrays)
        B = arrays["input_ids"].shape[0]
        outs: list[np.ndarray | None] = [None] * len(OUTPUTS[self.task])
        for rows, n in parts:
            got = self.session.run(list(OUTPUTS[self.task]), {k: v[rows, :n] for k, v in arrays.items()})
            for i, g in enumerate(got):
                if outs[i] is None:  # [B, T, H] for hidden states (zeros at padding), [B, ...] otherwise
                    outs[i] = np.zeros((B, T, *g.shape[2:]) if OUTPUTS[self.task][i] == "last_hidden_state" else (B, *g.shape[1:]), g.dtype)
                if OUTPUTS[self.task][i] == "last_hidden_state":
                    outs[i][rows, :n] = g * arrays["attention_mask"][rows, :n, None]  # as the torch path: zeros at padding
                else:
                    outs[i][rows] = g
        return outs

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, word_index=None, hidden: bool = False):
        if hidden:
            raise BertkitError("an ONNX graph has no hidden states to return; use the PyTorch model (e.g. as a teacher).")
        feeds = {"input_ids": input_ids,
                 "attention_mask": torch.ones_like(input_ids) if attention_mask is None else attention_mask,
                 "token_type_ids": torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids}
        if self.task == "ner":
            if word_index is None:
                raise BertkitError("a ner graph needs word_index, the token position of each word's first piece.")
            feeds["word_index"] = word_index
        out = [torch.from_numpy(a) for a in self.run(feeds)]
        if self.task in ("embed", "encoder"):
            return BertOutput(out[0], None)
        return out[0]

    # What predict.encode_sentences and predict.predict_features ask of a model.
    def decode(self, emissions, word_mask) -> list[list[int]]:
        """Tags per word: the CRF's Viterbi path or the argmax, exactly as the torch tagger decodes."""
        from ..heads import BertForTokenClassification

        return BertForTokenClassification.decode(self, emissions, word_mask)  # it reads only self.crf

    def eval(self) -> OnnxRunner:
        return self

    def parameters(self):
        """One empty CPU tensor: callers put their inputs on its device; onnxruntime copies them to its own."""
        yield torch.empty(0)


def _ort_session(path: Path, threads: int | None, providers: list[str] | None):
    _, ort = _require_onnx()
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if providers is None:
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # onnxruntime's own exception types
        reason = str(e).strip().splitlines()[0]
        raise BertkitError(f"{path} is not a graph onnxruntime can run ({reason}).") from RuntimeError(reason)


class OpenVinoSession:
    """An OpenVINO model compiled for the CPU behind the three calls OnnxRunner makes of onnxruntime's session (run,
    get_inputs, get_modelmeta). OpenVINO chooses the precision (`precision`: bf16 where the CPU has bf16 hardware)."""

    def __init__(self, path: Path, threads: int | None = None):
        try:
            import onnx
            import openvino as ov
        except ImportError as e:
            raise BertkitError(f"--backend openvino needs the openvino extra ({e.name} is not installed): "
                               "pip install 'bertkit[openvino]'.") from None
        config = {"PERFORMANCE_HINT": "LATENCY"} | ({"INFERENCE_NUM_THREADS": threads} if threads else {})
        try:
            self.model = ov.Core().compile_model(str(path), "CPU", config)
        except RuntimeError as e:
            raise BertkitError(f"{path} is not a graph OpenVINO can run ({str(e).strip().splitlines()[0]}).") from None
        self.request = self.model.create_infer_request()
        self.meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        self.precision = self.model.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "bf16", "f32"

    def run(self, names: list[str], feeds: dict) -> list[np.ndarray]:
        out = self.request.infer(feeds)
        return [np.array(out[self.model.output(n)]) for n in names]  # copies: the request reuses its buffers

    def get_inputs(self):
        return [SimpleNamespace(name=i.get_any_name()) for i in self.model.inputs]

    def get_modelmeta(self):
        return SimpleNamespace(custom_metadata_map=self.meta)


def load_onnx(path, tasks: tuple[str, ...] = EXPORT_TASKS, threads: int | None = None,
              engine: str = "onnxruntime") -> tuple[OnnxRunner, object]:
    """(runner, tokenizer) for an exported model (the .onnx file or its directory) whose task is one of `tasks`.

    The `--backend onnx` and `--backend openvino` hook: embed_file and predict_command take this pair in place of
    the torch model's.
    """
    from ..tokenizer import Tokenizer

    runner = OnnxRunner(path, threads=threads, engine=engine)
    if runner.task not in tasks:
        need = "an embed or encoder export" if "embed" in tasks else "a fine-tuned model exported with its own task"
        raise BertkitError(f"{runner.path} was exported for {runner.task}; this needs {need}.")
    return runner, Tokenizer.from_pretrained(runner.source_dir)


