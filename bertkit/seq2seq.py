"""Decoders and encoder-decoders on the core's parts: GPT-2, T5/mT5, BART/mBART, with a key/value cache.

One block serves them all (`Block`): self-attention (causal in a decoder), cross-attention to the encoder's
states (in an encoder-decoder's decoder) and a feed-forward, each sub-layer pre-norm, x + f(norm(x))
(GPT-2, T5, mBART), or post-norm, norm(x + f(x)) (BART, as BERT). What differs is read from the config:

    member    norm       biases  positions                                    FFN             scores    output
    gpt2      LayerNorm  yes     learnt table; final norm                     gelu_new        /sqrt(D)  tied
    t5 v1.0   RMSNorm    no      bucketed relative bias of layer 0, shared    relu            unscaled  tied, h * H^-0.5
                                 by all layers; final norm
    t5 v1.1   RMSNorm    no      as v1.0                                      gated gelu_new  unscaled  untied
    mt5       t5 v1.1 with a large vocabulary
    umt5      mt5 with a bias table in every layer's self-attention (`Stack.biases`), not only the first's
    bart      LayerNorm  yes     learnt table from offset 2; embedding norm   gelu            /sqrt(D)  tied, + final_logits_bias
    mbart     bart, pre-norm, with a final norm in each stack; embeddings x sqrt(H) (`scale_embedding`)

The key/value cache (model.Cache, the one the encoder family uses in causal and UniLM mode) holds each decoder
layer's keys and values: a step feeds only the new tokens, which attend to the cached ones; cross-attention's
keys and values are computed from the encoder once.

References: Radford et al. 2019 (GPT-2); Raffel et al. 2020 (T5; the bucketing of section 2.1); Lewis et
al. 2020 (BART); Liu et al. 2020 (mBART). The encoder family is model.py; the key tables are weights.py.
Shapes: B batch, T new tokens, S keys (cached + new, or the encoder's), H hidden, N heads, D head size,
F FFN width, V vocabulary.

Why ~470 lines: GPT-2, T5 (v1.0, v1.1, mT5, UMT5) and BART/mBART on one Block and one Stack, with their cache; their compute differs from the encoder's in too many places to be switches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import PretrainedMixin, register_encoder
from .config import T5_TYPES, BertConfig
from .errors import BertkitError
from .model import ACTIVATIONS, BertOutput, Cache, LayerCache

BART_TYPES = ("bart", "mbart")
BART_POSITION_OFFSET = 2  # BART's position table starts its real positions at row 2 (fairseq's padding rows)
IGNORE_INDEX = -100  # label positions without loss


class RMSNorm(nn.Module):
    """T5's layer norm: x / rms(x) * weight; no mean, no bias; the mean square in fp32."""

    def __init__(self, H: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(H))
        self.eps = eps

    def forward(self, x):
        rms = x.float().pow(2).mean(-1, keepdim=True).add(self.eps).rsqrt()
        return (x * rms).to(self.weight.dtype) * self.weight


def make_norm(c: BertConfig) -> nn.Module:
    return RMSNorm(c.hidden_size, c.layer_norm_eps) if c.model_type in T5_TYPES else nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)


def heads(x: torch.Tensor, n: int) -> torch.Tensor:  # [B, T, N * D] -> [B, N, T, D]
    return x.unflatten(-1, (n, -1)).transpose(1, 2)


class SelfAttention(nn.Module):
    """Multi-head self-attention; with a cache, the new tokens' keys and values join the cached ones."""

    def __init__(self, c: BertConfig, bias: bool):
        super().__init__()
        H, N, D = c.hidden_size, c.num_attention_heads, c.head_size
        self.n_heads = N
        self.qkv = nn.Linear(H, 3 * N * D, bias=bias)  # q, k, v stacked as in the core (weights.fuse_qkv)
        self.o = nn.Linear(N * D, H, bias=bias)
        self.scale = 1.0 if c.model_type in T5_TYPES else D**-0.5  # T5 folds 1/sqrt(D) into its init
        self.p_drop = c.attention_probs_dropout_prob

    def forward(self, x, mask, cache: LayerCache | None = None):  # x [B, T, H]; mask [B|1, 1|N, T, S]
        q, k, v = (heads(t, self.n_heads) for t in self.qkv(x).chunk(3, dim=-1))  # [B, N, T, D] each
        if cache is not None:
            k, v = cache.extend(k, v)  # [B, N, S, D]
        return self.o(attend(q, k, v, mask, self.scale, self.p_drop if self.training else 0.0))


