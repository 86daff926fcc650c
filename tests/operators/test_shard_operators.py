"""The shard arguments of the evaluation operators, checked when the DAG is parsed: a sharded task without
its shard, bad values, and a sharded Kubernetes evaluation whose pods would keep their parts to themselves,
are refused before any job or pod starts; the parts' folders a merge reads from the shard summaries."""

from __future__ import annotations

import pytest

from evaljobs.engine.errors import SpecError
from evaljobs.operators.evaluate import SHARD_INDEX_TEMPLATE, WandbEvalOperator, shared_parts_home
from evaljobs.operators.merge import part_folders

SOURCE = {"checkpoint": "/models/m", "benchmarks": "arc_challenge_local"}
CLUSTER = {"image": "evaljobs/worker:1", "namespace": "evals"}


def test_a_sharded_task_needs_its_shard_and_valid_values():
    with pytest.raises(ValueError, match=r"shard: a task with shards=4 evaluates one shard; map over it"):
        WandbEvalOperator(task_id="e", shards=4, **SOURCE)
    with pytest.raises(SpecError, match=r"- shard: 4 is not one of 4 shards; give shard 0..3"):
        WandbEvalOperator(task_id="e", shards=4, shard=4, **SOURCE)
    with pytest.raises(SpecError, match=r"- shards: Input should be greater than or equal to 1"):
        WandbEvalOperator(task_id="e", shards=0, shard=0, **SOURCE)
    task = WandbEvalOperator(task_id="e", shards=4, shard=2, settings={"limit": 8}, **SOURCE)
    assert task.sharded(task.settings) == {"limit": 8, "shards": 4, "shard": 2}


def test_mapped_shards_are_named_by_their_shard():
    mapped = WandbEvalOperator.partial(task_id="e", shards=2, publish_leaderboard=False, **SOURCE)
    assert mapped.kwargs["map_index_template"] == SHARD_INDEX_TEMPLATE


def test_a_sharded_kubernetes_evaluation_without_a_shared_results_home_is_refused_at_parse_time():
    args = {"task_id": "e", "execution_mode": "kubernetes", "shards": 2, **SOURCE}
    with pytest.raises(ValueError, match=r"shards: the 2 shard pods write their parts to the results home"):
        WandbEvalOperator.partial(kubernetes=CLUSTER, **args)
    with pytest.raises(ValueError, match=r"without kubernetes.results_volume_claim it is each pod's own emptyDir"):
        WandbEvalOperator(kubernetes=CLUSTER, shard=0, **args)
    shared = CLUSTER | {"results_volume_claim": "evaljobs-results"}
    assert WandbEvalOperator(kubernetes=shared, shard=1, **args).shard == 1
    WandbEvalOperator.partial(kubernetes=shared, **args)
    shared_parts_home(2, CLUSTER, "s3://evals/team")  # object storage is shared too


def test_part_folders_from_shard_summaries_once_each():
    summaries = [{"shard_parts": {"a": "/h/a", "b": "/h/b"}}, {"shard_parts": {"a": "/h/a", "b": "/h/b"}}]
    assert part_folders(summaries) == ["/h/a", "/h/b"]
    assert part_folders("/h/c") == ["/h/c"] and part_folders([*summaries, "/h/c"]) == ["/h/a", "/h/b", "/h/c"]


def test_a_shard_pod_is_named_and_labelled_by_its_shard():
    from evaljobs.engine.spec import JobSpec
    from evaljobs.kubernetes.pods import SHARD_LABEL, evaluation_pod
    from evaljobs.kubernetes.settings import KubernetesSettings

    def pod(settings: dict) -> dict:
        spec = JobSpec.parse(
            {
                "model": {"base_url": "https://llm.example.com/v1", "model": "m", "api": "completions"},
                "benchmarks": ["arc_challenge_local"],
                "settings": settings,
                "job_id": "run-1",
            }
        )
        return evaluation_pod(spec, KubernetesSettings(results_volume_claim="evaljobs-results"))

    shard = pod({"shards": 4, "shard": 2})
    assert shard["name"] == "evaljobs-arc-challenge-local-2-of-4" and shard["labels"][SHARD_LABEL] == "2-of-4"
    single = pod({})
    assert single["name"] == "evaljobs-arc-challenge-local" and SHARD_LABEL not in single["labels"]


def test_the_merge_as_a_pod_mounts_the_shards_results_home_and_runs_evaljobs_merge():
    """``execution_mode="kubernetes"``: the worker image runs `evaljobs merge` on the parts the shard pods wrote
    (their PVC at the same path), its summary to KubernetesPodOperator's XCom file; the manifest validates."""
    from kubernetes.client import ApiClient

    from evaljobs.kubernetes.pods import RESULTS_DIR, XCOM_FILE
    from evaljobs.operators.merge import ShardMergeOperator, ShardMergePodOperator
    from tests.kubernetes.manifests import validated

    cluster = CLUSTER | {"results_volume_claim": "evaljobs-results", "secrets": {"WANDB_API_KEY": "wandb"}}
    part = f"{RESULTS_DIR}/shards/p/m/arc_challenge_local/abc-of-2"
    merge = ShardMergeOperator(
        task_id="merge",
        parts=[{"shard_parts": {"arc_challenge_local": part}}] * 2,
        execution_mode="kubernetes",
        kubernetes=cluster,
        wandb_mode="disabled",
    )
    assert isinstance(merge, ShardMergePodOperator)
    merge.prepare_pod()
    manifest = validated(ApiClient().sanitize_for_serialization(merge.build_pod_request_obj(dry_run=True)))
    [container] = manifest["spec"]["containers"][:1]
    assert container["command"][-5:] == ["merge", part, "--publish-leaderboard", "--summary-out", XCOM_FILE]
    assert container["image"] == CLUSTER["image"] and manifest["metadata"]["namespace"] == "evals"
    [volume] = [v for v in manifest["spec"]["volumes"] if v["name"] == "results"]
    assert volume["persistentVolumeClaim"]["claimName"] == "evaljobs-results"
    assert {"name": "EVALJOBS_HOME", "value": RESULTS_DIR} in container["env"]

    local = ShardMergeOperator(task_id="m", parts=[part], execution_mode="kubernetes", kubernetes=CLUSTER)
    with pytest.raises(Exception, match=r"kubernetes.results_volume_claim: the parts are in the shard pods'"):
        local.prepare_pod()
