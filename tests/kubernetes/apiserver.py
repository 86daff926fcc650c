"""An in-memory stand-in for the few Kubernetes API endpoints the operators call, served over HTTP on
localhost, so the real clients (``kubernetes``, ``kubernetes_asyncio``) and the cncf-kubernetes hooks talk to it
through a ``kubernetes`` connection. It records each call as ``(method, kind, name)``."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ROUTE = re.compile(
    r"^/(?:api|apis/apps)/v1/namespaces/(?P<ns>[^/]+)/(?P<kind>\w+)(?:/(?P<name>[^/]+))?(?P<sub>/status)?$"
)


class ApiServer:
    """Deployments become ready after ``ready_after`` status reads (never when None); ``secrets`` maps
    ``(namespace, name)`` to the Secret's data; ``forbidden`` lists kinds whose reads answer 403."""

    def __init__(self, ready_after: int | None = 0, forbidden: tuple[str, ...] = ()):
        self.ready_after, self.forbidden = ready_after, set(forbidden)
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.calls: list[tuple[str, str, str]] = []
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
        self._http.shutdown()
        self._http.server_close()

    def answer(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
        match = ROUTE.match(path.split("?")[0])
        if not match:
            return 404, _status(404, f"no route {path}")
        ns, kind, name, sub = match["ns"], match["kind"], match["name"], match["sub"]
        self.calls.append((method, kind, name or body["metadata"]["name"]))
        if method == "GET" and kind in self.forbidden:
            return 403, _status(403, f'{kind} "{name}" is forbidden: cannot get resource "{kind}"')
        if kind == "secrets":
            data = self.secrets.get((ns, name))
            return (
                (200, {"metadata": {"name": name, "namespace": ns}, "data": data})
                if data is not None
                else (
                    404,
                    _status(404, f'secrets "{name}" not found'),
                )
            )
        key = (ns, kind, name or body["metadata"]["name"])
        if method == "POST":
            self.objects[key] = body
            return 201, body
        if key not in self.objects:
            return 404, _status(404, f'{kind} "{key[2]}" not found')
        if method == "DELETE":
            del self.objects[key]
            return 200, _status(200, "deleted")
        if sub:
            self.status_reads += 1
            ready = self.ready_after is not None and self.status_reads > self.ready_after
            return 200, self.objects[key] | {"status": {"replicas": 1, "readyReplicas": 1 if ready else None}}
        return 200, self.objects[key]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                status, answer = server.answer(self.command, self.path, body)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def _status(code: int, message: str) -> dict[str, Any]:
    reason = {200: "Success", 403: "Forbidden", 404: "NotFound"}[code]
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Success" if code == 200 else "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
