"""ERNIE 3.0 (Sun et al. 2021, as transformers' ErnieModel): BERT plus a task-type embedding where `use_task_id` is set
(row 0 added when no task ids are given, as transformers does: config.task_types, Embeddings.task)."""

from .record import Member, Preset

MEMBER = Member(
    model_type="ernie", title="ERNIE 3.0", differs="BERT plus a task-type embedding where use_task_id is set",
    positions="absolute", hf_name="Ernie", classifier="bert",
    presets={
        "ernie-3.0-base-zh": Preset(dict(vocab_size=40000, max_position_embeddings=2048, type_vocab_size=4, layer_norm_eps=1e-5,
                                         extra=dict(use_task_id=True, task_type_vocab_size=3)), 117_944_832),
    },
)
