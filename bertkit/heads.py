"""The heads on the backbone: masked-LM (MLM), next-sentence prediction (NSP/SOP), ELECTRA's
replaced-token detection, and the fine-tuning classifiers (sequence and token classification).

A fine-tuned model directory is an ordinary checkpoint: config.json carries transformers' `id2label`
/ `label2id` and a `bertkit` entry {task, crf, max_length, tokens, and for NER the windows' stride
and merge}; the classifier is named `classifier.*` as in transformers' BertForSequenceClassification
/ BertForTokenClassification, so a BERT classifier bertkit saves loads in transformers too.

The MLM decoder is tied to the word embedding matrix (BERT paper, section A.2): the head owns
only the transform, its LayerNorm and the output bias, and the model hands it the embedding
weight at call time, so tying is one visible argument, not shared-module bookkeeping.

Shapes: B batch, T length, H hidden, E embedding size, V vocabulary, M masked positions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import families
from .checkpoint import PretrainedMixin
from .config import BertConfig
from .crf import CRF, bio_constraints
from .errors import BertkitError
from .model import ACTIVATIONS, BertModel, mean_pool

IGNORE_INDEX = -100  # label of positions that carry no MLM loss (the convention of torch's cross_entropy)


class MaskedLMHead(nn.Module):
    """transform (H -> E) + activation + LayerNorm, then the decoder E -> V plus a bias."""

    def __init__(self, c: BertConfig):
        super().__init__()
        modern = c.model_type == "modernbert"  # its head: no biases but the decoder's, its classifier_activation
        m = c.modern if modern else None
        self.transform = nn.Linear(c.hidden_size, c.embed_size, bias=m.classifier_bias if modern else True)
        self.act = ACTIVATIONS[m.classifier_activation if modern else c.hidden_act]
        self.norm = nn.LayerNorm(c.embed_size, eps=c.layer_norm_eps, bias=m.norm_bias if modern else True)
        self.bias = nn.Parameter(torch.zeros(c.vocab_size)) if not modern or m.decoder_bias else None
        # An untied checkpoint brings its own decoder matrix; a tied one uses the word embeddings.
        self.decoder = None if c.tie_word_embeddings else nn.Parameter(torch.zeros(c.vocab_size, c.embed_size))

    def forward(self, h, word_embeddings):  # h [..., H]; word_embeddings [V, E] -> [..., V]
        h = self.norm(self.act(self.transform(h)))
        weight = word_embeddings if self.decoder is None else self.decoder
        return F.linear(h, weight, self.bias)


def masked_lm_loss(head: MaskedLMHead, h, word_embeddings, labels):
    """Cross-entropy at the labelled positions only, gathering them *before* the V-wide projection.

    This is exactly the loss of the full [B, T, V] logits with IGNORE_INDEX elsewhere, at
    ~15% of its cost. Returns (loss, logits [M, V] of the labelled positions).
    """
    picked = labels != IGNORE_INDEX  # [B, T]
    logits = head(h[picked], word_embeddings)  # [M, V]
    return F.cross_entropy(logits.float(), labels[picked]), logits


@dataclass
class MaskedLMOutput:
    logits: torch.Tensor  # [B, T, V]; with labels, only the labelled positions: [M, V]
    loss: torch.Tensor | None = None


@dataclass
class PreTrainingOutput:
    mlm_logits: torch.Tensor  # [B, T, V]; with mlm_labels, only the labelled positions: [M, V]
    nsp_logits: torch.Tensor  # [B, 2]: index 0 = "B follows A", 1 = "B is random" (Google's order)
    loss: torch.Tensor | None = None


class BertForMaskedLM(PretrainedMixin, nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooler=False)  # the MLM head never reads the pooler
        self.mlm = MaskedLMHead(config)
        self.mlm.apply(self.bert.init_weights)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None) -> MaskedLMOutput:
        h = self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state
        words = self.bert.embed.word.weight
        if labels is None:
            return MaskedLMOutput(self.mlm(h, words))
        loss, logits = masked_lm_loss(self.mlm, h, words, labels)
        return MaskedLMOutput(logits, loss)


class BertForPreTraining(PretrainedMixin, nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.mlm = MaskedLMHead(config)
        self.nsp = nn.Linear(config.hidden_size, 2)
        self.mlm.apply(self.bert.init_weights)
        self.nsp.apply(self.bert.init_weights)

    def forward(
        self, input_ids, attention_mask=None, token_type_ids=None, mlm_labels=None, nsp_labels=None
    ) -> PreTrainingOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids)
        words = self.bert.embed.word.weight
        nsp_logits = self.nsp(out.pooler_output)
        if mlm_labels is None:
            return PreTrainingOutput(self.mlm(out.last_hidden_state, words), nsp_logits)
        loss, mlm_logits = masked_lm_loss(self.mlm, out.last_hidden_state, words, mlm_labels)
        if nsp_labels is not None:
            loss = loss + F.cross_entropy(nsp_logits.float(), nsp_labels)
        return PreTrainingOutput(mlm_logits, nsp_logits, loss)


class ReplacedTokenHead(nn.Module):
    """ELECTRA's discriminator: per token, the logit that it was replaced by the generator."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.act = ACTIVATIONS[c.hidden_act]
        self.out = nn.Linear(c.hidden_size, 1)

    def forward(self, h):  # [B, T, H] -> [B, T]
        return self.out(self.act(self.dense(h))).squeeze(-1)


