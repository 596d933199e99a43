"""Fine-tuning tricks from the literature, each a plain object or function for your own PyTorch loop.

Nothing here knows about a trainer: give it the model, the optimizer or the logits. Device and
dtype follow the tensors they are given (statistics are kept in fp32).

    optimizer   `param_groups`, `make_optimizer`: AdamW (Loshchilov & Hutter 2019, arXiv:1711.05101)
                with no decay on biases and LayerNorm weights, as Google's BERT `optimization.py`.
    schedule    `warmup_schedule`: linear warm-up, then linear (BERT) or cosine (Loshchilov & Hutter
                2017, SGDR, arXiv:1608.03983) decay, or constant.
    averaging   `EMA`: exponential moving average of the weights (Polyak & Juditsky 1992), evaluated
                by swapping the average in and the live weights back.
    adversarial `FGM` (Miyato et al. 2017, arXiv:1605.07725) and `PGD` (Madry et al. 2018,
                arXiv:1706.06083) perturb the word embedding matrix along its gradient.
    losses      `focal_loss` (Lin et al. 2017, arXiv:1708.02002), `label_smoothing_loss` (Szegedy et al.
                2016), `class_weights`, `rdrop_loss` (Liang et al. 2021, arXiv:2106.14448), `loss_fn`.

A training step with all of it (method is None, an FGM or a PGD):

    opt = make_optimizer(model, lr=2e-5, weight_decay=0.01)
    sched = warmup_schedule(opt, warmup_steps=100, total_steps=1000)
    ema, fgm, ce = EMA(model), FGM(model), loss_fn("focal")
    for batch in loader:
        adversarial_step(model, lambda m, b: ce(m(b["x"]), b["y"]), batch, fgm)
        opt.step(); sched.step(); opt.zero_grad(); ema.update()
    with ema.applied():
        evaluate(model)

Shapes: N examples (or positions), C classes; `...` any leading dims ([B, T] for token tasks).

Why ~400 lines: a dozen independent tricks, each 10-40 lines and usable alone; one file keeps `bertkit.tricks` one import.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BertkitError

IGNORE_INDEX = -100  # torch's cross_entropy default: targets that carry no loss
NORMS = (nn.LayerNorm, *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()))  # their weights are never decayed


# ---- optimizer -------------------------------------------------------------------------------------------------


def lr_scale(name: str, layers: int, crf_lr: float = 1.0, layer_decay: float = 1.0) -> float:
    """The factor of the base learning rate for parameter `name` (a model's own name, "bert.layers.3.attn.qkv.weight").

    crf_lr: the CRF's transition and boundary scores learn this many times faster (bert4keras multiplies them by
    100-1000: from zero, at the encoder's rate, they barely move in a fine-tuning run).
    layer_decay: layer-wise decay (ELECTRA, Clark et al. 2020): depth 0 the embeddings, i + 1 the i-th of L layers,
    L + 1 everything above (final norm, pooler, heads); the factor is layer_decay ** (L + 1 - depth)."""
    if name.startswith("crf."):
        return crf_lr
    if layer_decay == 1.0:
        return 1.0
    inner = name.removeprefix("bert.")
    if inner.startswith("embed.") and inner != name:
        depth = 0
    elif inner.startswith("layers.") and inner != name:
        depth = int(inner.split(".")[1]) + 1
    else:
        depth = layers + 1
    return layer_decay ** (layers + 1 - depth)


def param_groups(model: nn.Module, weight_decay: float, crf_lr: float = 1.0, layer_decay: float = 1.0) -> list[dict]:
    """AdamW groups: decay on matrices, none on biases and norm weights (decaying a LayerNorm gain
    toward 0 shrinks the whole activation; BERT excludes "LayerNorm" and "bias" by name, we go by
    module type and by shape so renamed or new modules are covered too). Frozen parameters are left out.
    With crf_lr or layer_decay, each group also carries its `lr_scale` ("lr_scale": make_optimizer multiplies)."""
    norm_params = {id(p) for m in model.modules() if isinstance(m, NORMS) for p in m.parameters(recurse=False)}
    layers = len(getattr(getattr(model, "bert", None), "layers", [])) or 1
    groups: dict[tuple[bool, float], list] = {}
    seen = set()
    for name, p in model.named_parameters():  # shared (tied) parameters come once
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            decayed = not (id(p) in norm_params or p.ndim <= 1)
            groups.setdefault((decayed, lr_scale(name, layers, crf_lr, layer_decay)), []).append(p)
    out = [{"params": ps, "weight_decay": weight_decay if decayed else 0.0, "lr_scale": scale}
           for (decayed, scale), ps in sorted(groups.items(), key=lambda kv: (not kv[0][0], -kv[0][1]))]
    return out


FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def fused_supported(params: list[torch.Tensor]) -> bool:
    """Whether torch's fused AdamW kernel takes every one of `params`: plain dense tensors of fp16, bf16, fp32 or fp64
    on a device it has the kernel for, all on one device type (torch's CPU kernel came in 2.4)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # an older torch: fused on CUDA only
        devices = {"cuda"}
    kinds = {p.device.type for p in params}
    return (len(kinds) == 1 and kinds <= devices
            and all(type(p) in (torch.Tensor, nn.Parameter) and p.dtype in FUSED_DTYPES and not p.is_sparse for p in params))


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.01, betas=(0.9, 0.999), eps: float = 1e-6,
                   fused: bool | None = None, crf_lr: float = 1.0, layer_decay: float = 1.0) -> torch.optim.AdamW:
    """AdamW on `param_groups`, each group at lr times its scale (crf_lr, layer_decay: see lr_scale). eps 1e-6 is
    BERT's. `fused=None` picks torch's one-kernel fused update when it has one for every parameter's device and dtype
    (CPU and CUDA do): on 2 CPU cores it took the step of a 2-layer model with a 65536-row bigram table from 59 ms
    (torch's default CPU update, one tensor at a time) to 10 ms, and the same model without the table from 11.5 to 2.7 ms; elsewhere torch
    chooses itself."""
    groups = param_groups(model, weight_decay, crf_lr, layer_decay)
    for g in groups:
        g["lr"] = lr * g.pop("lr_scale")
    if fused is None:
        fused = fused_supported([p for g in groups for p in g["params"]])
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **({"fused": True} if fused else {}))