class CrossAttention(nn.Module):
    """The decoder's queries over the encoder's states; their keys and values are computed once per cache."""

    def __init__(self, c: BertConfig, bias: bool):
        super().__init__()
        H, N, D = c.hidden_size, c.num_attention_heads, c.head_size
        self.n_heads = N
        self.q, self.k, self.v = (nn.Linear(H, N * D, bias=bias) for _ in range(3))
        self.o = nn.Linear(N * D, H, bias=bias)
        self.scale = 1.0 if c.model_type in T5_TYPES else D**-0.5
        self.p_drop = c.attention_probs_dropout_prob

    def forward(self, x, memory, mask, cache: LayerCache | None = None):  # x [B, T, H]; memory [B, S, H]; mask [B, 1, 1, S]
        if cache is not None and cache.cross_k is not None:
            k, v = cache.cross_k, cache.cross_v
        else:
            k, v = heads(self.k(memory), self.n_heads), heads(self.v(memory), self.n_heads)  # [B, N, S, D]
            if cache is not None:
                cache.cross_k, cache.cross_v = k, v
        return self.o(attend(heads(self.q(x), self.n_heads), k, v, mask, self.scale, self.p_drop if self.training else 0.0))


def attend(q, k, v, mask, scale: float, p_drop: float):  # q [B, N, T, D], k, v [B, N, S, D] -> [B, T, N * D]
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p_drop, scale=scale)
    return y.transpose(1, 2).flatten(-2)


class FeedForward(nn.Module):
    """down(act(up x)), or T5 v1.1's gated form down(act(up x) * gate x)."""

    def __init__(self, c: BertConfig, bias: bool):
        super().__init__()
        H, Fw = c.hidden_size, c.intermediate_size
        self.up = nn.Linear(H, Fw, bias=bias)
        self.gate = nn.Linear(H, Fw, bias=False) if c.gated_ffn else None
        self.down = nn.Linear(Fw, H, bias=bias)
        self.act = ACTIVATIONS[c.hidden_act]
        self.drop = nn.Dropout(c.hidden_dropout_prob if c.model_type in T5_TYPES else c.extra.get("activation_dropout", 0.0) or 0.0)

    def forward(self, x):  # [B, T, H] -> [B, T, F] -> [B, T, H]
        h = self.act(self.up(x))
        if self.gate is not None:
            h = h * self.gate(x)
        return self.down(self.drop(h))


class Block(nn.Module):
    """Self-attention, cross-attention (a decoder of an encoder-decoder), feed-forward: each as a residual."""

    def __init__(self, c: BertConfig, cross: bool):
        super().__init__()
        bias = c.model_type not in T5_TYPES
        self.attn, self.attn_norm = SelfAttention(c, bias), make_norm(c)
        self.cross = CrossAttention(c, bias) if cross else None
        self.cross_norm = make_norm(c) if cross else None
        self.ffn, self.ffn_norm = FeedForward(c, bias), make_norm(c)
        self.pre_norm = c.model_type != "bart"
        self.drop = nn.Dropout(c.hidden_dropout_prob)

    def residual(self, x, norm, f):
        return x + self.drop(f(norm(x))) if self.pre_norm else norm(x + self.drop(f(x)))

    def forward(self, x, mask, cache: LayerCache | None = None, memory=None, memory_mask=None):
        x = self.residual(x, self.attn_norm, lambda h: self.attn(h, mask, cache))
        if self.cross is not None:
            x = self.residual(x, self.cross_norm, lambda h: self.cross(h, memory, memory_mask, cache))
        return self.residual(x, self.ffn_norm, self.ffn)


