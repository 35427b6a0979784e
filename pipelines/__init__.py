"""Nightly batch scoring, monitoring and retraining: the product, importable without Airflow."""
