"""The request cache's copy to object storage (evaljobs.engine.cachecopy), against a real S3 server (SeaweedFS):
the cadence (every N answers, at least every T seconds), restore into lm-eval's SQLite cache with lm-eval's own
keys, segments that are not whole ignored, and concurrent writers of one model never clashing."""

from __future__ import annotations

import math
import re
import threading
import time
from pathlib import Path

import pytest
from lm_eval.api.model import hash_args
from sqlitedict import SqliteDict

from evaljobs.engine.cachecopy import (
    CACHE_DB,
    CacheCopy,
    copying,
    parse_segment,
    restore,
    segment,
    segments_url,
    store_url,
)


def answers(n: int, start: int = 0) -> list[tuple[str, tuple, object]]:
    """``n`` answers as lm-eval's cache hook receives them: log-likelihoods, generations, rolling ones."""
    out = []
    for i in range(start, start + n):
        if i % 3 == 0:
            out.append(("loglikelihood", (f"context {i}", f" choice {i}"), (-0.25 * i - 0.1, i % 2 == 0)))
        elif i % 3 == 1:
            out.append(("generate_until", (f"question {i}", {"until": ["\n\n"], "max_gen_toks": 16}), f"answer {i} é"))
        else:
            out.append(("loglikelihood_rolling", (f"document {i}",), -12.5 - i / 7))
    return out


def local_cache(folder: Path) -> dict[str, object]:
    with SqliteDict(str(folder / CACHE_DB)) as db:
        return dict(db.items())


def segment_sizes(s3_server, bucket: str) -> list[int]:
    """The answers in each segment object of ``bucket``, in key order (one writer: the order written)."""
    objects = s3_server.objects(bucket)
    return [len(parse_segment(objects[k])) for k in sorted(objects) if k.endswith(".jsonl")]


def wait_for(condition, timeout: float = 10.0) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "timed out"
        time.sleep(0.02)
    return time.monotonic() - started


def test_store_url_is_an_object_store_results_home_only():
    assert store_url("s3://bucket/prefix/") == "s3://bucket/prefix"
    assert store_url("gs://bucket") == "gs://bucket"
    assert store_url(Path("/tmp/home")) is None
    assert store_url("file:///tmp/home") is None


def test_every_n_answers_one_segment_of_exactly_those(s3_server, s3_bucket):
    url = segments_url(f"s3://{s3_bucket}/home", "model")
    copy = CacheCopy(url, "job", every=5, seconds=3600).start()
    try:
        for entry in answers(5):
            copy(*entry)
        wait_for(lambda: copy.copied == 5)
        assert segment_sizes(s3_server, s3_bucket) == [5]
        for entry in answers(4, start=5):
            copy(*entry)
        time.sleep(1.0)  # 4 < N answers and T an hour away: nothing is copied
        assert copy.copied == 5 and copy.pending == 4
    finally:
        copy.close()  # the end of the job flushes the rest
    assert segment_sizes(s3_server, s3_bucket) == [5, 4]
    assert copy.copied == 9 and copy.pending == 0


def test_at_least_every_t_seconds_and_no_empty_segments(s3_server, s3_bucket):
    url = segments_url(f"s3://{s3_bucket}/home", "model")
    seconds = 0.5
    copy = CacheCopy(url, "job", every=1000, seconds=seconds).start()
    try:
        time.sleep(0.1)
        [entry] = answers(1)
        copy(*entry)
        waited = wait_for(lambda: copy.copied == 1)
        assert waited <= seconds + 0.5  # one answer, far below N: copied within T (+ the put)
        time.sleep(3 * seconds)  # no answers: no segment
        assert segment_sizes(s3_server, s3_bucket) == [1]
    finally:
        copy.close()
    assert segment_sizes(s3_server, s3_bucket) == [1]


def test_restore_writes_lm_evals_keys_and_exact_values(s3_bucket, tmp_path):
    home = f"s3://{s3_bucket}/home"
    entries = answers(30) + [("loglikelihood", ("ctx", " -inf"), (-math.inf, False))]
    with copying(home, tmp_path / "first", "model", "job-1", every=7, seconds=3600, log=lambda _: None) as copy:
        for entry in entries:
            copy(*entry)
    lines: list[str] = []
    with copying(home, tmp_path / "fresh", "model", "job-1", every=7, seconds=3600, log=lines.append) as copy:
        restored = local_cache(tmp_path / "fresh")
        assert copy.copied == 0
    assert restored == {hash_args(attr, request): answer for attr, request, answer in entries}
    # types too: lm-eval unpacks log-likelihoods as (float, bool) tuples
    assert all(type(restored[hash_args(a, r)]) is type(v) for a, r, v in entries)
    [line] = lines
    assert re.fullmatch(
        rf"request cache: 31 answers restored from \d+ segments of {home}/cache/model/segments in .* s", line
    )