def t5_buckets(rel: torch.Tensor, bidirectional: bool, n_buckets: int, max_distance: int) -> torch.Tensor:
    """T5's bucket of each relative position rel = key - query: distances below half the buckets (of each
    direction, when bidirectional) get a bucket each, larger ones share log-spaced buckets up to max_distance."""
    bucket = torch.zeros_like(rel)
    if bidirectional:
        n_buckets //= 2
        bucket = (rel > 0).long() * n_buckets  # keys after the query use the upper half
        n = rel.abs()
    else:
        n = (-rel).clamp(min=0)  # a decoder sees only the past
    exact = n_buckets // 2
    logs = exact + (torch.log(n.float() / exact) / math.log(max_distance / exact) * (n_buckets - exact)).to(torch.long)
    return bucket + torch.where(n < exact, n, logs.clamp(max=n_buckets - 1))


class BucketedBias(nn.Module):
    """A learnt scalar per head and relative-position bucket, added to every layer's scores (T5)."""

    def __init__(self, c: BertConfig, bidirectional: bool):
        super().__init__()
        self.table = nn.Embedding(c.relative_attention_num_buckets, c.num_attention_heads)
        self.bidirectional, self.max_distance = bidirectional, c.relative_attention_max_distance

    def forward(self, T: int, S: int, past: int):  # -> [1, N, T, S] for queries past .. past+T-1 over keys 0 .. S-1
        q = torch.arange(past, past + T, device=self.table.weight.device)[:, None]
        k = torch.arange(S, device=self.table.weight.device)[None]
        b = t5_buckets(k - q, self.bidirectional, self.table.num_embeddings, self.max_distance)  # [T, S]
        return self.table(b).permute(2, 0, 1)[None]


def causal_mask(T: int, past: int, key_mask, device) -> torch.Tensor:
    """[B|1, 1, T, S] bool: new token i (at position past + i) sees keys j <= past + i that are not padding.
    A padding query (a left-padded prompt's) sees itself, so softmax stays finite."""
    i = torch.arange(past, past + T, device=device)[:, None]
    j = torch.arange(past + T, device=device)[None]
    allowed = (j <= i)[None, None]
    if key_mask is not None:
        allowed = (allowed & key_mask.bool()[:, None, None, :]) | (j == i)
    return allowed


def add_bias(mask: torch.Tensor | None, bias: torch.Tensor, dtype) -> torch.Tensor:
    """A boolean mask and an additive bias as one float mask SDPA adds to the scores."""
    if mask is None:
        return bias.to(dtype)
    return bias.to(dtype).masked_fill(~mask, torch.finfo(dtype).min)


