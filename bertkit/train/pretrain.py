"""Pretraining: MLM with dynamic (optionally whole-word) masking, MLM+NSP, MLM+SOP, ELECTRA's
replaced-token detection, causal LM (GPT) and T5's span corruption, on a prepared corpus (corpus.py), with
the fine-tuning trainer's machinery (warm-up, bf16, accumulation, exact resume, progress, curves, torchrun DDP).

    for step in range(state.step, total):
        rows   = this rank's examples of the step (a permutation fixed by seed and epoch)
        batch  = [CLS] A [SEP] (B [SEP]) padded; masked afresh with a generator seeded by (seed, step, rank)
        loss   = MLM at the masked positions only (+ NSP/SOP, or ELECTRA's 50 x discriminator loss)

    clm:  a decoder (CausalLM) or an encoder with the causal mask reads <bos> piece <end> and predicts each next token.
    span: an encoder-decoder (T5) reads the piece with 15% of its tokens, in spans of mean length 3, each span
          replaced by one sentinel; the decoder writes sentinel_0 span_0 sentinel_1 span_1 ... <end>.

References: Devlin et al. 2018 (MLM 15% with 80/10/10, NSP); Liu et al. 2019 (dynamic masking);
Cui et al. 2019 (whole-word masking for Chinese); Lan et al. 2019 (SOP); Clark et al. 2020 (ELECTRA);
Radford et al. 2019 (causal LM); Raffel et al. 2020, section 3.1.4 (span corruption, random_spans_noise_mask).
Shapes: B batch, T length, V vocabulary, M masked positions.

Why ~620 lines: the recipe (112 lines) plus packing, MLM/WWM masking, NSP/SOP pairs, ELECTRA's generator and span corruption, each needed by one objective.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import PRESETS, BertConfig
from ..data.corpus import ZH_CORPUS, Corpus, prepare
from ..errors import BertkitError
from ..heads import IGNORE_INDEX, BertForMaskedLM, BertForPreTraining, ElectraForPreTraining, masked_lm_loss
from ..io.files import atomic_dir, existing_dir, replace_dir
from ..seq2seq import CausalLM, Seq2SeqLM
from ..tokenizer import Tokenizer
from ..weights import add_bigrams
from .loop import (
    Dist,
    Loop,
    Schedule,
    check_out,
    in_processes,
    messages,
    plain_backward,
    set_checkpointing,
    write_config,
)

OBJECTIVES = ("mlm", "mlm+nsp", "mlm+sop", "electra", "clm", "span")
MLM_FAMILY = ("mlm", "mlm+nsp", "mlm+sop", "electra")  # BERT's inputs: [CLS] A [SEP] (B [SEP]), masked
SENTINELS = 100  # T5's <extra_id_0> .. <extra_id_99>


@dataclass
class PretrainConfig:
    model: str  # a preset, a config.json (random init) or a checkpoint directory (continued pretraining)
    out: str
    corpus: str = ZH_CORPUS  # zh-corpus, a text file, or a prepared corpus directory
    tokenizer: str | None = None  # default: the checkpoint's, or the prepared corpus's
    objective: str = "mlm"
    wwm: bool = False  # whole-word masking
    max_steps: int | None = None
    minutes: float | None = None  # a wall-clock budget instead of max_steps
    batch_size: int = 64  # global
    accum: int = 1
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup: float = 0.06
    schedule: str = "linear"
    clip: float = 1.0
    max_length: int = 128
    mask_rate: float = 0.15  # mlm: share of tokens (or words) masked; span: share of tokens corrupted
    mean_span: float = 3.0  # span: mean length of a corrupted span
    bf16: bool = False
    checkpointing: bool = False  # activation checkpointing: recompute each layer in backward (long sequences)
    electra_weight: float = 50.0  # discriminator loss weight (Clark et al.)
    generator_fraction: float = 0.5  # generator hidden size / discriminator's
    bigram_buckets: int = 0  # add a hashed character-bigram table of this many rows (a checkpoint's starts at zero)
    seed: int = 42
    save_every: int = 200
    resume: bool = False
    auto_resume: bool = False  # resume when --out holds a checkpoint of this run, else start afresh (torchrun --max-restarts)
    save_minutes: float | None = None  # also checkpoint once this many minutes have passed since the last checkpoint
    device: str | None = None
    log_every: int = 10
    quiet: bool = False


@dataclass
class PretrainState:
    step: int = 0
    total: int = 0  # fixed once: from max_steps, or from the time budget after a measured step


# ---- examples: packing sentences into sequences ---------------------------------------------


def pack(corpus: Corpus, shards: list[int], max_length: int, pairs: str | None, seed: int) -> np.ndarray:
    """Examples as rows (shard, a0, a1, b0, b1, label): token ranges in the shard's ids.

    pairs None: the shard's tokens cut into pieces of max_length - 2, running on across sentences and
    documents as RoBERTa's FULL-SENTENCES (no padding wasted; b0 = b1 = -1).
    pairs "nsp" / "sop": consecutive sentences of a document gathered up to max_length - 3 tokens and
    cut at a random sentence boundary into A and B. NSP: half the B's are replaced by a span of a random
    other document (label 1 = not next); SOP: half the pairs are swapped (label 1 = swapped).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for si in shards:
        shard = corpus.shards[si]
        if pairs is None:  # the shard's token stream cut into full sequences, across documents (RoBERTa)
            z = len(shard.ids)
            rows += [(si, s, min(s + max_length - 2, z), -1, -1, -1) for s in range(0, z, max_length - 2)]
            continue
        docs = list(shard.documents())
        for d, sents in enumerate(docs):
            chunk: list[tuple[int, int]] = []
            for k, sent in enumerate(sents):
                chunk.append(sent)
                if chunk[-1][1] - chunk[0][0] >= max_length - 3 or k == len(sents) - 1:
                    if chunk[-1][1] - chunk[0][0] >= 2:  # room for a token in A and in B
                        rows.append(_pair(chunk, docs, d, si, max_length - 3, pairs, rng))
                    chunk = []
    return np.asarray(rows, dtype=np.int64).reshape(-1, 6)


