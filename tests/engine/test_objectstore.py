"""engine/objectstore.py against the real S3 server: URLs, create-once puts, listings, pulls, the publishing
rounds, and the error that names the extra to install."""

from __future__ import annotations

import json

import pytest

from evaljobs.engine import objectstore
from evaljobs.engine.objectstore import RemoteHome, StorageError, check_url, is_url
from evaljobs.engine.results import ResultRow, ResultsStore, write_json, write_jsonl


def test_urls_name_a_bucket_and_carry_no_credentials():
    assert check_url("s3://team-evals/llm/") == "s3://team-evals/llm"
    assert check_url("S3://team-evals//a/b") == "s3://team-evals/a/b"
    assert is_url("s3://b/x") and is_url("gs://b") and not is_url("/data/s3:/x") and not is_url("http://h/x")
    for bad, says in [
        ("s3://AKIA:hunter2canary@bucket/x", "must not carry credentials"),
        ("s3://bucket/x?versionId=1", "must not carry credentials"),
        ("s3://B/x", "is not a bucket name"),
        ("s3://ab", "is not a bucket name"),
        ("s3://bucket/../x", "no '..'"),
        ("ftp://bucket/x", "scheme must be one of"),
    ]:
        with pytest.raises(ValueError, match=says):
            check_url(bad)
        assert "hunter2canary" not in str(pytest.raises(ValueError, check_url, bad).value)


def test_local_copy_is_under_the_home(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALJOBS_HOME", str(tmp_path))
    assert objectstore.local_copy("s3://team-evals/llm/x") == tmp_path / "remote" / "s3" / "team-evals" / "llm" / "x"


def test_create_once_listings_and_reads(s3_bucket):
    home = RemoteHome(f"s3://{s3_bucket}/p")
    assert home.put("a/one.json", b"1", create=True) is True
    assert home.put("a/one.json", b"2", create=True) is False  # If-None-Match: * refused: the first stays
    assert home.get("a/one.json") == b"1" and home.get("a/none.json") is None
    before = home.listing("a")
    home.put("a/one.json", b"3")  # a plain put replaces
    after = home.listing("a")
    assert list(before) == list(after) == ["a/one.json"] and before != after  # the ETag changed
    assert home.listing("nothing") == {}
    assert home.cat_many(["a/one.json", "a/gone.json"]) == {"a/one.json": b"3"}


def test_a_missing_bucket_is_an_error_naming_the_credentials(s3_server, s3_bucket):
    with pytest.raises(StorageError, match="no-such-bucket-x.*AWS_ACCESS_KEY_ID"):
        RemoteHome("s3://no-such-bucket-x/p").put("k", b"v")
    with pytest.raises(StorageError, match="listing s3://no-such-bucket-x/p/rows/proj failed.*bucket"):
        objectstore.project_rows("s3://no-such-bucket-x/p", "proj")


def test_a_missing_implementation_names_the_extra(monkeypatch):
    import fsspec.core

    def missing(*args, **kwargs):
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(fsspec.core, "url_to_fs", missing)
    with pytest.raises(StorageError, match=r"needs s3fs: pip install 'airflow-provider-evaljobs\[s3\]'"):
        RemoteHome("s3://bucket-x/p").get("k")


def recorded(home, model: str, score: float) -> ResultRow:
    store = ResultsStore(home)
    folder = store.bundle_dir("proj", model, "bench", "h1")
    write_jsonl(folder / "samples.jsonl", [{"doc_id": 0, "score": score}])
    write_json(folder / "metrics.json", {"score": score})
    (folder / "ci.json").write_text("{}")  # a statistics cache: stays local
    row = ResultRow("proj", model, "bench", "h1", "job", "knowledge", "acc", score, 0.25, 1, {}, str(folder))
    return store.record(row)


def test_push_then_pull_on_a_fresh_disk(s3_server, s3_bucket, tmp_path, monkeypatch):
    url = f"s3://{s3_bucket}/p"
    monkeypatch.setenv("EVALJOBS_HOME", str(tmp_path / "writer"))
    writer = RemoteHome(url)
    key = writer.push_result(recorded(writer.local, "m1", 0.5))
    assert key == "rows/proj/m1/bench/h1.json"
    objects = s3_server.objects(s3_bucket)
    body = json.loads(objects[f"p/{key}"])
    assert body["files"] == ["metrics.json", "samples.jsonl"] and not [k for k in objects if k.endswith("ci.json")]

    monkeypatch.setenv("EVALJOBS_HOME", str(tmp_path / "reader"))
    [row] = objectstore.project_rows(url, "proj")
    assert (row.model, row.score) == ("m1", 0.5) and row.bundle.startswith(str(tmp_path / "reader"))
    assert json.loads((tmp_path / "reader").joinpath(row.bundle, "metrics.json").read_text()) == {"score": 0.5}

    # A row whose bundle is gone (its writer was interrupted, or a lifecycle rule expired it) is left out.
    s3_server.client().delete_object(Bucket=s3_bucket, Key=f"p/{body['row']['bundle']}/samples.jsonl")
    monkeypatch.setenv("EVALJOBS_HOME", str(tmp_path / "another-reader"))
    assert objectstore.project_rows(url, "proj") == []


def test_publishing_rebuilds_while_the_rows_change(s3_server, s3_bucket, tmp_path, monkeypatch):
    """A row that lands while a board is built makes the publisher build again, from both rows."""
    monkeypatch.setenv("EVALJOBS_HOME", str(tmp_path / "a"))
    home = RemoteHome(f"s3://{s3_bucket}/p")
    home.push_result(recorded(home.local, "m1", 0.5))
    other = RemoteHome(home.url, tmp_path / "b")
    built: list[list[str]] = []

    def render(rows):
        built.append(sorted(r.model for r in rows))
        if len(built) == 1:  # another job records its row meanwhile
            other.push_result(recorded(other.local, "m2", 0.7))
        return built[-1]

    lines: list[str] = []
    assert home.publish("proj", render, log=lines.append) == ["m1", "m2"]
    assert built == [["m1"], ["m1", "m2"]] and lines == ["1 rows changed while publishing: rebuilding"]