# ---- schedule --------------------------------------------------------------------------------------------------

SCHEDULES = ("linear", "cosine", "constant")


@dataclass
class WarmupLambda:
    """lr multiplier at a step. An object, not a closure, so `LambdaLR.state_dict()` records its settings."""

    warmup_steps: int
    total_steps: int
    kind: str

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / self.warmup_steps  # 0 at step 0: the first update is taken at lr 0 as in BERT
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return 1.0 - progress if self.kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_schedule(optimizer, warmup_steps: int, total_steps: int, kind: str = "linear"):
    """LambdaLR: lr rises linearly 0 -> lr over `warmup_steps`, then decays to 0 at `total_steps` (and stays)."""
    if kind not in SCHEDULES:
        raise BertkitError(f"schedule kind {kind!r} is not one of {', '.join(SCHEDULES)}.")
    if not 0 <= warmup_steps <= total_steps:
        raise BertkitError(f"need 0 <= warmup_steps <= total_steps, got {warmup_steps} and {total_steps}.")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupLambda(warmup_steps, total_steps, kind))


# ---- weight averaging ------------------------------------------------------------------------------------------


class EMA:
    """shadow <- d * shadow + (1 - d) * param after each optimizer step, over the float parameters.

    With `warmup=True` (the default) d = min(decay, (1 + n) / (10 + n)) at the n-th update (n from 0), as
    TensorFlow's ExponentialMovingAverage with num_updates: a fine-tuning run is often shorter than the
    1 / (1 - decay) steps a plain average needs to forget the pretrained starting point. Buffers are not
    averaged (BERT has none that train). Build it after moving the model to its device.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        self.decay, self.warmup, self.num_updates = decay, warmup, 0
        self.params = {n: p for n, p in model.named_parameters() if p.is_floating_point()}
        self.shadow = {n: p.detach().float().clone() for n, p in self.params.items()}
        self.backup: dict[str, torch.Tensor] | None = None  # the live weights while the average is swapped in

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self) -> None:
        d = self.current_decay()
        for n, p in self.params.items():
            self.shadow[n].lerp_(p.detach().float(), 1.0 - d)  # s + (1-d)(p - s) = d s + (1-d) p
        self.num_updates += 1

    @torch.no_grad()
    def swap_in(self) -> None:
        if self.backup is not None:
            raise RuntimeError("EMA weights are already swapped in; call swap_out() first.")
        self.backup = {n: p.detach().clone() for n, p in self.params.items()}  # exact, in the param's own dtype
        for n, p in self.params.items():
            p.copy_(self.shadow[n])

    @torch.no_grad()
    def swap_out(self) -> None:
        if self.backup is None:
            raise RuntimeError("EMA weights are not swapped in.")
        for n, p in self.params.items():
            p.copy_(self.backup[n])
        self.backup = None

    @contextmanager
    def applied(self) -> Iterator[None]:
        """`with ema.applied(): evaluate(model)`; the live weights come back even if evaluation raises."""
        self.swap_in()
        try:
            yield
        finally:
            self.swap_out()

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "shadow": {n: s.clone() for n, s in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Strict: the saved averages must cover exactly this model's float parameters, shape for shape."""
        missing, unexpected = self.shadow.keys() - state["shadow"].keys(), state["shadow"].keys() - self.shadow.keys()
        if missing or unexpected:
            raise BertkitError(f"EMA state does not match the model: missing {sorted(missing)}, unexpected {sorted(unexpected)}.")
        for n, s in state["shadow"].items():
            if s.shape != self.shadow[n].shape:
                raise BertkitError(f"EMA state {n} has shape {tuple(s.shape)}, the model {tuple(self.shadow[n].shape)}.")
            self.shadow[n].copy_(s)
        self.decay, self.warmup, self.num_updates = state["decay"], state["warmup"], state["num_updates"]


