"""Files and names, below the model: reading user files, atomic writes, hub names -> directories,
Google's TF checkpoints read without TensorFlow. Imports nothing of bertkit but errors."""