def _pair(chunk, docs, d, si, room, kind, rng) -> tuple:
    if len(chunk) == 1:  # one sentence: cut it in the middle
        a0, z = chunk[0]
        a1 = b0 = a0 + max((z - a0) // 2, 1)
        b1 = z
    else:
        k = int(rng.integers(1, len(chunk)))
        a0, a1, b0, b1 = chunk[0][0], chunk[k - 1][1], chunk[k][0], chunk[-1][1]
    label = 0
    if kind == "nsp" and len(docs) > 1 and rng.random() < 0.5:
        other = int(rng.integers(len(docs) - 1))
        other += other >= d  # any document but this one
        o_sents = docs[other]
        start = o_sents[int(rng.integers(len(o_sents)))][0]
        b0, b1, label = start, min(start + (b1 - b0), o_sents[-1][1]), 1
    while (a1 - a0) + (b1 - b0) > room:  # trim the longer segment from its end, as BERT does
        if a1 - a0 > b1 - b0:
            a1 -= 1
        else:
            b1 -= 1
    if kind == "sop" and rng.random() < 0.5:
        (a0, a1), (b0, b1), label = (b0, b1), (a0, a1), 1
    return si, a0, a1, b0, b1, label


def make_batch(corpus: Corpus, rows: np.ndarray, ids: dict) -> dict[str, torch.Tensor]:
    """[CLS] A [SEP] (B [SEP]) per row, right-padded: input_ids, token_type_ids, attention_mask,
    special (bool: [CLS]/[SEP]/padding, never masked), starts (word starts), nsp_labels."""
    seqs, types, starts = [], [], []
    for si, a0, a1, b0, b1, _ in rows:
        shard = corpus.shards[si]
        a = shard.ids[a0:a1].astype(np.int64)
        w = shard.starts[a0:a1] if shard.starts is not None else np.ones(len(a), np.uint8)
        seq, ty, st = [ids["cls"], *a, ids["sep"]], [0] * (len(a) + 2), [1, *w, 1]
        if b0 >= 0:
            b = shard.ids[b0:b1].astype(np.int64)
            wb = shard.starts[b0:b1] if shard.starts is not None else np.ones(len(b), np.uint8)
            seq, ty, st = seq + [*b, ids["sep"]], ty + [1] * (len(b) + 1), st + [*wb, 1]
        seqs.append(seq)
        types.append(ty)
        starts.append(st)
    T = max(len(s) for s in seqs)
    out = {k: torch.zeros(len(seqs), T, dtype=torch.long) for k in ("input_ids", "token_type_ids", "attention_mask", "starts")}
    out["input_ids"].fill_(ids["pad"])
    for r, (s, ty, st) in enumerate(zip(seqs, types, starts)):
        n = len(s)
        out["input_ids"][r, :n] = torch.tensor(s)
        out["token_type_ids"][r, :n] = torch.tensor(ty)
        out["attention_mask"][r, :n] = 1
        out["starts"][r, :n] = torch.tensor(st, dtype=torch.long)
    out["special"] = (out["attention_mask"] == 0) | (out["input_ids"] == ids["cls"]) | (out["input_ids"] == ids["sep"])
    out["starts"] = out["starts"].bool()
    out["nsp_labels"] = torch.as_tensor(rows[:, 5].copy())
    return out


# ---- masking -------------------------------------------------------------------------------------


def mask_tokens(input_ids, special, mask_id: int, random_ids: torch.Tensor, rate: float = 0.15,
                starts=None, generator: torch.Generator | None = None):
    """Dynamic MLM masking -> (masked input_ids, labels with IGNORE_INDEX where nothing is predicted).

    Each maskable token (not special, not padding) is chosen with probability `rate`; with `starts`
    (whole-word masking) each *word* is chosen with that probability and all its pieces go together.
    Of the chosen: 80% become [MASK], 10% a random token from `random_ids`, 10% stay.
    """
    g = generator
    maskable = ~special  # [B, T]
    if starts is None:
        chosen = (torch.rand(input_ids.shape, generator=g) < rate) & maskable
    else:
        word = torch.cumsum(starts & maskable, dim=1)  # [B, T] word number of each token (0 before the first)
        pick = torch.rand(input_ids.shape, generator=g) < rate  # a draw per position; a word uses its start's
        word_pick = torch.zeros(input_ids.shape[0], input_ids.shape[1] + 1, dtype=torch.long)
        word_pick.scatter_reduce_(1, word, (pick & starts & maskable).long(), reduce="amax")  # [B, T + 1]: chosen words
        chosen = word_pick.gather(1, word).bool() & maskable & (word > 0)
    labels = input_ids.masked_fill(~chosen, IGNORE_INDEX)
    roll = torch.rand(input_ids.shape, generator=g)
    to_mask = chosen & (roll < 0.8)
    to_random = chosen & (roll >= 0.8) & (roll < 0.9)
    out = input_ids.masked_fill(to_mask, mask_id)
    randoms = random_ids[torch.randint(len(random_ids), input_ids.shape, generator=g)]
    return torch.where(to_random, randoms, out), labels


# ---- causal LM and span corruption ----------------------------------------------------------------


def lm_batch(corpus: Corpus, rows: np.ndarray, ids: dict) -> dict[str, torch.Tensor]:
    """<bos> piece <end> per row (bos where the tokenizer has one: [CLS] in a BERT vocabulary), right-padded;
    labels are the inputs (the loss shifts them), IGNORE_INDEX at padding."""
    seqs = [[*([ids["bos"]] if ids["bos"] is not None else []), *corpus.shards[si].ids[a0:a1].astype(np.int64), ids["end"]]
            for si, a0, a1, *_ in rows]
    T = max(len(q) for q in seqs)
    input_ids = torch.full((len(seqs), T), ids["pad"], dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for r, q in enumerate(seqs):
        input_ids[r, :len(q)], mask[r, :len(q)] = torch.tensor(q), 1
    return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(input_ids),
            "labels": input_ids.masked_fill(mask == 0, IGNORE_INDEX)}


def random_segmentation(n: int, k: int, g: torch.Generator) -> list[int]:
    """n items cut into k non-empty runs at random: the k run lengths, in order."""
    cuts = (torch.randperm(n - 1, generator=g)[: k - 1] + 1).sort().values.tolist()
    return [b - a for a, b in zip([0, *cuts], [*cuts, n])]


def noise_spans(n: int, density: float, mean_span: float, g: torch.Generator) -> list[tuple[int, int]]:
    """T5's random_spans_noise_mask as (start, end) spans: round(n * density) noise tokens (at least 1, at most
    n - 1) in round(noise / mean_span) spans, noise and kept runs alternating, a kept run first."""
    noise = min(max(round(n * density), 1), n - 1)
    spans = min(max(round(noise / mean_span), 1), noise, n - noise)
    noise_lens, kept_lens = random_segmentation(noise, spans, g), random_segmentation(n - noise, spans, g)
    out, at = [], 0
    for kept, span in zip(kept_lens, noise_lens):
        at += kept
        out.append((at, at + span))
        at += span
    return out


def span_batch(corpus: Corpus, rows: np.ndarray, ids: dict, density: float, mean_span: float, g: torch.Generator) -> dict:
    """Span corruption per row: the encoder reads the kept tokens with a sentinel for each span, then <end>; the
    labels are sentinel_0 span_0 sentinel_1 span_1 ... <end> (sentinel i is ids["sentinels"][i])."""
    sources, targets = [], []
    for si, a0, a1, *_ in rows:
        piece = corpus.shards[si].ids[a0:a1].astype(np.int64).tolist()
        src, tgt, at = [], [], 0
        if len(piece) >= 2:
            for i, (s, e) in enumerate(noise_spans(len(piece), density, mean_span, g)):
                src += piece[at:s] + [ids["sentinels"][i]]
                tgt += [ids["sentinels"][i]] + piece[s:e]
                at = e
        src += piece[at:]
        sources.append(src + [ids["end"]])
        targets.append(tgt + [ids["end"]])
    S, T = max(len(x) for x in sources), max(len(x) for x in targets)
    input_ids = torch.tensor([x + [ids["pad"]] * (S - len(x)) for x in sources])
    labels = torch.tensor([x + [IGNORE_INDEX] * (T - len(x)) for x in targets])
    mask = (torch.arange(S)[None] < torch.tensor([len(x) for x in sources])[:, None]).long()
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def sentinel_ids(tokenizer: Tokenizer, vocab_size: int) -> list[int]:
    """The tokenizer's <extra_id_i> tokens where it has them (T5's), else the SENTINELS ids after its vocabulary."""
    found = [tokenizer.backend.token_to_id(f"<extra_id_{i}>") for i in range(SENTINELS)]
    if all(i is not None for i in found):
        return found
    return list(range(vocab_size, vocab_size + SENTINELS))


# ---- models --------------------------------------------------------------------------------------


class ElectraPretrainer(nn.Module):
    """A small generator (an MLM) and the discriminator, sharing the embedding tables (Clark et al. 2020)."""

    def __init__(self, discriminator: ElectraForPreTraining, generator: BertForMaskedLM):
        super().__init__()
        self.discriminator, self.generator = discriminator, generator
        d, g = discriminator.bert.embed, generator.bert.embed
        g.word, g.segment, g.position, g.bigram = d.word, d.segment, d.position, d.bigram

    def forward(self, batch, labels, generator: torch.Generator | None, weight: float):
        gen = self.generator(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], labels=labels)
        picked = labels != IGNORE_INDEX
        with torch.no_grad():  # sample the replacements from the generator (no gradient through sampling)
            probs = gen.logits.float().softmax(-1)  # [M, V]
            sampled = torch.multinomial(probs, 1, generator=generator).squeeze(1) if len(probs) else labels[picked]
        original = batch["input_ids"].clone()
        original[picked] = labels[picked]  # the masked input with the true tokens back
        corrupted = original.clone()
        corrupted[picked] = sampled.to(corrupted.device)
        replaced = (corrupted != original).long()  # [B, T]: exactly the positions that changed
        disc = self.discriminator(corrupted, batch["attention_mask"], batch["token_type_ids"], labels=replaced)
        return gen, disc, replaced


