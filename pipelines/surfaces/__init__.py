"""Layer 6, the surfaces: the Airflow adapter, alerts and notifiers, the monitoring page, the command line."""