# ---- adversarial training on the embeddings -------------------------------------------------------------------


def find_param(model: nn.Module, suffix: str) -> nn.Parameter:
    """The one parameter whose name ends with `suffix` ("embed.word.weight" matches "bert.embed.word.weight")."""
    hits = [(n, p) for n, p in model.named_parameters() if n == suffix or n.endswith("." + suffix)]
    if len(hits) != 1:
        names = [n for n, _ in hits] or [n for n, _ in model.named_parameters() if "embed" in n]
        raise BertkitError(f"{len(hits)} parameters end with {suffix!r}; candidates: {names}.")
    return hits[0][1]


@torch.no_grad()
def _unit_step(param: nn.Parameter, size: float, grad: torch.Tensor | None = None) -> None:
    """param += size * g / ||g||_2, g the given gradient (default param.grad). Skipped when the gradient is
    zero or not finite (an AMP overflow step); the direction is the same for GradScaler's scaled gradients,
    so they need no unscaling."""
    g = (param.grad if grad is None else grad).float()
    norm = g.norm()
    if torch.isfinite(norm) and norm > 0:
        param.add_((size * g / norm).to(param.dtype))


class FGM:
    """Fast gradient method: one step of size epsilon along the normalised gradient of the embedding matrix.

    Miyato et al. normalise per example on the embedded sequence; like the common recipe we normalise
    over the whole matrix, so only the rows of tokens in the batch move (padding rows have zero grad).
    Use: backward the clean loss, `attack()`, backward the loss again (grads add up), `restore()`.
    """

    def __init__(self, model: nn.Module, epsilon: float = 1.0, param_name: str = "embed.word.weight"):
        self.param, self.epsilon, self.backup = find_param(model, param_name), epsilon, None

    def attack(self, grad: torch.Tensor | None = None) -> None:
        """grad: the direction (default the parameter's .grad; adversarial_step passes this batch's own)."""
        self.backup = self.param.detach().clone()
        _unit_step(self.param, self.epsilon, grad)

    @torch.no_grad()
    def restore(self) -> None:
        self.param.copy_(self.backup)  # bit-identical to before the attack
        self.backup = None