def generator_config(c: BertConfig, fraction: float) -> BertConfig:
    """The discriminator's config scaled by `fraction` in width, FFN size and heads (ELECTRA's generator size): whole
    heads of the discriminator's head size, or one narrower head when the width is below one head (ELECTRA-Small's
    1/4 of a 2-head 128-wide model is one head of 32)."""
    H = max(int(c.hidden_size * fraction), 1)
    heads = max(H // c.head_size, 1)
    H = heads * c.head_size if H >= c.head_size else H
    return dataclasses.replace(c, hidden_size=H, num_attention_heads=heads,
                               intermediate_size=max(int(c.intermediate_size * fraction), 1),
                               embedding_size=c.embed_size,
                               extra=dict(c.extra) if c.model_type in ("modernbert", "deberta-v2") else {})  # their switches live there


def small_model_note(c: BertConfig) -> str | None:
    """A note for a narrow model pretrained from scratch with BERT's init (std 0.02, set for 768-wide layers) and
    learned positions: its attention tends to stay uniform, so it never learns to use context
    (docs/results/pretrain-ablation.md)."""
    if c.hidden_size <= 256 and c.initializer_range <= 0.02 and c.position_embedding_type == "absolute":
        return (f"note: a {c.hidden_size}-wide model with init std {c.initializer_range} and learned positions often never learns to "
                "use context when pretrained from scratch; the roformer-tiny-zh preset (rotary positions, std 0.05) does "
                "(docs/results/pretrain-ablation.md).")
    return None


def build_model(cfg: PretrainConfig, tokenizer: Tokenizer, log):
    """The model to pretrain: random from a preset/config.json, or a checkpoint (its missing heads initialised)."""
    random_init = cfg.model in PRESETS or cfg.model.endswith(".json")
    if random_init:
        config = BertConfig.from_preset(cfg.model) if cfg.model in PRESETS else BertConfig.from_json_file(cfg.model)
        added = cfg.objective == "span" and sentinel_ids(tokenizer, tokenizer.vocab_size)[0] >= tokenizer.vocab_size
        vocab = tokenizer.vocab_size + (SENTINELS if added else 0)  # room for sentinels the tokenizer lacks
        config = dataclasses.replace(config, vocab_size=vocab, extra=dict(config.extra), **special_ids(config, tokenizer))
        if cfg.objective == "electra" and config.model_type == "bert":
            config = dataclasses.replace(config, model_type="electra", extra=dict(config.extra))
        torch.manual_seed(cfg.seed)
        note = small_model_note(config)
        if note:
            log(note)
    else:
        from ..checkpoint import read_pretrained

        d, config, conv = read_pretrained(cfg.model)
    config = add_bigrams(config, None if random_init else conv, cfg.bigram_buckets, cfg.model)
    if tokenizer.vocab_size > config.vocab_size:
        raise BertkitError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model's embedding only {config.vocab_size} rows: they do not belong together.")
    if cfg.max_length > config.max_length:
        raise BertkitError(f"--max-length {cfg.max_length} exceeds the model's maximum of {config.max_length} tokens.")
    check_shape(cfg.objective, config)
    if cfg.objective == "clm" and not config.is_decoder:
        config = dataclasses.replace(config, attention_mode="causal", extra=dict(config.extra))  # an encoder as GPT
    if cfg.objective == "span" and sentinel_ids(tokenizer, tokenizer.vocab_size)[-1] >= config.vocab_size:
        raise BertkitError(f"span corruption needs {SENTINELS} sentinel ids after the tokenizer's {tokenizer.vocab_size} tokens; "
                           f"the model's vocabulary has {config.vocab_size}.")
    cls = {"mlm": BertForMaskedLM, "mlm+nsp": BertForPreTraining, "mlm+sop": BertForPreTraining, "electra": ElectraForPreTraining,
           "clm": CausalLM if config.is_decoder else BertForMaskedLM, "span": Seq2SeqLM}[cfg.objective]
    if random_init:
        try:
            model = cls(config)
        except BertkitError as e:
            raise BertkitError(f"{cfg.model}: {e}") from None
    else:
        model = cls.from_converted(d, config, conv, new_heads=True, verbose=False)
        if model.load_report.initialised:
            log(model.load_report.describe())
    if cfg.objective == "electra":
        torch.manual_seed(cfg.seed + 1)
        model = ElectraPretrainer(model, BertForMaskedLM(generator_config(config, cfg.generator_fraction)))
    return model


def check_shape(objective: str, config: BertConfig) -> None:
    """Each objective trains one shape: clm a decoder (or an encoder as GPT), span an encoder-decoder, the others an encoder."""
    if objective == "span" and not config.is_encoder_decoder:
        raise BertkitError(f"--objective span trains an encoder-decoder (T5); {config.model_type} is not one (a t5 preset is).")
    if objective in MLM_FAMILY and (config.is_decoder or config.is_encoder_decoder):
        raise BertkitError(f"--objective {objective} trains an encoder; a {config.model_type} model pretrains with "
                           f"--objective {'clm' if config.is_decoder else 'span'}.")
    if objective == "electra" and config.model_type == "modernbert":
        raise BertkitError("--objective electra shares the word embedding with a narrower generator through a projection, which "
                           "ModernBERT's checkpoints have no place for; pretrain a ModernBERT with --objective mlm.")
    if objective == "clm" and config.is_encoder_decoder:
        raise BertkitError(f"--objective clm trains a decoder (or an encoder as GPT); a {config.model_type} model pretrains with --objective span.")


def special_ids(config: BertConfig, tokenizer: Tokenizer) -> dict:
    """A random decoder or encoder-decoder takes its pad, end and decoder-start ids from the tokenizer."""
    if not (config.is_decoder or config.is_encoder_decoder):
        return {}
    end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.fill_id
    return dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=end,
                **({"decoder_start_token_id": start} if config.is_encoder_decoder else {"bos_token_id": tokenizer.cls_token_id}))


