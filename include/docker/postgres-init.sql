-- Runs once, when the postgres service first creates its data folder: the MLflow tracking server's database.
CREATE DATABASE mlflow OWNER airflow;
