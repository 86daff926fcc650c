"""A seeded fault-injecting HTTP proxy on loopback, in front of an OpenAI-compatible server (a test utility).

``POST .../completions`` requests fail with probability ``rate``, in turn: 429 with ``Retry-After``, 429
without, 500, a dropped connection, and a stall longer than the client's timeout (then dropped). Whether
attempt k of a request fails, and how, depends on (seed, request body, k) only, so a run is reproducible
whatever order requests arrive in. After ``fail_after`` answered requests every request fails (an endpoint
going down). Other routes pass through untouched. The proxy adds ``api_key`` itself, or passes the client's on.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

FAULTS = ("429_retry_after", "429", "500", "drop", "stall")


@dataclass
class Event:
    at: float
    body: str  # hash of the request body
    attempt: int
    fault: str | None  # None: forwarded and answered


@dataclass
class FaultProxy:
    upstream: str  # e.g. http://127.0.0.1:8000 (no /v1)
    api_key: str | None = None
    rate: float = 0.2
    seed: int = 0
    retry_after: int = 1
    stall: float = 10.0
    fail_after: int | None = None
    events: list[Event] = field(default_factory=list)
    url: str = ""

    def fault(self, body: str, attempt: int) -> str | None:
        answered = sum(1 for e in self.events if e.fault is None)
        if self.fail_after is not None and answered >= self.fail_after:
            return FAULTS[attempt % len(FAULTS)]
        digest = hashlib.sha256(f"{self.seed}|{body}|{attempt}".encode()).digest()
        if int.from_bytes(digest[:4]) / 2**32 >= self.rate:
            return None
        return FAULTS[digest[4] % len(FAULTS)]

    def injected(self) -> Counter[str]:
        return Counter(e.fault for e in self.events if e.fault)

    async def _handle(self, request):
        from aiohttp import web

        raw = await request.read()
        if request.method != "POST" or not request.path.endswith("completions"):
            return await self._forward(request, raw)
        body = hashlib.sha256(raw).hexdigest()[:16]
        attempt = sum(1 for e in self.events if e.body == body)
        fault = self.fault(body, attempt)
        self.events.append(Event(time.monotonic(), body, attempt, fault))
        if fault == "429_retry_after":
            return web.Response(status=429, headers={"Retry-After": str(self.retry_after)}, text="slow down")
        if fault in ("429", "500"):
            return web.Response(status=int(fault), text="injected fault")
        if fault == "stall":
            await asyncio.sleep(self.stall)
        if fault in ("drop", "stall"):
            request.transport.abort()
            return web.Response(status=500)  # never reaches the client: the connection is gone
        return await self._forward(request, raw)

    async def _forward(self, request, raw: bytes):
        from aiohttp import web

        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        if self.api_key or "Authorization" in request.headers:
            headers["Authorization"] = f"Bearer {self.api_key}" if self.api_key else request.headers["Authorization"]
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=raw, headers=headers
        ) as upstream:
            data = await upstream.read()
            return web.Response(status=upstream.status, body=data, content_type=upstream.content_type)

    def __enter__(self) -> FaultProxy:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        assert ready.wait(10), "fault proxy did not start"
        return self

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        import aiohttp
        from aiohttp import web

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        server = web.Server(self._handle)
        self._runner = web.ServerRunner(server)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            await self._runner.cleanup()
            await self._session.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
