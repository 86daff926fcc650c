"""The example DAG evaljobs_kubernetes: it parses, and its settings build a valid GPU pod per benchmark."""

import json

from evaljobs.operators.evaluate import WandbEvalOperator
from evaljobs.operators.pod import WandbEvalPodOperator
from tests.conftest import REPO
from tests.kubernetes.manifests import pod_manifest

DAG_FILE = REPO / "dags" / "evaljobs_kubernetes.py"


def load():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    return bag.dags["evaljobs_kubernetes"]


def test_dag_maps_one_kubernetes_evaluation_per_benchmark_then_publishes():
    dag = load()
    evaluate = dag.get_task("evaluate")
    assert evaluate.operator_class is WandbEvalPodOperator
    assert evaluate.partial_kwargs["publish_leaderboard"] is False
    assert dag.get_task("publish").upstream_task_ids == {"evaluate"}
    assert dag.params["benchmarks"] == ["gsm8k", "arc_challenge"]


def test_its_settings_build_a_valid_gpu_pod_for_each_default_benchmark(monkeypatch):
    import runpy

    monkeypatch.setenv("AIRFLOW_CONN_WANDB_DEFAULT", json.dumps({"conn_type": "wandb", "password": "canary-dag"}))
    module, params = runpy.run_path(str(DAG_FILE)), load().params
    for benchmark in params["benchmarks"]:
        op = WandbEvalOperator(
            task_id="evaluate",
            checkpoint=params["checkpoint"],
            benchmarks=benchmark,
            server_resources={"gpus": module["GPUS"], "max_model_len": 4096},
            wandb_mode="online",
            execution_mode="kubernetes",
            kubernetes=module["CLUSTER"],
        )
        manifest = pod_manifest(op)
        fetch, vllm = manifest["spec"]["initContainers"]
        assert vllm["resources"]["limits"] == {"nvidia.com/gpu": "1"}
        assert manifest["metadata"]["labels"]["evaljobs.io/benchmark"] == benchmark
        assert manifest["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert "canary-dag" not in json.dumps(manifest)
