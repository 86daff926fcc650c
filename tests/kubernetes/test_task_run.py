"""A kubernetes-mode task in a real `airflow dags test` run: the pod is built from the task's own context and
handed to KubernetesPodOperator, which stops where a cluster is needed (none exists here)."""

DAG = """
from airflow.sdk import dag
from evaljobs.operators.evaluate import WandbEvalOperator

@dag(dag_id="k8s", schedule=None)
def k8s():
    WandbEvalOperator.partial(
        task_id="evaluate", checkpoint="/models/llama-8b", server_resources={"gpus": 1},
        execution_mode="kubernetes", kubernetes={"namespace": "evals", "model_volume_claim": "models"},
    ).expand(benchmarks=["gsm8k"])

k8s()
"""


def test_a_mapped_kubernetes_task_builds_its_pod_and_reaches_the_cluster_client(airflow, tmp_path):
    ok, output = airflow.dags_test("k8s", DAG, KUBECONFIG=str(tmp_path / "absent-kubeconfig"))
    assert not ok
    # The pod was built inside the task, with the task instance's labels (what lets KPO find it again) ...
    assert "Building pod evaljobs-gsm8k-" in output, output[-3000:]
    assert "'dag_id': 'k8s', 'task_id': 'evaluate'" in output and "'map_index': '0'" in output
    # ... and the first thing that needed a cluster was KubernetesPodOperator's client.
    assert "ConfigException: Invalid kube-config file. No configuration found." in output