def test_restore_ignores_partly_written_and_garbage_segments(s3_server, s3_bucket, tmp_path):
    home = f"s3://{s3_bucket}/home"
    url = segments_url(home, "model")
    good = answers(6)
    copy = CacheCopy(url, "job", every=1000, seconds=3600).start()
    for entry in good:
        copy(*entry)
    copy.close()
    client, prefix = s3_server.client(), "home/cache/model/segments/"
    whole = segment([(hash_args(a, r), ["x"]) for a, r, _ in answers(4, start=100)])
    client.put_object(Bucket=s3_bucket, Key=prefix + "other.partial.000000.jsonl", Body=whole[: len(whole) // 2])
    client.put_object(Bucket=s3_bucket, Key=prefix + "other.trailerless.000000.jsonl", Body=whole.rsplit(b"\n", 2)[0])
    client.put_object(Bucket=s3_bucket, Key=prefix + "other.garbage.000000.jsonl", Body=b"\x00\xff not json\n{}")
    tampered = whole.replace(b'"x"', b'"y"', 1)
    client.put_object(Bucket=s3_bucket, Key=prefix + "other.tampered.000000.jsonl", Body=tampered)
    client.put_object(Bucket=s3_bucket, Key=prefix + "other.empty.000000.jsonl", Body=b"")

    restored = restore(url, tmp_path / "cache")
    assert (restored.answers, restored.segments, len(restored.ignored)) == (6, 1, 5)
    assert local_cache(tmp_path / "cache") == {hash_args(a, r): v for a, r, v in good}


def test_concurrent_writers_of_one_model_never_clash(s3_server, s3_bucket, tmp_path):
    """Two jobs of one model and two attempts of one job, copying at once: every answer lands, none is lost."""
    url = segments_url(f"s3://{s3_bucket}/home", "model")
    writers = {("job-a", 0): 0, ("job-b", 1): 300, ("job-a", 2): 600, ("job-c", 3): 900}
    copies = [CacheCopy(url, job, every=7, seconds=0.05).start() for job, _ in writers]

    def feed(copy: CacheCopy, start: int) -> None:
        for entry in answers(300, start=start):
            copy(*entry)
            time.sleep(0.0005)

    threads = [threading.Thread(target=feed, args=(c, s)) for c, s in zip(copies, writers.values(), strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for copy in copies:
        copy.close()
    assert [c.copied for c in copies] == [300] * 4
    objects = s3_server.objects(s3_bucket)
    assert len(objects) == sum(len(c.segments) for c in copies)  # no key written twice
    assert sum(segment_sizes(s3_server, s3_bucket)) == 1200
    restored = restore(url, tmp_path / "cache")
    assert (restored.answers, restored.ignored) == (1200, [])
    assert local_cache(tmp_path / "cache") == {hash_args(a, r): v for a, r, v in answers(1200)}


def test_restore_keeps_what_the_local_cache_holds(s3_bucket, tmp_path):
    url = segments_url(f"s3://{s3_bucket}/home", "model")
    copy = CacheCopy(url, "job", every=1000, seconds=3600).start()
    for entry in answers(4):
        copy(*entry)
    copy.close()
    (tmp_path / "cache").mkdir()
    attr, request, _ = answers(1)[0]
    with SqliteDict(str(tmp_path / "cache" / CACHE_DB), autocommit=True) as db:
        db[hash_args(attr, request)] = (-1.0, True)
    assert restore(url, tmp_path / "cache").answers == 3
    assert local_cache(tmp_path / "cache")[hash_args(attr, request)] == (-1.0, True)


def test_a_failing_store_keeps_the_answers_for_the_next_put(s3_server, s3_bucket):
    url = segments_url(f"s3://{s3_bucket}/home", "model")
    lines: list[str] = []
    copy = CacheCopy(url, "job", every=1000, seconds=3600, log=lines.append).start()
    for entry in answers(3):
        copy(*entry)
    put, calls = copy._fs.pipe_file, []

    def refuse(*args, **kwargs):
        calls.append(args[0])
        raise ConnectionError("the store is down")

    copy._fs.pipe_file = refuse
    assert copy.flush() == 0 and copy.pending == 3
    assert lines and "ConnectionError" in lines[0]
    copy._fs.pipe_file = put
    for entry in answers(2, start=3):
        copy(*entry)
    copy.close()
    assert copy.copied == 5 and segment_sizes(s3_server, s3_bucket) == [5]


@pytest.mark.parametrize("value", [object(), {"a": 1}])
def test_answers_json_cannot_hold_are_not_copied(s3_server, s3_bucket, value):
    url = segments_url(f"s3://{s3_bucket}/home", "model")
    copy = CacheCopy(url, "job", every=1000, seconds=3600).start()
    copy("generate_until", ("q", {}), value)
    for entry in answers(2):
        copy(*entry)
    copy.close()
    assert (copy.copied, copy.skipped) == (2, 1) and segment_sizes(s3_server, s3_bucket) == [2]


def test_a_finished_job_merges_its_segments_and_its_killed_attempts(s3_server, s3_bucket, tmp_path):
    home = f"s3://{s3_bucket}/home"
    url = segments_url(home, "model")
    killed = CacheCopy(url, "job", every=3, seconds=3600).start()  # an attempt SIGKILLed: never closed
    for entry in answers(9):
        killed(*entry)
    wait_for(lambda: killed.copied == 9)
    other = CacheCopy(url, "other-job", every=1000, seconds=3600).start()  # another job of the model: kept
    for entry in answers(2, start=50):
        other(*entry)
    other.close()
    lines: list[str] = []
    with copying(home, tmp_path / "pod", "model", "job", every=4, seconds=3600, log=lines.append) as copy:
        for entry in answers(10, start=9):
            copy(*entry)
    names = sorted(k.rsplit("/", 1)[1] for k in s3_server.objects(s3_bucket))
    assert names == sorted([f"job.{copy.attempt}.merged.jsonl", other.segments[0].rsplit("/", 1)[1]])
    assert any(re.fullmatch(r"request cache: the job's \d+ segments merged into one", line) for line in lines)
    restored = restore(url, tmp_path / "fresh")
    assert (restored.answers, restored.segments) == (21, 2)
    assert local_cache(tmp_path / "fresh") == {hash_args(a, r): v for a, r, v in answers(19) + answers(2, start=50)}


def test_a_failed_job_keeps_its_segments_unmerged(s3_server, s3_bucket, tmp_path):
    home = f"s3://{s3_bucket}/home"
    with pytest.raises(KeyboardInterrupt):
        with copying(home, tmp_path / "pod", "model", "job", every=2, seconds=3600, log=lambda _: None) as copy:
            for entry in answers(5):
                copy(*entry)
                wait_for(lambda: copy.pending < 2)
            raise KeyboardInterrupt  # SIGTERM in `evaljobs run`
    assert copy.copied == 5 and len(s3_server.objects(s3_bucket)) == len(copy.segments) >= 3


def test_a_disk_that_outlives_its_jobs_reads_each_segment_once(s3_bucket, tmp_path):
    url = segments_url(f"s3://{s3_bucket}/home", "model")
    copy = CacheCopy(url, "job", every=3, seconds=3600).start()
    for entry in answers(6):
        copy(*entry)
        wait_for(lambda: copy.pending < 3)
    copy.close()
    first = restore(url, tmp_path / "cache")
    assert (first.answers, first.segments, first.known) == (6, 2, 0)
    again = restore(url, tmp_path / "cache")
    assert (again.answers, again.segments, again.known) == (0, 0, 2)
    (tmp_path / "cache" / CACHE_DB).unlink()  # a cache deleted forgets what it had restored
    assert restore(url, tmp_path / "cache").answers == 6


def test_a_store_that_cannot_be_read_does_not_stop_the_job(s3_bucket, tmp_path, monkeypatch):
    from evaljobs.engine import cachecopy

    def unreadable(url, cache_dir):
        raise PermissionError("Access Denied")

    monkeypatch.setattr(cachecopy, "restore", unreadable)
    lines: list[str] = []
    with copying(f"s3://{s3_bucket}/home", tmp_path / "c", "model", "job", 10, 3600, log=lines.append) as copy:
        copy(*answers(1)[0])
    assert lines[0].startswith("request cache: restoring from") and "PermissionError: Access Denied" in lines[0]
    assert copy.copied == 1


def test_a_failing_store_is_tried_again_after_t_seconds_not_at_every_answer(s3_server, s3_bucket):
    url = segments_url(f"s3://{s3_bucket}/home", "model")
    copy = CacheCopy(url, "job", every=2, seconds=0.5, log=lambda _: None).start()
    put, calls = copy._fs.pipe_file, []

    def refuse(*args, **kwargs):
        calls.append(time.monotonic())
        raise ConnectionError("the store is down")

    copy._fs.pipe_file = refuse
    for entry in answers(20):
        copy(*entry)
        time.sleep(0.01)
    assert 1 <= len(calls) <= 2 and copy.pending == 20  # 20 answers, every=2: not 10 puts at a failing store
    copy._fs.pipe_file = put
    wait_for(lambda: copy.copied == 20, timeout=5)
    copy.close()
    assert segment_sizes(s3_server, s3_bucket) == [20]


def test_the_copy_settings_do_not_change_the_settings_hash():
    from evaljobs.engine.spec import Settings

    assert Settings(cache_copy_answers=1, cache_copy_seconds=0.5).score_hash() == Settings().score_hash()
