"""The request cache copied to object storage as a job runs, so a lost pod's replacement resumes.

In a pod the request cache (lm-eval's SQLite file, ``requests_rank0.db``) lives on an emptyDir: a pod that is
SIGKILLed, preempted or evicted takes it along, and its retry would send every request again. While a job
runs, :class:`CacheCopy` copies each new answer to the store; before lm-eval runs, :func:`restore` writes
what the store holds for the model into the local cache. A fresh pod (fresh emptyDir, same store) then
repeats at most the answers received since the last copy, plus those in flight.

Hand-rolled, and why:

- **Segments, not the SQLite file.** Uploading the database would cost O(answers so far) at every copy (the
  file only grows) and two jobs of one model would overwrite each other's file. Each copy is instead one
  new object holding only the answers received since the previous copy: O(new answers). Its key,
  ``<store>/cache/<model key>/segments/<job id>.<attempt>.<seq>.jsonl``, is deterministic within an attempt
  (a random token per process, so retries of one job and concurrent jobs never share a key) and written
  with a create-only put (``If-None-Match: *`` on S3): nothing is ever overwritten, and no lock is needed on
  storage that has none.
- **lm-eval's own keys.** A line is ``{"k": key, "a": answer}`` with ``key = hash_args(attr, request)``,
  the key lm-eval's cache hook stores the answer under, so a restored answer is found exactly where lm-eval
  looks for it.
- **JSON, not pickle.** lm-eval's SQLite values are pickles; unpickling objects read from a bucket would run
  whatever a writer to the bucket put there. Answers are strings (generations), ``(float, bool)`` tuples
  (log-likelihoods) and floats (rolling log-likelihoods): JSON holds them exactly (Python floats round-trip
  through their ``repr``, ``NaN`` and ``-Infinity`` included), with tuples tagged so they come back as
  tuples. An answer of any other type stays in the local cache only.
- **A checksummed trailer.** The last line of a segment is ``{"n": lines, "sha256": digest of the lines
  before}``. A put on S3 is atomic, but a local or FUSE store can hold a partly written file, and anything
  may be in a bucket: a segment whose trailer does not match is ignored whole (its answers are asked again).
- **Off the answer path.** The cache hook only appends ``(attr, request, answer)`` to a list; hashing,
  encoding and the put happen on a background thread, woken when ``every`` answers wait or ``seconds``
  have passed. The job's end, its failure and SIGTERM (``evaljobs run`` turns it into KeyboardInterrupt)
  flush what is left. A put that fails keeps its answers for the next one and never fails the job.
- **Merged at the end.** A restore reads every segment of the model (~12 ms a segment on the test server),
  and a long job writes one every ``seconds``. A job that ends (not one that fails or is stopped: SIGTERM's
  grace period is for the flush) merges its segments, and those of its own earlier, killed attempts, into
  one object before deleting them: the segments of a model grow with its jobs, not with their length.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEY = re.compile(r"^[0-9a-f]{64}$")
CACHE_DB = "requests_rank0.db"  # lm-eval's file for use_cache=<cache dir>/requests (rank 0)
RESTORED = "evaljobs_segments"  # the table of that file naming the segments restored into it


def store_url(home: Any) -> str | None:
    """The object-store URL of a results home (``s3://``, ``gs://``, ``az://``, ...); None for a local folder,
    whose request cache is already where the next run looks."""
    text = str(home)
    scheme, sep, _ = text.partition("://")
    return text.rstrip("/") if sep and scheme not in ("", "file", "local") else None


def segments_url(store: str, model_key: str) -> str:
    """Where a model's request-cache segments go in ``store``."""
    return f"{store.rstrip('/')}/cache/{model_key}/segments"


def encode_answer(value: Any) -> Any:
    """``value`` as JSON-ready data, tuples tagged; TypeError for a type the cache never holds."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, tuple):
        return {"t": [encode_answer(v) for v in value]}
    if isinstance(value, list):
        return [encode_answer(v) for v in value]
    raise TypeError(f"a {type(value).__name__} answer is not copied")


def decode_answer(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) != {"t"} or not isinstance(value["t"], list):
            raise ValueError("not an encoded answer")
        return tuple(decode_answer(v) for v in value["t"])
    if isinstance(value, list):
        return [decode_answer(v) for v in value]
    return value


def segment(entries: list[tuple[str, Any]]) -> bytes:
    """One segment object: a line per (lm-eval cache key, encoded answer), then the checksummed trailer."""
    body = "".join(json.dumps({"k": k, "a": a}, separators=(",", ":")) + "\n" for k, a in entries).encode()
    trailer = {"n": len(entries), "sha256": hashlib.sha256(body).hexdigest()}
    return body + json.dumps(trailer).encode() + b"\n"


def parse_segment(data: bytes) -> list[tuple[str, Any]] | None:
    """The (key, answer) pairs of a segment, or None when it is not a whole, valid one."""
    body, _, last = data.rstrip(b"\n").rpartition(b"\n")
    body = body + b"\n" if body else b""
    try:
        trailer = json.loads(last)
        if not isinstance(trailer, dict) or trailer.get("sha256") != hashlib.sha256(body).hexdigest():
            return None
        pairs = []
        for line in body.splitlines():
            entry = json.loads(line)
            if not isinstance(entry, dict) or not KEY.match(str(entry.get("k"))):
                return None
            pairs.append((entry["k"], decode_answer(entry["a"])))
    except (ValueError, TypeError, KeyError):
        return None
    return pairs if len(pairs) == trailer.get("n") else None


@dataclass
class Restored:
    answers: int = 0  # answers written into the local cache
    segments: int = 0  # segments read whole
    ignored: list[str] = field(default_factory=list)  # segments that were not whole, valid ones
    read: list[str] = field(default_factory=list)  # the segments read whole (store paths)
    known: int = 0  # segments restored into this cache before, not read again
    seconds: float = 0.0


def restore(url: str, cache_dir: Path) -> Restored:
    """Write every answer the segments under ``url`` hold into the SQLite cache in ``cache_dir``, before
    lm-eval opens it. Answers the local cache already holds are left as they are, and segments restored into
    it before are not read again (a disk that outlives its jobs: they are named in a table of the cache's
    own file, so a deleted cache forgets them too)."""
    from sqlitedict import SqliteDict

    from evaljobs.engine.objectstore import filesystem

    started, restored = time.monotonic(), Restored()
    fs, root = filesystem(url)
    try:
        names = sorted(p for p in fs.find(root) if p.endswith(".jsonl"))
    except FileNotFoundError:
        names = []
    cache_dir.mkdir(parents=True, exist_ok=True)
    if names:
        with SqliteDict(str(cache_dir / CACHE_DB), tablename=RESTORED) as done:
            known = set(done.keys())
        restored.known = len([n for n in names if n in known])
        names = [n for n in names if n not in known]
    if not names:
        restored.seconds = time.monotonic() - started
        return restored
    contents = fs.cat(names, on_error="omit")  # concurrent gets on object stores; a vanished one is omitted
    db = SqliteDict(str(cache_dir / CACHE_DB), autocommit=False)
    try:
        held = set(db.keys())
        for name in names:
            pairs = parse_segment(contents[name]) if isinstance(contents.get(name), bytes) else None
            if pairs is None:
                restored.ignored.append(name)
                continue
            restored.segments += 1
            restored.read.append(name)
            for key, answer in pairs:
                if key not in held:
                    db[key] = answer
                    held.add(key)
                    restored.answers += 1
        db.commit()
    finally:
        db.close()
    with SqliteDict(str(cache_dir / CACHE_DB), tablename=RESTORED) as done:
        done.update(dict.fromkeys(restored.read, True))
        done.commit()
    restored.seconds = time.monotonic() - started
    return restored


class CacheCopy:
    """Copies the answers handed to it (``copy(attr, request, answer)``, what lm-eval's cache hook receives)
    to new segment objects under ``url``: at least every ``every`` answers or ``seconds`` seconds."""

    def __init__(self, url: str, job_id: str, every: int, seconds: float, log: Callable[[str], None] = print):
        self.url, self.job_id, self.every, self.seconds, self.log = url.rstrip("/"), job_id, every, seconds, log
        self.attempt = secrets.token_hex(4)
        self.seq = 0
        self.copied = self.skipped = self.failures = 0
        self.put_seconds = 0.0  # time spent in successful puts (on the copying thread)
        self.segments: list[str] = []
        self._pending: list[tuple[str, Any, Any]] = []
        self._lock, self._put_lock = threading.Lock(), threading.Lock()
        self._wake, self._stopping = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._fs: Any = None

    def __call__(self, attr: str, request: Any, answer: Any) -> None:
        """The answer path: O(1), no I/O."""
        with self._lock:
            self._pending.append((attr, request, answer))
            due = len(self._pending) >= self.every
        if due:
            self._wake.set()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def start(self) -> CacheCopy:
        from evaljobs.engine.objectstore import filesystem

        self._fs, self._root = filesystem(self.url)
        try:
            self._fs.makedirs(self._root, exist_ok=True)  # a local folder needs it; object stores have no folders
        except OSError:
            pass  # the first put says what is wrong, and the job goes on
        self._thread = threading.Thread(target=self._loop, name="evaljobs-cache-copy", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.seconds)
            self._wake.clear()
            if not self._stopping.is_set():
                failures = self.failures
                self.flush()
                if self.failures > failures:  # not a put an answer while the store fails: T seconds first
                    self._stopping.wait(self.seconds)

    def flush(self) -> int:
        """Copy every answer waiting now, as one segment; the answers copied (0 when the put failed)."""
        from lm_eval.api.model import hash_args

        with self._put_lock:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return 0
            entries = []
            for attr, request, answer in batch:
                try:
                    entries.append((hash_args(attr, request), encode_answer(answer)))
                except TypeError:
                    self.skipped += 1
            if not entries:
                return 0
            data, began = segment(entries), time.monotonic()
            try:
                self._put(data)
            except Exception as exc:  # the store is down or refusing: these answers go with the next put
                with self._lock:
                    self._pending[:0] = batch
                self.failures += 1
                if self.failures == 1:
                    self.log(f"    request cache: copying to {self.url} failed ({type(exc).__name__}: {exc}); retrying")
                return 0
            self.copied += len(entries)
            self.put_seconds += time.monotonic() - began
            return len(entries)

    def _put(self, data: bytes) -> None:
        for _ in range(3):
            path = f"{self._root}/{self.job_id}.{self.attempt}.{self.seq:06d}.jsonl"
            try:
                self._fs.pipe_file(path, data, mode="create")
            except FileExistsError:  # never overwrite a segment: another writer drew the same token
                self.attempt = secrets.token_hex(4)
                continue
            self.seq += 1
            self.segments.append(path)
            return
        raise FileExistsError(path)

    def compact(self, earlier: list[str]) -> int:
        """Merge this attempt's segments and ``earlier`` ones (of killed attempts of this job) into one, then
        delete them, so that the segments a restore reads grow with the jobs of a model, not with their
        length. The merged object is put before any part is deleted: a part is gone only once its answers are
        in the merged one (a restore that listed it before then skips it, and asks those answers again). The
        number of segments merged (0: nothing to merge, or the store failed; the parts are kept)."""
        parts = list(dict.fromkeys([*earlier, *self.segments]))
        if len(parts) < 2 or self._fs is None:
            return 0
        try:
            merged: dict[str, Any] = {}
            read = []  # only the parts read whole are deleted: one that could not be read stays
            for part, data in self._fs.cat(parts, on_error="omit").items():
                if isinstance(data, bytes) and (pairs := parse_segment(data)) is not None:
                    merged |= dict(pairs)
                    read.append(part)
            if len(read) < 2:
                return 0
            whole = segment([(k, encode_answer(a)) for k, a in merged.items()])
            path = f"{self._root}/{self.job_id}.{self.attempt}.merged.jsonl"
            self._fs.pipe_file(path, whole, mode="create")
            self._fs.rm(read)
        except Exception as exc:
            self.log(f"    request cache: merging its {len(parts)} segments failed ({type(exc).__name__}: {exc})")
            return 0
        self.segments = [path, *(p for p in parts if p not in read)]
        return len(read)

    def close(self) -> None:
        """Stop the thread and copy what is left (at the job's end, on its failure and on SIGTERM)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(60)
            if self._thread.is_alive():  # a put that hangs (the store unreachable): the answers stay local
                self.log(f"    request cache: copying to {self.url} hangs; {self.pending} answers not copied")
                return
        if self._fs is not None:
            self.flush()


@contextmanager
def copying(
    url: str | None,
    cache_dir: Path,
    model_key: str,
    job_id: str,
    every: int,
    seconds: float,
    log: Callable[[str], None] = print,
) -> Iterator[CacheCopy | None]:
    """Restore the model's request cache from ``url`` (an object store; None: nothing to do) into
    ``cache_dir``, then copy the job's new answers there until the block ends."""
    if url is None:
        yield None
        return
    where = segments_url(url, model_key)
    try:
        restored = restore(where, cache_dir)
    except Exception as exc:  # the job can still run: it sends the requests the store would have answered
        log(f"request cache: restoring from {where} failed ({type(exc).__name__}: {exc}); the local cache is used")
        restored = Restored()
    if restored.segments or restored.ignored:
        ignored = f"; {len(restored.ignored)} not whole, ignored: {', '.join(restored.ignored)}"
        log(
            f"request cache: {restored.answers} answers restored from {restored.segments} segments of {where} "
            f"in {restored.seconds:.1f} s{ignored if restored.ignored else ''}"
        )
    copy = CacheCopy(where, job_id, every, seconds, log).start()
    try:
        yield copy
    except BaseException:  # failed or stopped (SIGTERM): copy what was received, at once
        copy.close()
        _copied(copy, where, log)
        raise
    copy.close()
    _copied(copy, where, log)
    earlier = [p for p in restored.read if p.rpartition("/")[2].rsplit(".", 3)[0] == job_id]
    if merged := copy.compact(earlier):
        log(f"request cache: the job's {merged} segments merged into one")


def _copied(copy: CacheCopy, where: str, log: Callable[[str], None]) -> None:
    if copy.copied or copy.pending:
        left = f", {copy.pending} not copied (the store failed)" if copy.pending else ""
        log(f"request cache: {copy.copied} answers copied to {where} in {len(copy.segments)} segments{left}")
