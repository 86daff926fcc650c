"""The evaluation engine. Never imports Airflow; heavy libraries are imported inside functions."""
