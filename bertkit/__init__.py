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

import sys
import types

from .version import __version__  # noqa: F401

# Where each public name lives. They are imported on first use (PEP 562), so `import bertkit` and `bertkit --help` do
# not pay for torch; `from bertkit import BertModel` imports the core as before.
_PUBLIC = {
    "PRESETS": "bertkit.config", "BertConfig": "bertkit.config", "CRF": "bertkit.crf", "BertkitError": "bertkit.errors",
    "generate": "bertkit.generate", "BertForMaskedLM": "bertkit.heads", "BertForPreTraining": "bertkit.heads",
    "BertForSequenceClassification": "bertkit.heads", "BertForTokenClassification": "bertkit.heads",
    "ElectraForPreTraining": "bertkit.heads", "BertModel": "bertkit.model", "BertOutput": "bertkit.model",
    "mean_pool": "bertkit.model", "CausalLM": "bertkit.seq2seq", "Seq2SeqLM": "bertkit.seq2seq",
    "Tokenizer": "bertkit.tokenizer", "train_wordpiece": "bertkit.tokenizer", "load_for_inference": "bertkit.serving.load",
    "init_inference": "bertkit.serving.load",
}

__all__ = [
    "PRESETS",
    "init_inference",
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
    """`bertkit.BertModel` and the other public names, imported from their module on first use."""
    if name in _PUBLIC:
        import importlib

        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))


class _Package(types.ModuleType):
    """bertkit's module type: `bertkit.generate` stays the function. Importing the submodule `bertkit.generate` (which
    any recipe that generates does) sets the package's attribute to the module; here it is set to its function."""

    def __setattr__(self, name, value):
        if name == "generate" and isinstance(value, types.ModuleType):
            value = value.generate
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
