"""Inference: one loader for every command (`load.load_for_inference`), predictions and embeddings,
ONNX export and its onnxruntime backend, and the HTTP server (backend, batcher, app)."""

from .load import load_for_inference

__all__ = ["load_for_inference"]
