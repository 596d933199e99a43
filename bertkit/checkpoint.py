"""Checkpoints on disk: reading HF and Google files, from_pretrained and save_pretrained.

Loading is strict: a missing backbone weight is an error, never a silently random tensor; a
shape mismatch names the key and both shapes; keys nobody knows are an error listing them.
Heads a checkpoint lacks are initialised only when asked (`new_heads=True`) and printed.
Names are translated by the key table in weights.py.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import BertConfig
from .errors import BertkitError
from .io.files import atomic_dir, read_json, save_safetensors
from .weights import BACKBONE_PREFIX, HEAD_PREFIXES, Converted, from_google, from_hf, hf_name, to_hf

# ---- Files ----------------------------------------------------------------------------

CONFIG_FILES = ("config.json", "bert_config.json")  # HF's, then Google's


def find_config(d: Path) -> Path:
    for name in CONFIG_FILES:
        if (d / name).is_file():
            return d / name
    raise BertkitError(f"{d} has no config.json (nor Google's bert_config.json).")


def read_checkpoint(d: Path, chosen: Path | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """The raw tensors of a checkpoint directory and their naming: ("hf" | "google").

    chosen: the weights file or TF prefix the user named; else the directory's, in the order below.
    """
    if chosen is not None:
        return _read_chosen(chosen)
    if (d / "model.safetensors").is_file():
        return _read_safetensors(d / "model.safetensors"), "hf"
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (d / index).is_file():
            return _read_sharded(d / index), "hf"
    if (d / "pytorch_model.bin").is_file():
        return _read_bin(d / "pytorch_model.bin"), "hf"
    from .io.tfcheckpoint import find_tf_checkpoint, read_tf_checkpoint

    prefix = find_tf_checkpoint(d)
    if prefix is not None:
        return {k: torch.from_numpy(v) for k, v in read_tf_checkpoint(prefix).items()}, "google"
    raise BertkitError(
        f"{d} has no weights: expected model.safetensors, a sharded index, pytorch_model.bin "
        "or a TensorFlow checkpoint (*.ckpt*.index)."
    )


def _read_chosen(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    if path.name.endswith(".index.json"):
        return _read_sharded(path), "hf"
    if path.suffix == ".safetensors":
        return _read_safetensors(path), "hf"
    if path.suffix in (".bin", ".pt", ".pth"):
        return _read_bin(path), "hf"
    if path.with_name(path.name + ".index").is_file():
        from .io.tfcheckpoint import read_tf_checkpoint

        return {k: torch.from_numpy(v) for k, v in read_tf_checkpoint(path).items()}, "google"
    raise BertkitError(f"{path} is not a weights file bertkit reads (.safetensors, .bin, a shard index or a TF checkpoint).")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise BertkitError(f"{path} is truncated or corrupted ({e}).") from None


def _read_bin(path: Path) -> dict[str, torch.Tensor]:
    try:  # weights_only: tensors and plain containers only, never arbitrary unpickling
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError... for bad files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BertkitError(f"{path} is truncated, corrupted or not a weights-only PyTorch file ({first}).") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise BertkitError(f"{path} does not hold a state dict of tensors.")
    return sd


def _read_sharded(index: Path) -> dict[str, torch.Tensor]:
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise BertkitError(f"{index} is not a valid shard index: weight_map must map names to file names.")
    read = _read_safetensors if index.name.startswith("model.safetensors") else _read_bin
    sd: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        path = index.parent / shard
        # not resolve(): in the Hugging Face cache each shard is a symlink into blobs/
        if Path(os.path.normpath(path)).parent != Path(os.path.normpath(index.parent)):
            raise BertkitError(f"{index} names a shard outside its directory: {shard!r}.")
        if not path.is_file():
            raise BertkitError(f"shard {path} named in {index} does not exist.")
        sd.update(read(path))
    missing = sorted(set(weight_map) - set(sd))
    if missing:
        raise BertkitError(f"{index} lists {len(missing)} weights the shards do not hold, e.g. {missing[0]!r}.")
    return sd


def read_pretrained(path, revision: str | None = None, token: str | None = None) -> tuple[Path, BertConfig, Converted]:
    """Resolve `path`, read its config and weights once, and convert the names to ours."""
    from .io.hub import locate

    d, chosen = locate(path, revision=revision, token=token)
    config = BertConfig.from_json_file(find_config(d))
    sd, naming = read_checkpoint(d, chosen)
    return d, config, from_hf(sd, config) if naming == "hf" else from_google(sd, config)


# ---- The mixin every model class uses ----------------------------------------------------


@dataclass
class LoadReport:
    initialised: list[str]  # heads the checkpoint lacked (new_heads=True)
    unused: list[str]  # checkpoint weights this model class has no place for (other heads)

    def describe(self) -> str:
        lines = []
        if self.initialised:
            lines.append(f"initialised {_n(len(self.initialised), 'weight')} the checkpoint lacks: {_summarise(self.initialised)}")
        if self.unused:
            lines.append(f"ignored {_n(len(self.unused), 'checkpoint weight')} this model does not use: {_summarise(self.unused)}")
        return "\n".join(lines)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _summarise(keys: list[str]) -> str:
    """['mlm.bias', 'mlm.norm.weight', ...] -> 'mlm.* (5), nsp.* (2)'."""
    groups: dict[str, int] = {}
    for k in keys:
        g = k.removeprefix(f"{BACKBONE_PREFIX}.").split(".")[0] + ".*"
        groups[g] = groups.get(g, 0) + 1
    return ", ".join(f"{g} ({n})" for g, n in groups.items())


# The shapes of model a config describes, and the class that loads each (bertkit's public names).
LOADERS = {"encoder": "BertModel (or a Bert* task class)", "decoder": "CausalLM", "encoder-decoder": "Seq2SeqLM"}
ENCODER_OF: list[type] = []  # the encoder-decoder class, whose .encoder_model() BertModel returns (seq2seq.py registers it)


def register_encoder(cls: type) -> None:
    ENCODER_OF[:] = [cls]


def shape_of(config: BertConfig) -> str:
    return "decoder" if config.is_decoder else "encoder-decoder" if config.is_encoder_decoder else "encoder"


class PretrainedMixin:
    """from_pretrained / save_pretrained for a module whose state dict uses our names.

    A backbone (`BertModel`) owns names without the "bert." prefix; task models own a `.bert`
    and their heads. Conversion always produces full names, so loading only has to pick the
    subset this class owns.
    """

    config: BertConfig
    source_dir: Path | None = None
    load_report: LoadReport | None = None

    is_backbone = False  # BertModel sets True: its names carry no "bert." prefix
    shapes: tuple[str, ...] = ("encoder",)  # the model shapes (shape_of) this class loads
    tied_head = "mlm.decoder"  # our name of the output matrix that a tied checkpoint may store as a copy

    @classmethod
    def from_pretrained(cls, path, new_heads: bool = False, strict: bool = True, verbose: bool = True,
                        revision: str | None = None, token: str | None = None):
        """Load a checkpoint directory (HF or Google TF) or hub name.

        new_heads: initialise heads (MLM, NSP, pooler) the checkpoint lacks instead of failing.
        strict: checkpoint keys that no table row knows are an error (False: report them).
        """
        return cls.from_converted(*read_pretrained(path, revision, token), new_heads=new_heads, strict=strict, verbose=verbose)

    @classmethod
    def from_converted(cls, d: Path, config: BertConfig, conv: Converted, new_heads=False, strict=True, verbose=True):
        """Build this class from an already read and converted checkpoint (see read_pretrained)."""
        shape = shape_of(config)
        if shape not in cls.shapes:
            if shape == "encoder-decoder" and cls.is_backbone and ENCODER_OF:  # BertModel: the encoder of a T5 or BART
                return ENCODER_OF[0].from_converted(d, config, conv, new_heads, strict, verbose).encoder_model()
            also = " (its encoder: bertkit.BertModel)" if shape == "encoder-decoder" else ""
            raise BertkitError(f"{d} holds a {config.model_type} {shape}, which {cls.__name__} does not load: "
                               f"load it with bertkit.{LOADERS[shape]}{also}.")
        if conv.unknown and strict:
            raise BertkitError(
                f"{d} holds {len(conv.unknown)} weights bertkit does not know for model_type "
                f"{config.model_type!r}: {', '.join(conv.unknown[:8])}{' ...' if len(conv.unknown) > 8 else ''}."
            )
        model = cls(config)
        model.load_report = model._load_converted(conv, d, new_heads)
        model.source_dir = d
        if verbose and model.load_report.describe():
            print(model.load_report.describe(), file=sys.stderr)
        return model.eval()

    def _load_converted(self, conv: Converted, d: Path, new_heads: bool) -> LoadReport:
        theirs = self._match(conv)
        own = self.state_dict()
        self._check_fit(conv, theirs, own, d, new_heads)
        self.load_state_dict({k: conv.state_dict[full] for k, full in theirs.items() if k in own}, strict=False)
        used = {theirs[k] for k in own if k in theirs} | ({self.tied_head} if self.config.tie_word_embeddings else set())
        unused = sorted(set(conv.state_dict) - used) + conv.other_heads
        return LoadReport(initialised=[k for k in own if k not in theirs], unused=unused)

    def _match(self, conv: Converted) -> dict[str, str]:
        """This module's weight names -> the converted full names (a backbone owns them without "bert.")."""
        pre = "" if not self.is_backbone else f"{BACKBONE_PREFIX}."
        theirs = {k.removeprefix(pre): k for k in conv.state_dict if k.startswith(pre)}
        if self.config.tie_word_embeddings:  # a tied checkpoint may also store the decoder: a copy of embed.word
            theirs.pop(self.tied_head, None)
        return theirs

    def _check_fit(self, conv: Converted, theirs: dict[str, str], own: dict, d: Path, new_heads: bool) -> None:
        """Strictness: every backbone weight present and used, heads only when asked, shapes and dtypes right."""
        def is_head(name: str) -> bool:
            return name.removeprefix(f"{BACKBONE_PREFIX}.").startswith(HEAD_PREFIXES)

        missing = [k for k in own if k not in theirs]
        lacking = [k for k in missing if not is_head(k)]
        if lacking:
            first = lacking[0]
            if ".attn.qkv." in first:  # name the projection of the three that is absent (the others stay apart)
                parts = [first.replace(".attn.qkv.", f".attn.{p}.") for p in "qkv"]
                first = next((p for p in parts if p not in theirs), parts[0])
            name = hf_name(self._full(first), self.config) or first
            raise BertkitError(f"{d} lacks {_n(len(lacking), 'weight')} its config needs, e.g. {name!r}: the checkpoint does not fit its config.")
        extra = [full for k, full in theirs.items() if k not in own and not is_head(k)]
        if extra:  # e.g. more layers in the weights than num_hidden_layers says
            raise BertkitError(f"{d} holds {_n(len(extra), 'weight')} its config does not build, e.g. {conv.source_names[extra[0]]!r}: the checkpoint does not fit its config.")
        heads = [k for k in missing if is_head(k)]
        if heads and not new_heads:
            raise BertkitError(f"{d} has no weights for {_summarise(heads)}, which {type(self).__name__} needs: the checkpoint was saved without that head.")
        for k, full in theirs.items():
            t = conv.state_dict[full]
            if k in own and tuple(t.shape) != tuple(own[k].shape):
                raise BertkitError(
                    f"{d}: weight {conv.source_names[full]!r} has shape {tuple(t.shape)} but the config asks for "
                    f"{tuple(own[k].shape)}: the checkpoint does not fit its config."
                )
            if k in own and not t.is_floating_point():
                raise BertkitError(f"{d}: weight {conv.source_names[full]!r} has dtype {t.dtype}; weights must be floating point.")

    def hf_architecture(self) -> str:
        """transformers' class for these weights, recorded in config.json (bertkit's names match BERT's)."""
        return type(self).__name__

    def _full(self, name: str) -> str:
        return f"{BACKBONE_PREFIX}.{name}" if self.is_backbone else name

    def save_pretrained(self, path, tokenizer=None) -> None:
        """Write config.json, model.safetensors and the tokenizer files, as transformers expects.

        The tokenizer is the one given, else the one beside the checkpoint this model came from.
        The directory appears complete or not at all.
        """
        from .tokenizer import Tokenizer

        if tokenizer is None and self.source_dir is not None and Tokenizer.can_load(self.source_dir):
            tokenizer = Tokenizer.from_pretrained(self.source_dir)
        # the dtype a source config recorded no longer describes what we write
        extra = {k: v for k, v in self.config.extra.items() if k not in ("dtype", "torch_dtype")}
        config = dataclasses.replace(self.config, architectures=[self.hf_architecture()], extra=extra)
        sd = {self._full(k): v.detach().cpu() for k, v in self.state_dict().items()}
        hf = to_hf(sd, config, base_model=self.is_backbone)  # named as the class written (a classifier's source read as an MLM)

        def write(tmp: Path) -> None:
            config.save(tmp / "config.json")
            save_safetensors(hf, tmp / "model.safetensors", metadata={"format": "pt"})
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)

        atomic_dir(Path(path), write)
