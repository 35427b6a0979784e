"""Nightly batch scoring, monitoring and retraining: the product, importable without Airflow."""

from pipelines.core.threads import prefer_passive_openmp, prefer_system_arrow_allocator

# before any step loads scikit-learn (and with it OpenMP) or pyarrow, which read these settings only then
prefer_passive_openmp()
prefer_system_arrow_allocator()
