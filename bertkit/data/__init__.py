"""Data: task examples and their file formats, the bundled datasets, the pretraining corpus,
features (examples as model inputs), and the metrics that score predictions against labels."""
