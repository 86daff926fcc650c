"""The evaluation container's exact command, taken from the built pod, run here against the session's real
vLLM server and model: it writes the job summary where the XCom sidecar reads it."""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from evaljobs.engine import tracking
from evaljobs.engine.preflight import fetch_artifact
from evaljobs.engine.results import ResultsStore
from evaljobs.operators.evaluate import WandbEvalOperator
from tests.kubernetes.kubelet import run_evaluation_container
from tests.kubernetes.manifests import containers, job_spec_of, pod_manifest
from tests.wandb_records import read_run

SETTINGS = {"limit": 2, "max_tokens": 48, "concurrency": 4}


@pytest.fixture
def sidecar_port(vllm_server, api_key):
    """A localhost port answering like the pod's vLLM sidecar: it relays to the session's server (which
    requires an API key; the pod's sidecar, reachable only inside the pod, does not)."""
    upstream = vllm_server.base_url.removesuffix("/v1")

    class Relay(BaseHTTPRequestHandler):
        def _relay(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {"Authorization": f"Bearer {api_key}", "Content-Type": self.headers.get("Content-Type", "")}
            answer = httpx.request(self.command, upstream + self.path, content=body, headers=headers, timeout=300)
            self.send_response(answer.status_code)
            self.send_header("Content-Type", answer.headers.get("content-type", "application/json"))
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = _relay

        def log_message(self, *args):
            pass

    relay = ThreadingHTTPServer(("127.0.0.1", 0), Relay)
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    yield relay.server_address[1]
    relay.shutdown()


def test_checkpoint_pod_command_writes_the_xcom_summary(model_dir, sidecar_port, tmp_path):
    cluster = {"model_volume_claim": "models", "model_mount_path": str(model_dir.parent), "vllm_port": sidecar_port}
    op = WandbEvalOperator(
        task_id="evaluate",
        checkpoint=str(model_dir),
        model="smollm2",  # the name the sidecar serves it under (the session server's)
        benchmarks="arc_challenge_local",
        project="k8s",
        settings=SETTINGS,
        server_resources={"gpus": 1},
        execution_mode="kubernetes",
        kubernetes=cluster,
    )
    manifest = pod_manifest(op)
    summary, output = run_evaluation_container(manifest, tmp_path / "pod", secrets={})
    spec = job_spec_of(manifest)
    vllm = manifest["spec"]["initContainers"][0]["command"]
    assert vllm[vllm.index("--served-model-name") + 1] == "smollm2"
    assert spec["model"]["endpoint"] == f"http://127.0.0.1:{sidecar_port}/v1"
    assert summary["job_id"] == spec["job_id"] == manifest["metadata"]["labels"]["evaljobs.io/job"]
    assert summary["model"] == "smollm2" and summary["project"] == "k8s"
    assert summary["results_home"] == str(tmp_path / "pod" / "var/lib/evaljobs")  # the pod's /var/lib/evaljobs
    assert list(summary["scores"]) == ["arc_challenge_local"] and 0.0 <= summary["scores"]["arc_challenge_local"] <= 1
    [row] = ResultsStore(tmp_path / "pod" / "var/lib/evaljobs").rows("k8s")
    assert (row.benchmark, row.n_samples, row.score) == ("arc_challenge_local", 2, summary["scores"][row.benchmark])
    assert "requests answered by the server" in output  # counted from the sidecar's metrics


def test_hosted_pod_command_gets_the_key_from_its_secret_reference(vllm_server, api_key, tmp_path):
    op = WandbEvalOperator(
        task_id="evaluate",
        base_url=vllm_server.base_url,
        model="smollm2",
        api_key_secret="TEAM_LLM_KEY",
        benchmarks="gsm8k_local",
        project="hosted-k8s",
        settings=SETTINGS,
        wandb_mode="disabled",
        publish_leaderboard=False,
        execution_mode="kubernetes",
        kubernetes={"secrets": {"TEAM_LLM_KEY": "llm-keys/team"}},
    )
    manifest = pod_manifest(op)
    assert api_key not in json.dumps(manifest)
    summary, output = run_evaluation_container(manifest, tmp_path / "pod", secrets={("llm-keys", "team"): api_key})
    assert summary["model"] == "smollm2" and list(summary["scores"]) == ["gsm8k_local"]
    assert api_key not in json.dumps(summary) and api_key not in output


def test_artifact_pod_records_the_fetched_version_and_serves_its_folder(model_dir, sidecar_port, tmp_path, monkeypatch):
    models = tmp_path / "models"  # the pod's model volume (an emptyDir), at the same path here
    cluster = {"model_mount_path": str(models), "vllm_port": sidecar_port, "secrets": {"WANDB_API_KEY": "wandb"}}
    op = WandbEvalOperator(
        task_id="evaluate",
        checkpoint="team/models/smollm2:prod",
        model="smollm2",
        benchmarks="arc_challenge_local",
        project="k8s",
        settings=SETTINGS,
        server_resources={"gpus": 1},
        execution_mode="kubernetes",
        kubernetes=cluster,
    )
    manifest = pod_manifest(op)
    fetch = containers(manifest, "initContainers")["fetch-model"]
    link = Path(fetch["command"][fetch["command"].index("--link") + 1])

    # The fetch container's exact command: without a W&B server here, it gets as far as the download.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "AIRFLOW_"))}
    out = subprocess.run([sys.executable, *fetch["command"][1:]], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "downloading it needs a W&B API key" in out.stderr, out.stderr[-2000:]

    # What it does with a download: W&B's client replaced by the model's files, laid out as W&B versions them.
    def download(ref, target, dest_root):
        folder = dest_root / "team" / "models" / "smollm2" / "v3"
        folder.mkdir(parents=True)
        for file in model_dir.iterdir():
            (folder / file.name).symlink_to(file)
        return folder

    monkeypatch.setattr(tracking, "download_model", download)
    fetch_artifact("team/models/smollm2:prod", link, tracking.WandbTarget(api_key="k"))
    assert link.resolve() == models / "team" / "models" / "smollm2" / "v3"

    summary, output = run_evaluation_container(manifest, tmp_path / "pod", secrets={}, filled={"model": models})
    home = tmp_path / "pod" / "var/lib/evaljobs"
    assert summary["model"] == "smollm2:v3"  # the resolved version, not the moving alias
    [row] = ResultsStore(home).rows("k8s")
    assert (row.model, row.benchmark, row.n_samples) == ("smollm2:v3", "arc_challenge_local", 2)
    [run] = [r for r in map(read_run, (home / "wandb").glob("offline-run-*")) if r.run["job_type"] == "evaluation"]
    model = run.config["model"]
    assert model["artifact"] == "team/models/smollm2:v3"  # the lineage (use_artifact is refused offline)
    assert (model["checkpoint"], model["folder"]) == ("team/models/smollm2:prod", str(link))
    assert model["name"] == "smollm2:v3"


def test_a_folder_that_is_not_a_fetched_version_is_refused(tmp_path, model_dir):
    from evaljobs.engine.errors import PreflightError
    from evaljobs.engine.preflight import checkpoint_folder
    from evaljobs.engine.spec import ModelSource

    source = ModelSource(checkpoint="team/models/smollm2:prod", folder=str(model_dir))
    with pytest.raises(PreflightError, match="is not a fetched version of team/models/smollm2:prod"):
        checkpoint_folder(source)