class PGD:
    """Projected gradient descent: `steps` steps of size alpha, each projected back into the epsilon ball
    around the clean embeddings. The grads of the intermediate steps only steer the attack: they are
    zeroed, and before the last adversarial backward `restore_grad()` puts the clean grads back, so the
    update sees clean grads + the grads at the final perturbation. See `adversarial_step` for the loop."""

    def __init__(self, model: nn.Module, epsilon: float = 1.0, alpha: float = 0.3, steps: int = 3,
                 param_name: str = "embed.word.weight"):
        self.model, self.param = model, find_param(model, param_name)
        self.epsilon, self.alpha, self.steps = epsilon, alpha, steps
        self.backup: torch.Tensor | None = None
        self.grad_backup: dict[str, torch.Tensor | None] = {}

    def backup_grad(self) -> None:
        self.grad_backup = {n: None if p.grad is None else p.grad.clone()
                            for n, p in self.model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def attack(self, first: bool = False, grad: torch.Tensor | None = None) -> None:
        if first:
            self.backup = self.param.detach().clone()
        elif self.backup is None:
            raise RuntimeError("PGD.attack(first=True) must come before the later steps.")
        _unit_step(self.param, self.alpha, grad)
        r = self.param.float() - self.backup.float()  # the perturbation so far
        norm = r.norm()
        if norm > self.epsilon:  # project onto the epsilon ball
            self.param.copy_((self.backup.float() + r * (self.epsilon / norm)).to(self.param.dtype))

    def restore_grad(self) -> None:
        for n, p in self.model.named_parameters():
            if n in self.grad_backup:
                p.grad = self.grad_backup[n]  # None stays None; the clone is handed over, not copied again
        self.grad_backup = {}

    @torch.no_grad()
    def restore(self) -> None:
        self.param.copy_(self.backup)
        self.backup = None


def adversarial_step(model: nn.Module, loss_of: Callable, batch, method: FGM | PGD | None = None,
                     backward: Callable = torch.Tensor.backward) -> torch.Tensor:
    """Forward and backward one batch, with adversarial training if `method` is given; returns the clean loss.

    `loss_of(model, batch)` -> scalar loss. `backward` lets AMP in: `lambda loss: scaler.scale(loss).backward()`.
    Leaves the summed grads in `.grad` and the weights as they were; step the optimizer afterwards.
    Under gradient accumulation `.grad` already holds earlier micro-batches' gradients: the attack
    follows this batch's own gradient (the clean backward's, the accumulated part subtracted).
    """
    prior = None
    if method is not None and method.param.grad is not None:
        prior = method.param.grad.detach().clone()
    loss = loss_of(model, batch)
    backward(loss)
    own = None if method is None or method.param.grad is None else method.param.grad - prior if prior is not None else method.param.grad
    if isinstance(method, FGM):
        method.attack(own)
        backward(loss_of(model, batch))
        method.restore()
    elif isinstance(method, PGD):
        method.backup_grad()
        for t in range(method.steps):
            method.attack(first=t == 0, grad=own if t == 0 else None)  # later steps: their own grads (zeroed before)
            if t < method.steps - 1:
                model.zero_grad()  # intermediate grads only pick the next direction
            else:
                method.restore_grad()  # the last backward adds onto the clean grads
            backward(loss_of(model, batch))
        method.restore()
    return loss.detach()


# ---- losses ----------------------------------------------------------------------------------------------------


def _on(weight, logits: torch.Tensor) -> torch.Tensor | None:
    """Class weights as a float tensor beside the logits (they are often built on the CPU)."""
    return None if weight is None else torch.as_tensor(weight, dtype=torch.float32, device=logits.device)


def focal_loss(logits, target, gamma: float = 2.0, alpha=None, ignore_index: int = IGNORE_INDEX,
               reduction: str = "mean") -> torch.Tensor:
    """-(1 - p_t)^gamma log p_t: logits [..., C], target [...]. gamma 0 is cross-entropy exactly.

    `alpha` is per-class weights [C] with torch's cross_entropy semantics (Lin et al.'s alpha is the
    binary case): "mean" divides by the summed weights of the non-ignored targets, not by their count.
    """
    C = logits.shape[-1]
    logp = F.log_softmax(logits.reshape(-1, C).float(), dim=-1)  # [N, C], fp32 as cross_entropy under autocast
    t = target.reshape(-1)
    keep = t != ignore_index  # [N]
    logp_t = logp.gather(1, t.where(keep, 0)[:, None])[:, 0]  # [N]; ignored targets read class 0, then drop
    one_minus_p = (-torch.expm1(logp_t)).clamp(min=0)  # 1 - p_t, accurate when p_t is near 1
    w = keep.float() if alpha is None else _on(alpha, logits)[t.where(keep, 0)] * keep
    loss = -(one_minus_p ** gamma) * logp_t * w  # [N]
    if reduction == "none":
        return loss.reshape(target.shape)
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / w.sum()


def label_smoothing_loss(logits, target, smoothing: float = 0.1, weight=None, ignore_index: int = IGNORE_INDEX,
                         reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy against (1 - s) one-hot + s uniform (Szegedy et al. 2016), via torch's own option."""
    C = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, C).float(), target.reshape(-1), weight=_on(weight, logits),
                           ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing)


