"""A latency-bound OpenAI-compatible endpoint on loopback: the instrument that defines the server-bound limit.

Every request takes exactly ``latency`` seconds and at most ``concurrency`` are served at once (the rest
queue), so N requests cannot finish faster than ceil(N / C) x L: whatever a client takes beyond that is
its own overhead. Answers are deterministic functions of the prompt: ``/v1/completions`` (text, or
echo + logprobs for log-likelihoods; token ids or strings, one prompt or a batch), ``/v1/chat/completions``,
``/v1/models``, ``/health``, ``/version``, vLLM-style ``/metrics`` counters and ``/stats`` (requests, HTTP
requests, peak in flight, first arrival and last answer since the last ``POST /reset``). It runs as its own
process so the client under measurement does not share its interpreter. With ``record``, every request body
is appended to a JSON-lines file: the exact requests a client sends, to replay against a real server.

    python -m tests.latency_endpoint --latency 0.05 --concurrency 64 --port 8123 [--record FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

MODEL = "latency-model"


def _unit(*parts: Any) -> float:
    """A deterministic number in [0, 1) from ``parts``."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big") / 2**64


def _tokens(prompt: Any) -> list[str]:
    return [str(t) for t in prompt] if isinstance(prompt, list) else prompt.split() or [""]


def _prompts(value: Any) -> list[Any]:
    """One prompt or a batch: a string, a list of ints, or a list of either."""
    if isinstance(value, str) or (isinstance(value, list) and value and isinstance(value[0], int)):
        return [value]
    return list(value)


def _text(prompt: Any) -> str:
    number = int(_unit("answer", prompt) * 100)
    return f" The answer is {number}.\n#### {number}"


def completion(body: dict[str, Any]) -> tuple[dict[str, Any], int, int]:
    """The answer to a ``/v1/completions`` body, with prompt and generated token counts."""
    choices, n_in, n_out = [], 0, 0
    for index, prompt in enumerate(_prompts(body.get("prompt", ""))):
        tokens = _tokens(prompt)
        n_in += len(tokens)
        if body.get("echo") and body.get("logprobs") is not None:
            values = [-round(0.1 + 5 * _unit(prompt, i), 4) for i in range(len(tokens) + 1)]
            text = "".join(tokens) + " x"
            logprobs = {
                "tokens": [*tokens, "x"],
                "token_logprobs": [None, *values[1:]],
                "top_logprobs": [None, *({tok: lp} for tok, lp in zip([*tokens[1:], "x"], values[1:], strict=True))],
            }
            n_out += 1
        else:
            text, logprobs = _text(prompt)[: max(1, int(body.get("max_tokens") or 16) * 4)], None
            n_out += len(text.split())
        choices.append({"index": index, "text": text, "logprobs": logprobs, "finish_reason": "stop"})
    return {"id": "cmpl-latency", "object": "text_completion", "model": MODEL, "choices": choices}, n_in, n_out


def chat(body: dict[str, Any]) -> tuple[dict[str, Any], int, int]:
    messages = body.get("messages", [])
    prompt = json.dumps(messages, sort_keys=True)
    text = _text(prompt)
    message = {"role": "assistant", "content": text}
    answer = {"id": "chat-latency", "object": "chat.completion", "model": MODEL}
    answer["choices"] = [{"index": 0, "message": message, "finish_reason": "stop"}]
    return answer, len(prompt.split()), len(text.split())