class Stack(nn.Module):
    """The encoder or decoder of an encoder-decoder, or GPT-2's decoder: positions, blocks, final norm."""

    def __init__(self, c: BertConfig, n_layers: int, decoder: bool, cross: bool):
        super().__init__()
        t5, bart = c.model_type in T5_TYPES, c.model_type in BART_TYPES
        self.offset = BART_POSITION_OFFSET if bart else 0
        self.position = None if t5 else nn.Embedding(c.max_position_embeddings + self.offset, c.hidden_size)
        self.bias = BucketedBias(c, bidirectional=not decoder) if t5 and c.model_type != "umt5" else None  # shared by all layers
        self.biases = nn.ModuleList(BucketedBias(c, not decoder) for _ in range(n_layers)) if c.model_type == "umt5" else None
        self.embed_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps) if bart else None  # layernorm_embedding
        self.layers = nn.ModuleList(Block(c, cross) for _ in range(n_layers))
        self.final_norm = None if c.model_type == "bart" else make_norm(c)  # post-norm BART ends normalised
        self.drop = nn.Dropout(c.hidden_dropout_prob)
        self.causal = decoder
        self.max_positions = c.max_position_embeddings if self.position is not None else None

    def forward(self, x, attention_mask=None, position_ids=None, cache: Cache | None = None, memory=None,
                memory_mask=None, states: list | None = None):
        """x [B, T, H]: the new tokens' word embeddings; attention_mask [B, S]: 1 at real tokens, over the
        cached and the new ones; memory [B, S_enc, H], memory_mask [B, S_enc]: the encoder's. -> [B, T, H]"""
        B, T = x.shape[:2]
        past = cache.length if cache is not None else 0
        if self.max_positions is not None and past + T > self.max_positions:
            raise BertkitError(f"{past + T} tokens exceed the model's maximum of {self.max_positions} positions.")
        if self.position is not None:
            if position_ids is None:
                position_ids = torch.arange(past, past + T, device=x.device)[None]  # [1, T]
            x = x + self.position(position_ids + self.offset)
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        x = self.drop(x)
        if self.causal:
            mask = causal_mask(T, past, attention_mask, x.device)
        else:
            mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # [B, 1, 1, S]
        if self.bias is not None:
            mask = add_bias(mask, self.bias(T, past + T, past), x.dtype)
        masks = [mask] * len(self.layers) if self.biases is None else [add_bias(mask, b(T, past + T, past), x.dtype) for b in self.biases]
        cross_mask = None if memory_mask is None else memory_mask.bool()[:, None, None, :]
        for i, layer in enumerate(self.layers):
            if states is not None:
                states.append(x)
            x = layer(x, masks[i], cache.layers[i] if cache is not None else None, memory, cross_mask)
        if self.final_norm is not None:
            x = self.final_norm(x)
        x = self.drop(x)
        if states is not None:
            states.append(x)
        return x


@dataclass
class LMOutput:
    logits: torch.Tensor  # [B, T, V]
    past_key_values: Cache | None = None  # with use_cache (or a cache given): the updated cache
    loss: torch.Tensor | None = None  # with labels: mean cross-entropy over labelled tokens
    encoder_last_hidden_state: torch.Tensor | None = None  # encoder-decoders: [B, S, H]


