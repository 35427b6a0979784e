"""Layer 4, model governance: the MLflow registry and its aliases, the audit log, the champion/challenger gate, promotion."""
