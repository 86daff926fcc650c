"""Airflow hooks: W&B credentials and team secrets."""