class GenerativeModel(PretrainedMixin, nn.Module):
    """What CausalLM and Seq2SeqLM share: the word embedding, the output projection, init and the loss."""

    tied_head = "lm_head.weight"  # our name of the output matrix a tied checkpoint may also store
    label_smoothing = 0.0

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.word = nn.Embedding(config.vocab_size, config.hidden_size)
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:  # [B, T] -> [B, T, H]
        x = self.word(ids)
        return x * math.sqrt(self.config.hidden_size) if self.config.scale_embedding else x

    def logits(self, h: torch.Tensor) -> torch.Tensor:  # [B, T, H] -> [B, T, V]
        if self.lm_head is not None:
            return self.lm_head(h)
        if scales_output(self.config):
            h = h * self.config.hidden_size**-0.5
        return F.linear(h, self.word.weight)

    def loss(self, logits, labels):  # [B, T, V], [B, T] (IGNORE_INDEX where none) -> mean over labelled tokens
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX,
                               label_smoothing=self.label_smoothing)

    def init_weights(self, m: nn.Module) -> None:
        """normal(0, initializer_range) as BERT's; T5's scaled init (its attention is unscaled) for T5."""
        c = self.config
        if c.model_type in T5_TYPES:
            return self.init_t5(m)
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, std=c.initializer_range)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def init_t5(self, m: nn.Module) -> None:
        """Mesh TensorFlow's init (transformers' T5 _init_weights, factor 1): each matrix's std 1/sqrt(its input)."""
        c, H = self.config, self.config.hidden_size
        ND = c.num_attention_heads * c.head_size
        if isinstance(m, SelfAttention):
            q, kv = m.qkv.weight.split((ND, 2 * ND))
            nn.init.normal_(q, std=(H * c.head_size) ** -0.5)
            nn.init.normal_(kv, std=H**-0.5)
            nn.init.normal_(m.o.weight, std=ND**-0.5)
        elif isinstance(m, CrossAttention):
            nn.init.normal_(m.q.weight, std=(H * c.head_size) ** -0.5)
            for lin in (m.k, m.v):
                nn.init.normal_(lin.weight, std=H**-0.5)
            nn.init.normal_(m.o.weight, std=ND**-0.5)
        elif isinstance(m, FeedForward):
            for lin in (m.up, m.gate):
                if lin is not None:
                    nn.init.normal_(lin.weight, std=H**-0.5)
            nn.init.normal_(m.down.weight, std=c.intermediate_size**-0.5)
        elif isinstance(m, BucketedBias):
            nn.init.normal_(m.table.weight, std=H**-0.5)
        elif isinstance(m, RMSNorm):
            nn.init.ones_(m.weight)
        elif m is self:
            nn.init.normal_(self.word.weight, std=1.0)
            if self.lm_head is not None:
                nn.init.normal_(self.lm_head.weight, std=H**-0.5)

    def hf_architecture(self) -> str:
        return HF_ARCHITECTURES[self.config.model_type]

    def new_cache(self, past_key_values, use_cache: bool, n_layers: int) -> Cache | None:
        if past_key_values is not None:
            if not isinstance(past_key_values, Cache):
                raise BertkitError("past_key_values must be the Cache a previous call returned.")
            return past_key_values
        return Cache.empty(n_layers) if use_cache else None

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class CausalLM(GenerativeModel):
    """A decoder alone (GPT-2): `CausalLM.from_pretrained(dir)`; position t predicts token t + 1."""

    shapes = ("decoder",)

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.decoder = Stack(config, config.num_hidden_layers, decoder=True, cross=False)
        self.apply(self.init_weights)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False,
                labels=None) -> LMOutput:
        """input_ids [B, T] (the new tokens when a cache is given); attention_mask [B, S] over the cached and
        new tokens (a left-padded batch: pass position_ids too, as `generate` does); labels [B, T]: the tokens
        themselves, shifted here so position t learns token t + 1."""
        check_ids(input_ids, self.config, "input_ids")
        cache = self.new_cache(past_key_values, use_cache, len(self.decoder.layers))
        h = self.decoder(self.embed(input_ids), attention_mask, position_ids, cache)
        logits = self.logits(h)
        loss = None if labels is None else self.loss(logits[:, :-1], labels[:, 1:])
        return LMOutput(logits, cache, loss)


