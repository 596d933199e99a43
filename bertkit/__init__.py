"""bertkit: the BERT family written plainly in PyTorch, loading the real checkpoints.

Layers, each importing only those above it in this list (docs/architecture.md; tests/test_layers.py):
    errors.py, version.py, flags.py   errors users can fix; the version; command-line flag helpers
    io/           files (reading, atomic writes), hub names -> directories, Google TF checkpoints
    the core      config.py, model.py (the one backbone), heads.py (MLM, NSP, ELECTRA, classifiers),
                  weights.py (the key tables), checkpoint.py (strict loading, from/save_pretrained),
                  crf.py, generate.py, tokenizer.py
    data/         task examples and formats, bundled datasets, the pretraining corpus, features, metrics
    serving/      one inference loader, predictions and embeddings, ONNX, the HTTP server
    train/        one training loop and its recipes: fine-tune, pretrain, distill; the tricks
    tasks.py      what the commands do (summary, fill-mask, embed, convert)
    cli.py        the `bertkit` command (parsing only), imported by no one
"""

from . import deberta, modern  # noqa: F401  (they register DeBERTa's and ModernBERT's parts with the backbone)
from .config import PRESETS, BertConfig
from .crf import CRF
from .errors import BertkitError
from .generate import generate
from .heads import (
    BertForMaskedLM,
    BertForPreTraining,
    BertForSequenceClassification,
    BertForTokenClassification,
    ElectraForPreTraining,
)
from .model import BertModel, BertOutput, mean_pool
from .seq2seq import CausalLM, Seq2SeqLM
from .tokenizer import Tokenizer, train_wordpiece
from .version import __version__  # noqa: F401

__all__ = [
    "PRESETS",
    "BertConfig",
    "BertForMaskedLM",
    "BertForPreTraining",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertModel",
    "BertOutput",
    "CRF",
    "CausalLM",
    "Seq2SeqLM",
    "BertkitError",
    "ElectraForPreTraining",
    "Tokenizer",
    "generate",
    "mean_pool",
    "train_wordpiece",
]



def __getattr__(name: str):
    """`bertkit.load_for_inference`, imported on first use so `import bertkit` stays the core only."""
    if name == "load_for_inference":
        from .serving.load import load_for_inference

        return load_for_inference
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
