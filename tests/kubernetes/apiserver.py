"""An in-memory stand-in for the Kubernetes API endpoints the operators call, served over HTTP on localhost, so
the real clients (``kubernetes``, ``kubernetes_asyncio``), the cncf-kubernetes hooks and KubernetesPodOperator talk
to it through a ``kubernetes`` connection. It records each call as ``(method, kind, name)``.

Deployments and Services are stored; a Deployment's status reports its ``spec.replicas`` ready after
``ready_after`` status reads. Pods are run: with ``kubelet`` (a folder) set, a created pod's main container
runs here as a background process (tests/kubernetes/kubelet.py: its volumes as folders under
``kubelet/<pod>``, its environment, ``secretKeyRef`` values from ``secrets``), and the pod's status follows it:
``Pending`` until it starts, ``Running``, then ``Succeeded`` or ``Failed`` by its exit code once the XCom sidecar
(``airflow-xcom-sidecar``, idle until KubernetesPodOperator kills it through ``exec``) has stopped too. The log
(``/log``, ``follow``, ``timestamps``, ``sinceSeconds``) is the process's output; ``exec`` is served over the
WebSocket channel protocol (``v4.channel.k8s.io``), as the XCom sidecar's ``cat`` of ``/airflow/xcom/return.json``
and its ``kill`` are; :meth:`ApiServer.kill` kills a pod's containers as a lost node would."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.kubernetes.kubelet import evaluation_container

ROUTE = re.compile(
    r"^/(?:api|apis/apps)/v1/namespaces/(?P<ns>[^/]+)/(?P<kind>\w+)(?:/(?P<name>[^/]+))?"
    r"(?:/(?P<sub>status|log|exec))?$"
)
SIDECAR, XCOM_FILE = "airflow-xcom-sidecar", "/airflow/xcom/return.json"
EMPTY_XCOM = "__airflow_xcom_result_empty__"  # what KubernetesPodOperator's sidecar command prints for no file
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class PodRun:
    """One pod's containers here: the main one as a process, the others idle until killed."""

    def __init__(self, manifest: dict[str, Any], root: Path, secrets: dict[tuple[str, str], str]):
        self.manifest, self.started_at = manifest, _now()
        self.lines: list[tuple[float, str, str]] = []  # (time, RFC 3339 time, line)
        self.exit_code: int | None = None
        self.finished_at: str | None = None
        self.sidecars = {c["name"]: None for c in manifest["spec"]["containers"][1:]}  # name -> exit code
        self.done = threading.Event()
        self.process: subprocess.Popen | None = None
        try:
            command, env, self.here = evaluation_container(manifest, root, secrets)
        except KeyError as exc:  # a missing Secret key: the kubelet's CreateContainerConfigError
            self.config_error = f"couldn't find key {exc.args[0][1]} in Secret {exc.args[0][0]}"
            return
        self.config_error = None
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self.process.stdout:
            self.lines.append((time.time(), _now(), raw.decode(errors="replace").rstrip("\n")))
        code = self.process.wait()
        self.exit_code = 128 - code if code < 0 else code  # killed by a signal: 128 + its number, as a kubelet says
        self.finished_at = _now()
        self.done.set()

    def kill(self) -> None:
        """SIGKILL every container (the node is gone): the pod fails."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.done.wait(30)
        self.sidecars = dict.fromkeys(self.sidecars, 137)

    def stop_sidecar(self, name: str) -> None:
        self.sidecars[name] = 0

    def xcom(self) -> str:
        path = Path(self.here(XCOM_FILE))
        return path.read_text() if path.is_file() and path.stat().st_size else EMPTY_XCOM

    def status(self) -> dict[str, Any]:
        main = self.manifest["spec"]["containers"][0]
        image = {"image": main["image"], "imageID": "", "restartCount": 0}
        if self.config_error:
            state = {"waiting": {"reason": "CreateContainerConfigError", "message": self.config_error}}
        elif self.exit_code is None:
            state = {"running": {"startedAt": self.started_at}}
        else:
            reason = "Completed" if self.exit_code == 0 else "Error"
            terminated = {"exitCode": self.exit_code, "reason": reason, "finishedAt": self.finished_at}
            state = {"terminated": terminated | {"startedAt": self.started_at}}
        statuses = [image | {"name": main["name"], "ready": "running" in state, "state": state}]
        for name, code in self.sidecars.items():
            side = {"running": {"startedAt": self.started_at}}
            if code is not None:
                side = {"terminated": {"exitCode": code, "startedAt": self.started_at, "finishedAt": _now()}}
            statuses.append(image | {"name": name, "ready": code is None, "state": side})
        phase = "Pending" if self.config_error else "Running"
        if self.exit_code is not None and all(code is not None for code in self.sidecars.values()):
            phase = "Succeeded" if self.exit_code == 0 else "Failed"
        return {
            "phase": phase,
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "startTime": self.started_at,
            "containerStatuses": statuses,
        }


class ApiServer:
    """Deployments become ready after ``ready_after`` status reads (never when None); ``secrets`` maps
    ``(namespace, name)`` to the Secret's data (values as plain text); ``forbidden`` lists kinds whose reads
    answer 403; ``kubelet`` is the folder under which created pods run (None: pods are stored, never run)."""

    def __init__(self, ready_after: int | None = 0, forbidden: tuple[str, ...] = (), kubelet: Path | None = None):
        self.ready_after, self.forbidden, self.kubelet = ready_after, set(forbidden), kubelet
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.runs: dict[str, PodRun] = {}  # pod name -> its containers, kept after the pod is deleted
        self.calls: list[tuple[str, str, str]] = []
        self.phases: dict[str, list[str]] = {}  # pod name -> the phases its reads answered, in order
        self.status_reads = 0
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"

    def connection(self) -> str:
        """An ``AIRFLOW_CONN_...`` value: a kubeconfig pointing at this server."""
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "stand-in", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "not-a-secret"}}],
            "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "tester"}}],
            "current-context": "stand-in",
        }
        return json.dumps({"conn_type": "kubernetes", "extra": {"kube_config": kubeconfig}})

    def __enter__(self) -> ApiServer:
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        for run in self.runs.values():
            run.kill()
        self._http.shutdown()
        self._http.server_close()

    def pods(self) -> dict[str, dict[str, Any]]:
        """The pods that exist now, by name."""
        return {name: pod for (_ns, kind, name), pod in self.objects.items() if kind == "pods"}

    def kill(self, name: str) -> None:
        """Kill pod ``name``'s containers, as a lost node (spot preemption) does: its phase becomes Failed."""
        self.runs[name].kill()

    def answer(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
        url = urlsplit(path)
        match, query = ROUTE.match(url.path), {k: v[-1] for k, v in parse_qs(url.query).items()}
        if not match:
            return 404, _status(404, f"no route {path}")
        ns, kind, name, sub = match["ns"], match["kind"], match["name"], match["sub"]
        self.calls.append((method, f"{kind}/{sub}" if sub in ("log", "exec") else kind, name or _name(body)))
        if method == "GET" and kind in self.forbidden:
            return 403, _status(403, f'{kind} "{name}" is forbidden: cannot get resource "{kind}"')
        if kind == "secrets":
            data = self.secrets.get((ns, name))
            if data is None:
                return 404, _status(404, f'secrets "{name}" not found')
            return 200, {"metadata": {"name": name, "namespace": ns}, "data": data}
        if kind == "events":
            return 200, {"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": []}
        if method == "GET" and name is None:
            items = [self._read(key) for key in self.objects if key[:2] == (ns, kind)]
            selected = [item for item in items if _selected(item["metadata"].get("labels") or {}, query)]
            return 200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": selected}
        key = (ns, kind, name or _name(body))
        if method == "POST":
            if key in self.objects:
                return 409, _status(409, f'{kind} "{key[2]}" already exists')
            self.objects[key] = body | {"metadata": body["metadata"] | {"namespace": ns, "uid": key[2]}}
            if kind == "pods" and self.kubelet is not None:
                self.runs[key[2]] = PodRun(body, self.kubelet / key[2], self._secret_values())
            return 201, self._read(key)
        if key not in self.objects:
            return 404, _status(404, f'{kind} "{key[2]}" not found')
        if method == "DELETE":
            del self.objects[key]
            if kind == "pods" and key[2] in self.runs:
                self.runs[key[2]].kill()
            return 200, _status(200, "deleted")
        if method == "PATCH":
            stored = self.objects[key]["metadata"]
            stored["labels"] = (stored.get("labels") or {}) | body["metadata"].get("labels", {})
        if sub == "status":
            self.status_reads += 1
        return 200, self._read(key)

    def _read(self, key: tuple[str, str, str]) -> dict[str, Any]:
        """The object with its current status."""
        obj, (_ns, kind, name) = self.objects[key], key
        if kind == "pods":
            run = self.runs.get(name)
            status = run.status() if run else {"phase": "Pending"}
            self.phases.setdefault(name, []).append(status["phase"])
            return obj | {"status": status}
        if kind == "deployments":
            replicas = obj.get("spec", {}).get("replicas", 1)
            ready = self.ready_after is not None and self.status_reads > self.ready_after
            return obj | {"status": {"replicas": replicas, "readyReplicas": replicas if ready else None}}
        return obj

    def _secret_values(self) -> dict[tuple[str, str], str]:
        """The stand-in's Secrets as (secret, key) -> value (kept as plain text), for ``secretKeyRef``."""
        return {(name, key): value for (_ns, name), data in self.secrets.items() for key, value in data.items()}

    def log(self, name: str, query: dict[str, str]) -> Any:
        """Pod ``name``'s log lines (bytes), following the process while it runs when ``follow`` is set."""
        run, sent = self.runs[name], 0
        since = time.time() - float(query["sinceSeconds"]) if "sinceSeconds" in query else 0.0
        stamps, follow = (query.get(flag, "").lower() == "true" for flag in ("timestamps", "follow"))
        while True:
            finished = run.done.is_set()
            for at, stamp, line in run.lines[sent:]:
                if at >= since:
                    yield (f"{stamp} {line}\n" if stamps else f"{line}\n").encode()
            sent = len(run.lines)
            if finished or not follow:
                return
            run.done.wait(0.1)

    def exec(self, name: str, query: dict[str, list[str]], ws: WebSocket) -> None:
        """The ``exec`` of KubernetesPodOperator's XCom sidecar: ``cat`` of the summary, then ``kill``."""
        run, command = self.runs[name], " ".join(query.get("command", []))
        if query.get("stdin", ["False"])[-1].lower() == "true":  # the kill: one line on stdin
            ws.receive()
            run.stop_sidecar(query["container"][-1])
        elif "return.json" in command:
            ws.send(1, run.xcom().encode())
        ws.send(3, json.dumps({"metadata": {}, "status": "Success"}).encode())
        ws.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                status, answer = server.answer(self.command, self.path, body)
                url = urlsplit(self.path)
                sub = url.path.rsplit("/", 1)[-1]
                if status == 200 and sub == "exec" and self.headers.get("Upgrade", "").lower() == "websocket":
                    self.close_connection = True
                    return server.exec(url.path.split("/")[-2], parse_qs(url.query), WebSocket(self))
                if status == 200 and sub == "log":  # chunked, a chunk a line, as the kubelet streams it
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                    for chunk in server.log(url.path.split("/")[-2], query):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    return None
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return None

            do_GET = do_POST = do_DELETE = do_PATCH = _serve

            def log_message(self, *args: object) -> None:
                pass

        return Handler


class WebSocket:
    """The server side of one WebSocket (RFC 6455) on a request's connection, with Kubernetes' channel byte
    in front of each binary message."""

    def __init__(self, request: BaseHTTPRequestHandler):
        accept = hashlib.sha1((request.headers["Sec-WebSocket-Key"] + WEBSOCKET_GUID).encode()).digest()
        request.send_response(101, "Switching Protocols")
        request.send_header("Upgrade", "websocket")
        request.send_header("Connection", "Upgrade")
        request.send_header("Sec-WebSocket-Accept", base64.b64encode(accept).decode())
        request.send_header("Sec-WebSocket-Protocol", "v4.channel.k8s.io")
        request.end_headers()
        request.wfile.flush()
        self.rfile, self.wfile, self.socket = request.rfile, request.wfile, request.connection

    def send(self, channel: int, data: bytes) -> None:
        self._frame(0x82, bytes([channel]) + data)

    def receive(self) -> bytes:
        """One message from the client (masked, as clients send them)."""
        head = self.rfile.read(2)
        length = head[1] & 0x7F
        if length == 126:
            length = int.from_bytes(self.rfile.read(2), "big")
        elif length == 127:
            length = int.from_bytes(self.rfile.read(8), "big")
        mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
        return bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))

    def close(self) -> None:
        self._frame(0x88, (1000).to_bytes(2, "big"))
        self.socket.settimeout(2)
        try:
            self.receive()  # the client's close
        except (OSError, IndexError):
            pass
        self.socket.shutdown(socket.SHUT_RDWR)

    def _frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        size = (
            bytes([n])
            if n < 126
            else bytes([126]) + n.to_bytes(2, "big")
            if n < 65536
            else bytes([127]) + n.to_bytes(8, "big")
        )
        self.wfile.write(bytes([opcode]) + size + payload)
        self.wfile.flush()


def _name(body: dict[str, Any] | None) -> str:
    return (body or {}).get("metadata", {}).get("name", "")


def _selected(labels: dict[str, str], query: dict[str, str]) -> bool:
    """Whether ``labels`` match the ``labelSelector`` of ``query`` (``k=v``, ``k!=v``, ``k``, ``!k``)."""
    for term in filter(None, query.get("labelSelector", "").split(",")):
        if "!=" in term:
            key, value = term.split("!=")
            ok = labels.get(key) != value
        elif "=" in term:
            key, value = term.split("=", 1)
            ok = labels.get(key) == value
        else:
            ok = (term[1:] not in labels) if term.startswith("!") else term in labels
        if not ok:
            return False
    return True


def _status(code: int, message: str) -> dict[str, Any]:
    reason = {200: "Success", 403: "Forbidden", 404: "NotFound", 409: "AlreadyExists"}[code]
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Success" if code == 200 else "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
