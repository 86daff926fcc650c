"""Airflow operators: serve a checkpoint with vLLM, evaluate benchmarks."""