@dataclass
class ReplacedTokenOutput:
    logits: torch.Tensor  # [B, T]: > 0 means "replaced"
    loss: torch.Tensor | None = None


class ElectraForPreTraining(PretrainedMixin, nn.Module):
    """The ELECTRA discriminator (Clark et al. 2020). Its generator is a BertForMaskedLM."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooler=False)
        self.rtd = ReplacedTokenHead(config)
        self.rtd.apply(self.bert.init_weights)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None) -> ReplacedTokenOutput:
        """labels [B, T]: 1 where the token was replaced; the loss averages over real tokens."""
        logits = self.rtd(self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state)
        if labels is None:
            return ReplacedTokenOutput(logits)
        real = attention_mask.bool() if attention_mask is not None else torch.ones_like(labels, dtype=torch.bool)
        loss = F.binary_cross_entropy_with_logits(logits[real].float(), labels[real].float())
        return ReplacedTokenOutput(logits, loss)


TASKS = ("classify", "pair", "ner")


def labels_of(config: BertConfig) -> list[str]:
    """The label names in id order, from transformers' id2label."""
    id2label = config.extra.get("id2label")
    if not id2label:
        raise BertkitError("the checkpoint's config has no id2label: it is not a fine-tuned classifier.")
    return [id2label[k] for k in sorted(id2label, key=int)]


# transformers' sequence classifiers whose head bertkit reads, from the members' records: BERT's layout (pooler +
# classifier), RoBERTa's (the [CLS] state through dense + tanh, then out_proj: the bge rerankers are XLM-RoBERTa ones),
# ELECTRA's and ModernBERT's (the [CLS] state or the mean of the tokens, through its prediction head, then the classifier).
HF_CLASSIFIERS = {f"{m.hf_name}ForSequenceClassification": m.classifier for m in families.MEMBERS.values() if m.classifier}
HF_MAX_LENGTH = 512  # a transformers classifier's inputs are cut here (bge-reranker-v2-m3's positions reach 8,194)


def hf_head(config: BertConfig) -> str | None:
    """The head of a transformers sequence classifier ("bert", "electra", "roberta" or "modernbert"), None for anything else
    (bertkit's own classifiers, base models)."""
    if isinstance(config.extra.get("bertkit"), dict) or not config.architectures:
        return None
    return HF_CLASSIFIERS.get(config.architectures[0])


@dataclass(frozen=True)
class TaskEntry:
    """bertkit's task entry, config.json's "bertkit" object, read once into typed fields: what a fine-tuned model does
    and how it reads text. Written by `set_task` (fine-tuning) with only the fields that apply."""

    task: str  # classify | pair | ner (seq2seq models are refused by task_of: they write text)
    max_length: int = 512  # tokens per input (a tagger's window)
    crf: bool = False  # a CRF over the tagger's emissions
    stride: int | None = None  # NER: tokens shared by neighbouring windows (-1: cut instead; None: default_stride)
    merge: str = "edge"  # NER: how overlapping windows' tags are merged (edge | mean)
    truncation: str = "head"  # classify: which tokens an over-long text keeps (head | head+tail)
    pooling: str = "cls"  # classify, pair: what the classifier reads (cls | mean)
    tokens: str = "chars"  # NER: a text's words are its characters (chars) or its whitespace-separated words

    @staticmethod
    def read(entry: dict) -> TaskEntry:
        """From config.json's object; keys bertkit does not know are an error naming them (a newer bertkit wrote them)."""
        fields = {f.name for f in dataclasses.fields(TaskEntry)}
        unknown = sorted(set(entry) - fields)
        if unknown:
            raise BertkitError(f"the checkpoint's bertkit task entry has fields this bertkit does not read: {', '.join(unknown)}.")
        return TaskEntry(**entry)


