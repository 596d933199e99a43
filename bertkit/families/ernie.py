"""ERNIE 3.0 (Sun et al. 2021, as transformers' ErnieModel): BERT plus a task-type embedding where `use_task_id` is set
(row 0 added when no task ids are given, as transformers does: config.task_types, Embeddings.task)."""

from ..errors import BertkitError
from .record import Member, Preset


def check(c) -> None:
    types = c.extra.get("task_type_vocab_size", 3)
    if c.extra.get("use_task_id") and (not isinstance(types, int) or types < 1):
        raise BertkitError(f"task_type_vocab_size must be a whole number of at least 1 when use_task_id is true, not {types!r}.")

MEMBER = Member(
    model_type="ernie", title="ERNIE 3.0", differs="BERT plus a task-type embedding where use_task_id is set",
    positions="absolute", hf_name="Ernie", classifier="bert", check=check,
    presets={
        "ernie-3.0-base-zh": Preset(dict(vocab_size=40000, max_position_embeddings=2048, type_vocab_size=4, layer_norm_eps=1e-5,
                                         extra=dict(use_task_id=True, task_type_vocab_size=3)), 117_944_832),
    },
)