class Seq2SeqLM(GenerativeModel):
    """An encoder-decoder (T5, mT5, BART, mBART): `Seq2SeqLM.from_pretrained(dir)`."""

    shapes = ("encoder-decoder",)

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.encoder = Stack(config, config.num_hidden_layers, decoder=False, cross=False)
        self.decoder = Stack(config, config.decoder_layers, decoder=True, cross=True)
        if config.model_type in BART_TYPES:  # a buffer in BART's checkpoints (zeros unless a vocabulary was added)
            self.register_buffer("logits_bias", torch.zeros(1, config.vocab_size))
        else:
            self.logits_bias = None
        self.apply(self.init_weights)

    def encode(self, input_ids, attention_mask=None, states: list | None = None) -> torch.Tensor:  # -> [B, S, H]
        check_ids(input_ids, self.config, "input_ids")
        return self.encoder(self.embed(input_ids), attention_mask, states=states)

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                past_key_values=None, use_cache=False, labels=None, encoder_outputs=None) -> LMOutput:
        """input_ids, attention_mask [B, S]: the source; decoder_input_ids [B, T] (the new ones when a cache
        is given; from labels shifted right when absent); encoder_outputs [B, S, H]: the source already encoded."""
        if encoder_outputs is None:
            if input_ids is None:
                raise BertkitError("Seq2SeqLM needs input_ids (or encoder_outputs).")
            encoder_outputs = self.encode(input_ids, attention_mask)
        encoder_outputs = getattr(encoder_outputs, "last_hidden_state", encoder_outputs)
        if decoder_input_ids is None:
            if labels is None:
                raise BertkitError("Seq2SeqLM needs decoder_input_ids or labels.")
            decoder_input_ids = self.shift_right(labels)
        check_ids(decoder_input_ids, self.config, "decoder_input_ids")
        cache = self.new_cache(past_key_values, use_cache, len(self.decoder.layers))
        h = self.decoder(self.embed(decoder_input_ids), decoder_attention_mask, None, cache, encoder_outputs, attention_mask)
        logits = self.logits(h)
        if self.logits_bias is not None:
            logits = logits + self.logits_bias
        return LMOutput(logits, cache, None if labels is None else self.loss(logits, labels), encoder_outputs)

    def shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        """Teacher forcing's decoder inputs: the start token, then the labels but the last (IGNORE_INDEX -> pad).
        mBART starts with each target's last real token (its language code), as fairseq does."""
        pad = self.config.pad_token_id or 0
        labels = labels.masked_fill(labels == IGNORE_INDEX, pad)
        if self.config.model_type == "mbart":
            start = labels.gather(1, (labels.ne(pad).sum(1, keepdim=True) - 1).clamp(min=0))  # [B, 1]
        elif self.config.decoder_start_token_id is None:
            raise BertkitError(f"the {self.config.model_type} config has no decoder_start_token_id to start the decoder with.")
        else:
            start = torch.full_like(labels[:, :1], self.config.decoder_start_token_id)
        return torch.cat((start, labels[:, :-1]), dim=1)

    def encoder_model(self) -> Seq2SeqEncoder:
        return Seq2SeqEncoder(self)


class Seq2SeqEncoder(nn.Module):
    """The encoder of a T5 or BART checkpoint as an encoder like the family's (`BertModel.from_pretrained(t5_dir)`):
    it returns BertOutput, so embeddings (mean pooling, as sentence-T5) and the inference loader work on it."""

    is_backbone = True

    def __init__(self, model: Seq2SeqLM):
        super().__init__()
        self.config, self.source_dir, self.load_report = model.config, model.source_dir, model.load_report
        self.word, self.encoder = model.word, model.encoder
        self._model = [model]  # not a submodule: only the encoder's weights belong to this module

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, output_hidden_states=False) -> BertOutput:
        states = [] if output_hidden_states else None
        h = self._model[0].encode(input_ids, attention_mask, states=states)
        return BertOutput(h, None, tuple(states) if states is not None else None)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, path, tokenizer=None) -> None:
        raise BertkitError(f"the encoder of a {self.config.model_type} model is saved with its decoder: load it with "
                           "bertkit.Seq2SeqLM and save that.")


def scales_output(c: BertConfig) -> bool:
    """T5 v1.0's tied head multiplies the states by H^-0.5 (Mesh TensorFlow's convention); v1.1 and mT5 do not.
    transformers 5 ties every T5 and records the difference as scale_decoder_outputs; older configs say it
    with tie_word_embeddings."""
    return c.model_type in ("t5", "umt5") and bool(c.extra.get("scale_decoder_outputs", c.tie_word_embeddings))


def check_ids(ids, c: BertConfig, what: str) -> None:
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        raise BertkitError(f"{what} must be a [batch, length] tensor of token ids, got {getattr(ids, 'shape', type(ids).__name__)}.")
    if ids.numel() and not ids.is_meta and (int(ids.min()) < 0 or int(ids.max()) >= c.vocab_size):
        raise BertkitError(f"{what} holds ids outside the {c.vocab_size}-token vocabulary (from {int(ids.min())} to {int(ids.max())}).")


# transformers' class of each member, recorded in the config.json bertkit writes
HF_ARCHITECTURES = dict(gpt2="GPT2LMHeadModel", t5="T5ForConditionalGeneration", mt5="MT5ForConditionalGeneration",
                        umt5="UMT5ForConditionalGeneration",
                        bart="BartForConditionalGeneration", mbart="MBartForConditionalGeneration")
register_encoder(Seq2SeqLM)