def hf_task(config: BertConfig) -> TaskEntry | None:
    """bertkit's task entry for a transformers sequence classifier: one label is a relevance score (a cross-encoder
    reranker: pairs, scored by the sigmoid of its logit, as text-embeddings-inference reads them), more are classes."""
    if hf_head(config) is None or not config.extra.get("id2label"):
        return None
    task = "pair" if len(config.extra["id2label"]) == 1 else "classify"
    return TaskEntry(task, max_length=min(config.max_length, HF_MAX_LENGTH))


def own_entry(config: BertConfig) -> TaskEntry | None:
    """bertkit's own task entry of a config, None where it has none (a model being built before set_task)."""
    entry = config.extra.get("bertkit")
    return TaskEntry.read(entry) if isinstance(entry, dict) and entry.get("task") in TASKS else None


def task_of(config: BertConfig) -> TaskEntry:
    """The task a fine-tuned checkpoint was trained for: bertkit's entry, or a transformers classifier's."""
    info = config.extra.get("bertkit")
    if isinstance(info, dict) and info.get("task") == "seq2seq":
        raise BertkitError("the checkpoint is a seq2seq model (`bertkit train seq2seq`): it writes text; run `bertkit generate` with it.")
    if own_entry(config) is not None:
        return own_entry(config)
    if info is None and hf_task(config) is not None:
        return hf_task(config)
    raise BertkitError("the checkpoint's config has no bertkit task entry: it was not fine-tuned by bertkit.")


def set_task(config: BertConfig, task: str, labels: list[str], **info) -> None:
    """Record the task and labels in the config (written to config.json with the model)."""
    TaskEntry(task, **info)  # a field it does not have is a bug here, not in a later reader
    config.extra["id2label"] = {str(i): label for i, label in enumerate(labels)}
    config.extra["label2id"] = {label: i for i, label in enumerate(labels)}
    config.extra["bertkit"] = {"task": task, **info}


class ClassificationHead(nn.Module):
    """transformers' RoBERTa/ELECTRA classifier head on the [CLS] state: dropout, dense, activation, dropout, out."""

    def __init__(self, c: BertConfig, labels: int, act=torch.tanh):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.out = nn.Linear(c.hidden_size, labels)
        self.act, self.drop = act, nn.Dropout(c.hidden_dropout_prob)

    def forward(self, h):  # [B, H] -> [B, C]
        return self.out(self.drop(self.act(self.dense(self.drop(h)))))


POOLINGS = ("cls", "mean")  # the sentence vector of bertkit's own classifiers (TrainConfig.pooling)


def masked_mean(h, mask):  # h [B, T, H], mask [B, T] -> [B, H]: the mean over the real tokens, summed in fp32
    return mean_pool(h.float(), mask).to(h.dtype)


class ModernClassificationHead(nn.Module):
    """transformers' ModernBERT classifier head: the [CLS] state or the mean of the real tokens (its config's
    classifier_pooling), then dense + classifier_activation + LayerNorm (its prediction head), dropout, out."""

    def __init__(self, c: BertConfig, labels: int):
        super().__init__()
        m, H = c.modern, c.hidden_size
        self.pooling = c.extra.get("classifier_pooling", "cls")
        if self.pooling not in POOLINGS:
            raise BertkitError(f"classifier_pooling must be 'cls' or 'mean', not {self.pooling!r}.")
        self.dense = nn.Linear(H, H, bias=m.classifier_bias)
        self.act = ACTIVATIONS[m.classifier_activation]
        self.norm = nn.LayerNorm(H, eps=c.layer_norm_eps, bias=m.norm_bias)
        self.drop = nn.Dropout(float(c.extra.get("classifier_dropout") or 0.0))
        self.out = nn.Linear(H, labels)

    def forward(self, h, mask):  # h [B, T, H], mask [B, T] -> [B, C]
        v = masked_mean(h, mask) if self.pooling == "mean" else h[:, 0]
        return self.out(self.drop(self.norm(self.act(self.dense(v)))))


