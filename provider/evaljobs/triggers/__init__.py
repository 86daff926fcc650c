"""Airflow triggers (deferrable waits)."""
