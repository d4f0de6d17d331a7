"""Experiment tracking and the model registry: MLflow behind the hub, run context, fast
logging (``track``), gated promotion. Heavy libraries are imported only where used."""