class BertForSequenceClassification(PretrainedMixin, nn.Module):
    """Pooled [CLS] vector (or the raw [CLS] state in families without a pooler) -> dropout -> C logits; with
    pooling "mean" in the task entry (`bertkit train --pooling mean`) the mean of the real tokens' states instead
    (no pooler: transformers has no such BERT classifier, and reads this one as [CLS]-pooled).

    A transformers RoBERTa/XLM-RoBERTa, ELECTRA or ModernBERT classifier (a bge reranker) keeps its own head
    (`cls_head`); bertkit's own fine-tuning puts the one classifier above on every family."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        style, n = hf_head(config), len(labels_of(config))
        self.pooling = (own_entry(config) or TaskEntry("classify")).pooling
        if self.pooling not in POOLINGS:
            raise BertkitError(f"the config's pooling {self.pooling!r} is not one of {', '.join(POOLINGS)}.")
        self.bert = BertModel(config, add_pooler=style not in ("roberta", "electra", "modernbert") and self.pooling == "cls")
        self.drop = nn.Dropout(config.hidden_dropout_prob)
        self.classifier, self.cls_head = None, None
        if style == "modernbert":
            self.cls_head = ModernClassificationHead(config, n)
        elif style in ("roberta", "electra"):
            self.cls_head = ClassificationHead(config, n, torch.tanh if style == "roberta" else F.gelu)  # ELECTRA: gelu, whatever its config
        else:
            self.classifier = nn.Linear(config.hidden_size, n)
        (self.cls_head or self.classifier).apply(self.bert.init_weights)

    def hf_architecture(self) -> str:
        """A transformers classifier keeps its class (its head is RoBERTa's, ELECTRA's or ModernBERT's, not BERT's)."""
        return self.config.architectures[0] if self.cls_head is not None else type(self).__name__

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, hidden: bool = False):
        """-> logits [B, C]; with hidden=True also the hidden states (for distillation)."""
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states=hidden)
        if isinstance(self.cls_head, ModernClassificationHead):
            mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
            logits = self.cls_head(out.last_hidden_state, mask)
        elif self.cls_head is not None:
            logits = self.cls_head(out.last_hidden_state[:, 0])
        elif self.pooling == "mean":
            mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
            logits = self.classifier(self.drop(masked_mean(out.last_hidden_state, mask)))
        else:
            pooled = out.pooler_output if out.pooler_output is not None else out.last_hidden_state[:, 0]
            logits = self.classifier(self.drop(pooled))
        return (logits, out.hidden_states) if hidden else logits


class BertForTokenClassification(PretrainedMixin, nn.Module):
    """Per-word logits (emissions) [B, W, C], scored by softmax cross-entropy or by a CRF."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        labels = labels_of(config)
        self.bert = BertModel(config, add_pooler=False)
        self.drop = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, len(labels))
        self.classifier.apply(self.bert.init_weights)
        self.crf = CRF(len(labels), bio_constraints(labels)) if (own_entry(config) or TaskEntry("ner")).crf else None

    def forward(self, input_ids, attention_mask, token_type_ids, word_index, hidden: bool = False):
        """word_index [B, W]: the token position of each word's first piece (0 at padding words).
        -> emissions [B, W, C]; with hidden=True also the hidden states (for distillation)."""
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states=hidden)
        h = out.last_hidden_state  # [B, T, H]
        words = h.gather(1, word_index[..., None].expand(-1, -1, h.shape[-1]))  # [B, W, H]
        logits = self.classifier(self.drop(words))  # [B, W, C]
        return (logits, out.hidden_states) if hidden else logits

    def decode(self, emissions, word_mask) -> list[list[int]]:
        if self.crf is not None:
            return self.crf.decode(emissions, word_mask)
        best = emissions.argmax(-1)
        return [row[: int(n)].tolist() for row, n in zip(best, word_mask.sum(1))]

MODEL_CLASSES = {"classify": BertForSequenceClassification, "pair": BertForSequenceClassification, "ner": BertForTokenClassification}