# ---- the loop ------------------------------------------------------------------------------------


def resolve_corpus(cfg: PretrainConfig, tokenizer_dir: str | None, out: Path, log) -> tuple[Corpus, Tokenizer]:
    """A prepared corpus directory as is; a name or text file prepared into out/corpus with the tokenizer."""
    path = Path(cfg.corpus)
    if (path / "meta.json").is_file():
        corpus = Corpus(path)
        tokenizer = Tokenizer.from_pretrained(tokenizer_dir or path)
        if tokenizer.vocab() != Tokenizer.from_pretrained(path).vocab():
            raise BertkitError(f"{path} was prepared with another vocabulary than {tokenizer_dir}; prepare it again.")
        if cfg.wwm and not corpus.meta["wwm"]:
            raise BertkitError(f"{path} was prepared without word starts; prepare it with --wwm for whole-word masking.")
        return corpus, tokenizer
    if tokenizer_dir is None:
        raise BertkitError("--tokenizer is needed to prepare a text corpus (build one with `bertkit vocab build`).")
    tokenizer = Tokenizer.from_pretrained(tokenizer_dir)
    target = out / "corpus"
    if existing_dir(target) is None or not (target / "meta.json").is_file():
        log(f"preparing {cfg.corpus} into {target}")
        prepare(cfg.corpus, tokenizer, target, wwm=cfg.wwm)
    return Corpus(target), tokenizer