def class_weights(label_counts, kind: str = "inverse") -> torch.Tensor:
    """Per-class weights [C] from counts (`torch.bincount(labels, minlength=C)`): 1/n or 1/sqrt(n), scaled
    so the average weight per example is 1 (for "inverse" that is sklearn's "balanced": N / (C n_c)).
    An unseen class is weighted as one seen once."""
    n = torch.as_tensor(label_counts, dtype=torch.float64).clamp(min=1)
    if kind not in ("inverse", "sqrt_inverse"):
        raise BertkitError(f"class weight kind {kind!r} is not 'inverse' or 'sqrt_inverse'.")
    w = 1 / n if kind == "inverse" else n.rsqrt()
    return (w * n.sum() / (w * n).sum()).float()


def rdrop_loss(logits1, logits2, mask=None) -> torch.Tensor:
    """R-Drop: symmetric KL between two dropout passes on the same batch, 1/2 (KL(p1||p2) + KL(p2||p1)),
    summed over classes and averaged over examples (or over positions where `mask` [...] is true).

    logits [..., C] each. Add it as `ce1 + ce2 + a * rdrop_loss(l1, l2)`; the paper's a is 0.3 to 5.
    """
    lp1, lp2 = F.log_softmax(logits1.float(), -1), F.log_softmax(logits2.float(), -1)
    kl = 0.5 * ((lp1.exp() - lp2.exp()) * (lp1 - lp2)).sum(-1)  # [...]; the two KLs summed in one expression
    if mask is None:
        return kl.mean()
    m = mask.to(kl.dtype)
    return (kl * m).sum() / m.sum().clamp(min=1)


LOSSES = ("ce", "focal", "smooth")


def loss_fn(kind: str = "ce", *, class_weight=None, gamma: float = 2.0, smoothing: float = 0.1,
            ignore_index: int = IGNORE_INDEX) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(logits [..., C], target [...]) -> mean loss: "ce" cross-entropy, "focal", or "smooth" (label smoothing)."""
    if kind == "ce":
        return lambda logits, target: label_smoothing_loss(logits, target, 0.0, class_weight, ignore_index)
    if kind == "focal":
        return lambda logits, target: focal_loss(logits, target, gamma, class_weight, ignore_index)
    if kind == "smooth":
        return lambda logits, target: label_smoothing_loss(logits, target, smoothing, class_weight, ignore_index)
    raise BertkitError(f"loss kind {kind!r} is not one of {', '.join(LOSSES)}.")
