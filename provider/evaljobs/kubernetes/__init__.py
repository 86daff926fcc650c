"""Kubernetes execution: the pods, Deployments and Services that run ``evaljobs`` on a cluster (Airflow layer)."""