def pretrain(cfg: PretrainConfig) -> dict:
    if cfg.objective not in OBJECTIVES:
        raise BertkitError(f"objective {cfg.objective!r} is not one of {', '.join(OBJECTIVES)}.")
    if (cfg.max_steps is None) == (cfg.minutes is None):
        raise BertkitError("give exactly one of --max-steps and --minutes.")
    if cfg.minutes is not None and cfg.minutes <= 0:
        raise BertkitError(f"--minutes must be positive, not {cfg.minutes}.")
    return in_processes(_pretrain, cfg)


def _pretrain(cfg: PretrainConfig, dist: Dist) -> dict:
    log = messages(dist, cfg.quiet)
    out = check_out(cfg, "pretrain_config.json", dist)
    tokenizer_dir = cfg.tokenizer or (cfg.model if not (cfg.model in PRESETS or cfg.model.endswith(".json")) else None)
    if dist.world > 1 and not (Path(cfg.corpus) / "meta.json").is_file():
        raise BertkitError("with several processes, prepare the corpus first (`bertkit corpus prepare`) and pass its directory: each process reads its own shards.")
    run: dict = {}

    def setup(where: Path) -> None:
        """Everything checked and measured before the run's directory appears (`where` is its staging copy)."""
        corpus, tokenizer = resolve_corpus(cfg, tokenizer_dir, where, log)
        model = build_model(cfg, tokenizer, log)
        set_checkpointing(model, cfg.checkpointing)
        pairs = {"mlm+nsp": "nsp", "mlm+sop": "sop"}.get(cfg.objective)
        mine = list(range(len(corpus.shards)))[dist.rank::dist.world] if len(corpus.shards) >= dist.world else list(range(len(corpus.shards)))
        corpus.verify(mine)  # a shard truncated or overwritten since it was prepared is named here, never trained on
        rows = pack(corpus, mine, cfg.max_length, pairs, cfg.seed)
        if len(corpus.shards) < dist.world:
            rows = rows[dist.rank::dist.world]
        local = cfg.batch_size // dist.world
        if local < cfg.accum or len(rows) < local:
            raise BertkitError(f"{len(rows)} sequences cannot fill a batch of {local} per process with {cfg.accum} accumulation steps.")
        log(f"{corpus.tokens:,} tokens in {len(corpus.shards)} shards -> {len(rows):,} sequences of up to {cfg.max_length} tokens on this process")
        recipe = Pretrain(cfg, dist, model.to(dist.device), tokenizer, corpus, rows)
        schedule = Schedule(len(rows), cfg.batch_size, cfg.accum, cfg.seed, dist.rank, dist.world, shared=False)
        loop = Loop(cfg, dist, recipe, schedule, tokenizer, out, "pretrain_config.json")
        total = cfg.max_steps or 0
        if cfg.minutes is not None and not cfg.resume:
            total = loop.measure(cfg.minutes * 60)
            log(f"{cfg.minutes:g} minutes ~ {total} steps")
        if not cfg.resume and dist.main:
            write_config(cfg, where, "pretrain_config.json")
        run.update(recipe=recipe, loop=loop, total=total, tokenizer=tokenizer)

    if cfg.resume or not dist.main:
        setup(out)
    else:
        atomic_dir(out, setup)  # the run's files (a corpus prepared here, the config) appear at once
    dist.barrier()
    recipe, loop, total, tokenizer = run["recipe"], run["loop"], run["total"], run["tokenizer"]
    if (out / "corpus" / "meta.json").is_file() and Path(cfg.corpus) != out / "corpus":
        recipe.corpus = Corpus(out / "corpus")  # the prepared corpus moved with the staging directory
    state = loop.run(total, cfg.warmup, cfg.schedule)
    if not dist.main:
        return {}
    for name, m in recipe.saved().items():
        replace_dir(out / name, lambda tmp, m=m: m.save_pretrained(tmp, tokenizer=tokenizer))
    loop.plot()
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line]
    last = rows[-min(len(rows), 20):]
    acc = "mlm_acc" if cfg.objective in MLM_FAMILY else "lm_acc"
    return {"steps": state.step, "loss": float(np.mean([r["loss"] for r in last])),
            acc: float(np.mean([r[acc] for r in last])), "model": str(out / "model")}


