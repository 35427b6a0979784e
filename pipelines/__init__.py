"""Nightly batch scoring, monitoring and retraining: the product, importable without Airflow."""

from pipelines.threads import prefer_passive_openmp

# before any step loads scikit-learn (and with it OpenMP), which reads the wait policy only then
prefer_passive_openmp()
