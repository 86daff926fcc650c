"""A gated dataset the hub refuses: the job (its own process, pointed at a stand-in hub on loopback that
answers as the real one does for a gated repo) fails naming the dataset, the token secret and the way in,
and never shows the token."""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class GatedHub(BaseHTTPRequestHandler):
    """Every request refused as the hub refuses a gated repo: 401 without a valid token, 403 with one."""

    def do_GET(self):  # noqa: N802
        self._refuse()

    def do_HEAD(self):  # noqa: N802
        self._refuse()

    def _refuse(self):
        status = 403 if "hf_valid" in self.headers.get("Authorization", "") else 401
        body = json.dumps({"error": "Access to this dataset is restricted."}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", "GatedRepo")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), GatedHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.mark.parametrize("token", [None, "hf_valid_canary_9f8e7d6c5b4a", "hf_revoked_canary_1a2b3c4d"])
def test_a_refused_gated_dataset_says_what_to_do(vllm_server, api_key, hub, tmp_path, token):
    spec = {
        "model": {"base_url": vllm_server.base_url, "model": "smollm2", "api_key_secret": "TEAM_LLM_KEY"},
        "benchmarks": ["lingoly"],
        "settings": {"limit": 2},
        "datasets": {"hf_token_secret": "TEAM_HF"},
        "destination": {"results_home": str(tmp_path / "home"), "wandb": "disabled"},
    }
    (tmp_path / "job.json").write_text(json.dumps(spec))
    env = {**os.environ, "HF_ENDPOINT": hub, "TEAM_LLM_KEY": api_key, "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_TOKEN", None)
    if token:
        env["TEAM_HF"] = token
    out = subprocess.run(
        [sys.executable, "-m", "evaljobs.cli", "run", "--spec", str(tmp_path / "job.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode != 0
    if token is None:  # preflight asks for the token before anything starts
        assert "secret TEAM_HF (datasets.hf_token_secret: gated lingoly) is not set" in out.stderr
        return
    gated = "benchmark lingoly reads the gated dataset ambean/lingOly, and the hub refused"
    if "hf_valid" in token:  # a token whose account has not been granted access
        assert f"{gated} the token in TEAM_HF (HTTP 403" in out.stderr
        assert f"request access at {hub}/datasets/ambean/lingOly with that account" in out.stderr
    else:
        assert f"{gated} the request (HTTP 401: no valid token): set the secret TEAM_HF" in out.stderr
    assert "or mirror the dataset (datasets.mirror)" in out.stderr
    assert token not in out.stdout + out.stderr
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
