"""bertkit: the BERT family written plainly in PyTorch, loading the real checkpoints.

Layout (one concern per module):
    config.py     BertConfig, the JSON configs and the preset table
    model.py      the one backbone: embeddings, attention, FFN, layers, pooler
    heads.py      MLM and NSP heads, BertForMaskedLM, BertForPreTraining
    weights.py    the key table (ours <-> HF <-> Google) and the pure state-dict conversions
    checkpoint.py checkpoint files, strict loading, from_pretrained / save_pretrained
    tfcheckpoint.py  Google TF checkpoints read directly, without TensorFlow
    generate.py   greedy / top-k / beam generation for causal and UniLM masks
    crf.py        linear-chain CRF: likelihood, Viterbi, BIO/BIOES constraints
    metrics.py    accuracy, macro-F1, entity-level P/R/F1 (seqeval's default mode)
    datasets.py   task data files (TSV/CSV/JSONL/CoNLL/CLUENER) and the bundled reviews-zh, peoples-daily-ner
    finetune.py   classification and token-classification models, features, evaluation, prediction
    train.py      the fine-tuning trainer (DDP, exact resume, the tricks below)
    tricks.py     fine-tuning tricks for any loop: AdamW groups, warmup, EMA, FGM/PGD, focal, R-Drop
    tokenizer.py  BERT WordPiece on `tokenizers`
    hub.py        names -> directories (local, HF cache, download)
    tasks.py      what the commands do: summary, fill-mask, embeddings, convert
    cli.py        the `bertkit` command (parsing only)
"""

from .config import PRESETS, BertConfig
from .crf import CRF
from .errors import BertkitError
from .finetune import BertForSequenceClassification, BertForTokenClassification
from .generate import generate
from .heads import BertForMaskedLM, BertForPreTraining, ElectraForPreTraining
from .model import BertModel, BertOutput, mean_pool
from .tokenizer import Tokenizer, train_wordpiece

__version__ = "0.1.0"

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
    "BertkitError",
    "ElectraForPreTraining",
    "Tokenizer",
    "generate",
    "mean_pool",
    "train_wordpiece",
]
