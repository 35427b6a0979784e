"""Layer 5, the flows that tasks call: scoring a night, the nightly monitoring flow, label evaluation, retraining."""
