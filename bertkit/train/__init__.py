"""Training: one loop (`loop.py`) and its recipes: fine-tuning (`finetune.py`), pretraining
(`pretrain.py`), distillation (`distill.py`); the tricks usable in any loop (`tricks.py`)."""

from .finetune import TrainConfig, train
from .pretrain import PretrainConfig, pretrain

__all__ = ["PretrainConfig", "TrainConfig", "pretrain", "train"]
