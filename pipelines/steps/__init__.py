"""Layer 3, the ML steps: validation, drift, performance, labels, training, compiled scoring, the nightly decision."""