class Endpoint:
    """The server's state: a semaphore of ``concurrency`` slots, each request held ``latency`` seconds."""

    def __init__(self, latency: float, concurrency: int, record: Path | None = None):
        self.latency, self.slots = latency, asyncio.Semaphore(concurrency)
        self.record = record.open("a", encoding="utf-8") if record else None
        self.stats = {"requests": 0, "http_requests": 0, "in_flight": 0, "peak_in_flight": 0}
        self.stats |= {"tokens_in": 0, "tokens_out": 0, "first_arrival": None, "last_answer": None}

    async def answer(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.json()
        if self.record:
            self.record.write(json.dumps({"path": request.path, "body": body}) + "\n")
            self.record.flush()
        stats = self.stats
        stats["first_arrival"] = stats["first_arrival"] or time.time()
        stats["http_requests"] += 1
        async with self.slots:
            stats["in_flight"] += 1
            stats["peak_in_flight"] = max(stats["peak_in_flight"], stats["in_flight"])
            await asyncio.sleep(self.latency)
            make = chat if request.path.endswith("/chat/completions") else completion
            out, n_in, n_out = make(body)
            stats["in_flight"] -= 1
        stats["requests"] += len(out["choices"])
        stats["tokens_in"] += n_in
        stats["tokens_out"] += n_out
        stats["last_answer"] = time.time()
        out["usage"] = {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}
        return web.json_response(out)

    async def reset(self, _request: Any) -> Any:
        """Start a new measurement: first arrival, last answer and peak in flight are forgotten."""
        from aiohttp import web

        self.stats |= {"first_arrival": None, "last_answer": None, "peak_in_flight": self.stats["in_flight"]}
        return web.json_response(self.stats)

    def metrics(self) -> str:
        s = self.stats
        return "".join(
            f'vllm:{name}{{model_name="{MODEL}"}} {float(s[key])}\n'
            for name, key in [
                ("request_success_total", "requests"),
                ("prompt_tokens_total", "tokens_in"),
                ("generation_tokens_total", "tokens_out"),
            ]
        )

    def app(self) -> Any:
        from aiohttp import web

        def text(body: str) -> Any:
            return lambda _request: _respond(web.Response(text=body))

        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_post("/v1/completions", self.answer)
        app.router.add_post("/v1/chat/completions", self.answer)
        app.router.add_get("/health", text(""))
        app.router.add_get("/version", lambda _r: _respond(web.json_response({"version": "latency-endpoint"})))
        app.router.add_get("/v1/models", lambda _r: _respond(web.json_response({"data": [{"id": MODEL}]})))
        app.router.add_get("/metrics", lambda _r: _respond(web.Response(text=self.metrics())))
        app.router.add_get("/stats", lambda _r: _respond(web.json_response(self.stats)))
        app.router.add_post("/reset", self.reset)
        return app


async def _respond(response: Any) -> Any:
    return response


def limit(requests: int, latency: float, concurrency: int) -> float:
    """The server-bound limit: the shortest time ``requests`` can be answered in."""
    return math.ceil(requests / concurrency) * latency


class LatencyEndpoint:
    """The endpoint as a child process, for ``with``: ``base_url`` (…/v1), ``stats()`` and ``reset()``."""

    def __init__(self, latency: float, concurrency: int, log: Path | None = None, record: Path | None = None):
        self.latency, self.concurrency, self.log, self.record = latency, concurrency, log, record
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.root = f"http://127.0.0.1:{self.port}"
        self.base_url = self.root + "/v1"

    def __enter__(self) -> LatencyEndpoint:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        command = [sys.executable, "-m", "tests.latency_endpoint", "--port", str(self.port)]
        command += ["--latency", str(self.latency), "--concurrency", str(self.concurrency)]
        command += ["--record", str(self.record)] if self.record else []
        out = self.log.open("ab") if self.log else subprocess.DEVNULL
        repo = Path(__file__).resolve().parents[1]
        self.process = subprocess.Popen(
            command, cwd=repo, stdout=out, stderr=out, env=os.environ | {"PYTHONPATH": str(repo)}
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.root + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"latency endpoint on port {self.port} did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)

    def stats(self) -> dict[str, Any]:
        return httpx.get(self.root + "/stats", timeout=10).json()

    def reset(self) -> dict[str, Any]:
        return httpx.post(self.root + "/reset", timeout=10).json()


def main() -> None:
    from aiohttp import web

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--record", type=Path, help="append every request body to this JSON-lines file")
    args = parser.parse_args()

    async def serve() -> None:
        runner = web.AppRunner(Endpoint(args.latency, args.concurrency, args.record).app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.port, backlog=4096).start()
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
