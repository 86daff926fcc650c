"""A lost pod resumes from the object store (issue 16): in a real `airflow dags test` run against the API stand-in,
a pod on an ``s3://`` results home (real SeaweedFS, its credentials Kubernetes Secret references only) is killed
mid-benchmark once some answers were copied to the bucket; the retry's pod starts on a fresh emptyDir, restores
those answers and sends only the others."""

import json
import re
import threading
import time

from tests.kubernetes.apiserver import ApiServer
from tests.kubernetes.test_task_run import returned
from tests.latency_endpoint import MODEL, LatencyEndpoint

LIMIT = 6
DAG = """
from airflow.sdk import dag
from evaljobs.operators.evaluate import WandbEvalOperator

@dag(dag_id="k8s_resume", schedule=None)
def k8s_resume():
    WandbEvalOperator(
        task_id="evaluate", base_url={base_url!r}, model={model!r}, benchmarks="gsm8k_local", project="k8s",
        settings={{"limit": {limit}, "max_tokens": 16, "concurrency": 1, "cache_copy_answers": 1}},
        wandb_mode="disabled", results_home={url!r}, poll_interval=0.5, retries=1, retry_delay=0,
        execution_mode="kubernetes",
        kubernetes={{"namespace": "evals", "secrets": {{
            "AWS_ENDPOINT_URL": "store/endpoint", "AWS_ACCESS_KEY_ID": "store/id",
            "AWS_SECRET_ACCESS_KEY": "store/secret", "AWS_REGION": "store/region"}}}},
    )

k8s_resume()
"""


def segments(s3_server, bucket: str) -> list[str]:
    listed = s3_server.client().list_objects_v2(Bucket=bucket, Prefix="runs/cache/").get("Contents", [])
    return [item["Key"] for item in listed if "/segments/" in item["Key"]]


def test_a_pod_killed_mid_run_is_resumed_by_its_retry_from_the_bucket(airflow, tmp_path, s3_server):
    bucket = s3_server.bucket("resume")
    url = f"s3://{bucket}/runs"
    env = s3_server.env
    with LatencyEndpoint(0.4, 1) as slow, ApiServer(kubelet=tmp_path / "kubelet") as api:
        api.secrets[("evals", "store")] = {
            "endpoint": env["AWS_ENDPOINT_URL"],
            "id": env["AWS_ACCESS_KEY_ID"],
            "secret": env["AWS_SECRET_ACCESS_KEY"],
            "region": env["AWS_REGION"],
        }

        def kill_once_two_answers_are_in_the_bucket():
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                if len(segments(s3_server, bucket)) >= 2:  # a segment an answer (cache_copy_answers=1)
                    return api.kill(next(iter(api.runs)))
                time.sleep(0.05)

        killer = threading.Thread(target=kill_once_two_answers_are_in_the_bucket)
        killer.start()
        source = DAG.format(base_url=slow.base_url, model=MODEL, limit=LIMIT, url=url)
        ok, output = airflow.dags_test("k8s_resume", source, AIRFLOW_CONN_KUBERNETES_DEFAULT=api.connection())
        killer.join()
        sent = slow.stats()["requests"]
    assert ok, output[-5000:]
    first, second = api.runs.values()
    assert first.exit_code == 137 and second.exit_code == 0
    retry = "\n".join(line for *_, line in second.lines)
    restored = int(re.search(r"request cache: (\d+) answers restored from \d+ segments", retry)[1])
    to_send = int(re.search(r"requests to send \(the others are in the cache\): gsm8k_local (\d+)", retry)[1])
    assert restored >= 2 and to_send == LIMIT - restored, retry[-3000:]
    # Repeated: at most the first pod's answers not yet copied when it died (copies lag one answer at most
    # here) plus the one in flight (concurrency 1).
    assert LIMIT <= sent <= LIMIT + 2, sent
    summary = returned(airflow)["return_value"]
    assert summary["results_home"] == url and list(summary["scores"]) == ["gsm8k_local"]
    objects = s3_server.objects(bucket)
    [row_key] = [key for key in objects if key.startswith("runs/rows/k8s/")]
    row = json.loads(objects[row_key])["row"]
    assert (row["n_samples"], row["score"]) == (LIMIT, summary["scores"]["gsm8k_local"])
    # The store's credentials reached the pods as Secret references only.
    for pod in (first, second):
        env_vars = {var["name"]: var for var in pod.manifest["spec"]["containers"][0]["env"]}
        assert env_vars["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "store", "key": "secret"}
        assert env["AWS_SECRET_ACCESS_KEY"] not in json.dumps(pod.manifest)
    assert env["AWS_SECRET_ACCESS_KEY"] not in output
    assert not any(env["AWS_SECRET_ACCESS_KEY"].encode() in content for content in objects.values())
