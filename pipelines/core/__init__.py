"""Layer 1, core values: errors, the typed contracts between steps, the config, paths on the data root, cadences.

Imports nothing else of the pipeline and does no I/O at import or at config load.
"""