class Pretrain:
    """The pretraining recipe: this rank's packed sequences, masked afresh each step; the MLM loss at the
    masked tokens (+ NSP/SOP per sequence, or ELECTRA's discriminator per real token), each part a mean
    over its own global count."""

    name = "pretrain"

    def __init__(self, cfg: PretrainConfig, dist: Dist, model, tokenizer: Tokenizer, corpus: Corpus, rows: np.ndarray):
        self.cfg, self.dist, self.model, self.corpus, self.rows = cfg, dist, model, corpus, rows
        self.weights = {"mlm": 1.0} | ({"nsp": 1.0} if cfg.objective in ("mlm+nsp", "mlm+sop") else {})
        self.curves = (None, ("mlm_acc",) if cfg.objective in MLM_FAMILY else ("lm_acc",))
        if cfg.objective == "electra":
            self.weights = {"mlm": 1.0, "disc": cfg.electra_weight}
        if cfg.objective in ("clm", "span"):
            self.weights = {"lm": 1.0}
            end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
            if end is None:
                raise BertkitError("--objective clm and span end each sequence with an end token; the tokenizer has none (eos or [SEP]).")
            self.ids = {"pad": tokenizer.fill_id, "end": end, "bos": tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id,
                        "sentinels": sentinel_ids(tokenizer, tokenizer.vocab_size)}
            return
        vocab = tokenizer.vocab()
        self.ids = {k: vocab[t] for k, t in (("cls", "[CLS]"), ("sep", "[SEP]"), ("pad", "[PAD]"), ("mask", "[MASK]"))}
        specials = {vocab[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t in vocab}
        self.random_ids = torch.tensor([i for i in range(tokenizer.vocab_size) if i not in specials])

    def collate(self, idx: list[int], g: torch.Generator) -> dict:
        cfg = self.cfg
        if cfg.objective == "clm":
            return {k: v.to(self.dist.device) for k, v in lm_batch(self.corpus, self.rows[idx], self.ids).items()}
        if cfg.objective == "span":
            b = span_batch(self.corpus, self.rows[idx], self.ids, cfg.mask_rate, cfg.mean_span, g)
            return {k: v.to(self.dist.device) for k, v in b.items()}
        b = make_batch(self.corpus, self.rows[idx], self.ids)
        input_ids, labels = mask_tokens(b["input_ids"], b["special"], self.ids["mask"], self.random_ids, cfg.mask_rate,
                                        b["starts"] if cfg.wwm else None, g)
        return {k: v.to(self.dist.device) for k, v in b.items()} | {"input_ids": input_ids.to(self.dist.device), "labels": labels.to(self.dist.device)}

    def counts(self, b: dict) -> dict[str, float]:
        if self.cfg.objective == "clm":  # every real token but each row's first is predicted
            return {"lm": float((b["labels"][:, 1:] != IGNORE_INDEX).sum())}
        if self.cfg.objective == "span":
            return {"lm": float((b["labels"] != IGNORE_INDEX).sum())}
        n = {"mlm": float((b["labels"] != IGNORE_INDEX).sum()), "nsp": float(len(b["labels"])), "disc": float(b["attention_mask"].sum())}
        return {k: n[k] for k in self.weights}

    def lm_loss(self, net, b: dict) -> tuple[dict, dict]:
        """Summed next-token (clm) or target (span) cross-entropy, and the share of tokens predicted right."""
        module = getattr(net, "module", net)
        if self.cfg.objective == "span":
            logits, labels = net(b["input_ids"], b["attention_mask"], decoder_input_ids=module.shift_right(b["labels"])).logits, b["labels"]
        else:
            if isinstance(module, CausalLM):
                logits = net(b["input_ids"], attention_mask=b["attention_mask"]).logits
            else:  # an encoder with the causal mask: the MLM head at every position
                h = module.bert(b["input_ids"], b["attention_mask"], b["token_type_ids"]).last_hidden_state
                logits = module.mlm(h, module.bert.embed.word.weight)
            logits, labels = logits[:, :-1], b["labels"][:, 1:]
        picked = labels != IGNORE_INDEX
        total = F.cross_entropy(logits[picked].float(), labels[picked], reduction="sum")
        return {"lm": total}, {"lm_acc": (_correct(logits[picked], labels[picked]), int(picked.sum()))}

    def loss(self, net, b: dict, g) -> tuple[dict, dict]:
        if self.cfg.objective in ("clm", "span"):
            return self.lm_loss(net, b)
        labels = b["labels"]
        picked = labels != IGNORE_INDEX
        n = int(picked.sum())
        # the heads' losses are means; times their counts they are the sums (a second cross-entropy over the
        # [M, V] logits would cost ~4% of a step)
        if self.cfg.objective == "electra":
            gen, disc, replaced = net(b, labels, g, self.cfg.electra_weight)
            real = b["attention_mask"].bool()
            m = int(real.sum())
            gen_sum, disc_sum = _times(gen.loss, n), _times(disc.loss, m)
            return {"mlm": gen_sum, "disc": disc_sum}, {
                "mlm_acc": (_correct(gen.logits, labels[picked]), n), "mlm_loss": (float(gen_sum.detach()), n), "disc_loss": (float(disc_sum.detach()), m),
                "disc_acc": (float(((disc.logits > 0).long() == replaced)[real].sum()), m), "replaced": (float(replaced[real].sum()), m)}
        if self.cfg.objective == "mlm":
            out = net(b["input_ids"], b["attention_mask"], b["token_type_ids"], labels=labels)
            return {"mlm": _times(out.loss, n)}, {"mlm_acc": (_correct(out.logits, labels[picked]), n)}
        out = net(b["input_ids"], b["attention_mask"], b["token_type_ids"], mlm_labels=labels, nsp_labels=b["nsp_labels"])
        nsp_sum = F.cross_entropy(out.nsp_logits.float(), b["nsp_labels"], reduction="sum")
        sums = {"mlm": _times(out.loss - nsp_sum / len(labels), n), "nsp": nsp_sum}  # its loss is the MLM mean + the NSP mean
        nsp_correct = float((out.nsp_logits.argmax(-1) == b["nsp_labels"]).sum())
        return sums, {"mlm_acc": (_correct(out.mlm_logits, labels[picked]), n), "nsp_acc": (nsp_correct, len(labels))}

    def backward(self, net, loss_of, batch: dict) -> torch.Tensor:
        return plain_backward(net, loss_of, batch)

    def after_step(self) -> None:
        """Nothing: pretraining keeps no weight average."""

    def speed(self, batches: list[dict], seconds: float, world: int) -> dict[str, float]:
        tokens = sum(float(b["attention_mask"].sum()) for b in batches) * world
        return {"tokens": tokens, "tokens_per_s": tokens / seconds}

    def evaluate_due(self, step: int) -> bool:
        return False

    def evaluate(self, loop) -> bool:
        return False

    def saved(self) -> dict[str, nn.Module]:
        m = self.model
        return {"model": m.discriminator, "generator": m.generator} if isinstance(m, ElectraPretrainer) else {"model": m}

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, saved: dict) -> None:
        """Nothing to restore: extra_state holds nothing (the models and optimizer are the loop's)."""


def _times(mean: torch.Tensor, n: int) -> torch.Tensor:
    """A mean loss back to its sum over n items; nothing (not NaN, the mean of none) when n is 0."""
    return mean * n if n else mean.nan_to_num(0.0) * 0.0


def _correct(logits, labels) -> float:
    return float((logits.argmax(-1) == labels).sum())


def dense_mlm_loss(model: BertForMaskedLM, input_ids, attention_mask, token_type_ids, labels) -> torch.Tensor:
    """The reference the sparse head is tested against: logits at every position, then the loss."""
    h = model.bert(input_ids, attention_mask, token_type_ids).last_hidden_state
    logits = model.mlm(h, model.bert.embed.word.weight)  # [B, T, V]
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)


__all__ = ["masked_lm_loss", "mask_tokens", "pack", "pretrain", "PretrainConfig"]
