"""Run a pod's evaluation container here, as a kubelet would: its volumes become folders (a PVC is the real
folder at its mount path, emptyDir a fresh folder, the downward-API volume the annotation's text), its
environment is set, ``secretKeyRef`` variables are read from ``secrets``, and the exact command runs."""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def evaluation_container(
    manifest: dict, root: Path, secrets: dict[tuple[str, str], str], filled: dict[str, Path] | None = None
) -> tuple[list[str], dict[str, str], Callable[[str], str]]:
    """``manifest``'s main container as (command, environment, ``here``: a path in the pod -> the folder here),
    its volumes laid out under ``root``. ``filled`` names volumes an init container already filled (volume
    name -> that folder here). A ``secretKeyRef`` missing from ``secrets`` raises KeyError, as the kubelet's
    CreateContainerConfigError."""
    container = manifest["spec"]["containers"][0]
    volumes = {v["name"]: v for v in manifest["spec"]["volumes"]}
    mounts = {}
    for mount in container["volumeMounts"]:
        volume, path = volumes[mount["name"]], mount["mountPath"]
        local = Path(path) if "persistentVolumeClaim" in volume else root / path.lstrip("/")
        local = (filled or {}).get(mount["name"], local)
        local.mkdir(parents=True, exist_ok=True)
        for item in volume.get("downwardAPI", {}).get("items", []):
            key = item["fieldRef"]["fieldPath"].split("'")[1]  # metadata.annotations['KEY']
            (local / item["path"]).write_text(manifest["metadata"]["annotations"][key])
        mounts[path] = str(local)

    def here(value: str) -> str:
        for path, local in mounts.items():
            if value == path or value.startswith(path + "/"):
                return local + value[len(path) :]
        return value

    command = [here(arg) for arg in container["command"] + (container.get("args") or [])]
    assert command[0] == "python3"  # the image's interpreter; here, this environment's
    command[0] = sys.executable
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "AIRFLOW_"))}
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = here(var["value"])
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets[(ref["name"], ref["key"])]
    return command, env, here


def run_evaluation_container(
    manifest: dict, root: Path, secrets: dict[tuple[str, str], str], filled: dict[str, Path] | None = None
) -> tuple[dict, str]:
    """Run ``manifest``'s main container to its end; return the XCom JSON it wrote and its output."""
    command, env, here = evaluation_container(manifest, root, secrets, filled)
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    output = out.stdout + out.stderr
    assert out.returncode == 0, output[-4000:]
    return json.loads(Path(here("/airflow/xcom/return.json")).read_text()), output
