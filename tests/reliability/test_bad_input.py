"""The bad-input corpus: every bad job spec or custom benchmark file gets one error naming the field (or YAML
key) and the fix, before any server is started; and property tests: the parsers return a valid object or a
validation error, never anything else."""

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evaljobs.engine import custom, preflight
from evaljobs.engine.errors import CustomBenchmarkError, PreflightError, SpecError
from evaljobs.engine.spec import JobSpec

CHECKPOINT = {"checkpoint": "/models/smol"}
BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


def job(**parts) -> dict:
    return {"model": CHECKPOINT, "benchmarks": ["gsm8k"]} | parts


def hosted(base_url: str, **extra) -> dict:
    return job(model={"base_url": base_url, "model": "m", **extra})


SPECS = {
    "unknown benchmark": (job(benchmarks=["gsm8kk"]), "benchmarks: unknown benchmark 'gsm8kk'; did you mean gsm8k"),
    "no benchmarks": (job(benchmarks=[]), "benchmarks: List should have at least 1 item"),
    "201 benchmarks": (job(benchmarks=["gsm8k"] * 201), "benchmarks: List should have at most 200 items"),
    "empty benchmark name": (job(benchmarks=[" "]), "benchmarks: an empty benchmark name; remove it"),
    "NUL in benchmark name": (job(benchmarks=["a\0.yaml"]), "benchmarks: a benchmark name must be at most"),
    "negative limit": (job(settings={"limit": -1}), "settings.limit: Input should be greater than or equal to 0"),
    "absurd limit": (job(settings={"limit": 10**12}), "settings.limit: Input should be less than or equal to"),
    "limit of wrong type": (job(settings={"limit": "ten"}), "settings.limit: Input should be a valid integer"),
    "zero concurrency": (job(settings={"concurrency": 0}), "settings.concurrency: Input should be greater than"),
    "temperature 9": (job(settings={"temperature": 9}), "settings.temperature: Input should be less than or equal"),
    "huge system prompt": (job(settings={"system_prompt": "x" * 20_001}), "settings.system_prompt: String should"),
    "3 GPUs": (job(resources={"gpus": 3}), "resources: gpus 3 is over the limit of 2 GPUs a job (resources.max_gpus)"),
    "misspelt field": (job(settings={"limt": 3}), "settings.limt: unknown field; remove it or check its spelling"),
    "not a mapping": (["gsm8k"], "job: Input should be a valid dictionary"),
    "no model": (job(model={}), "model: no model given; set checkpoint"),
    "file:// base URL": (hosted("file:///etc/passwd"), "model.base_url: 'file:///etc/passwd' is not an http(s) URL"),
    "metadata IP": (hosted("http://169.254.169.254/latest"), "model.base_url: 169.254.169.254 is a link-local or"),
    "metadata host": (hosted("http://metadata.google.internal"), "model.base_url: metadata.google.internal is"),
    "IPv6 link-local": (hosted("http://[fe80::1]:8000"), "model.base_url: fe80::1 is a link-local"),
    "IPv4-mapped metadata": (hosted("http://[::ffff:169.254.169.254]"), "model.base_url: ::ffff:169.254.169.254 is"),
    "unspecified address": (hosted("http://0.0.0.0:8000"), "model.base_url: 0.0.0.0 is a link-local"),
    "credentials in URL": (hosted("https://user:pw@api.example.com"), "model.base_url: the URL holds credentials"),
    "bad port": (hosted("http://127.0.0.1:99999"), "model.base_url: 'http://127.0.0.1:99999' is not an http(s)"),
    "header injection": (hosted("http://h/v1\r\nX-Evil: 1"), "model.base_url: 'http://h/v1\\r\\nX-Evil: 1' is not"),
    "metadata W&B host": (
        job(destination={"wandb_host": "http://169.254.169.254"}),
        "destination.wandb_host: 169.254.169.254 is a link-local",
    ),
    "secret name with a space": (hosted("http://h", api_key_secret="my key"), "model.api_key_secret: 'my key' is"),
    "model name traversal": (hosted("http://h", model="../../etc/passwd"), "model.model: '../../etc/passwd' is not"),
    "project traversal": (job(destination={"project": "../etc"}), "destination.project: '../etc' is not a project"),
    "job id traversal": (job(job_id="../../x"), "job_id: String should match pattern"),
    "NUL in checkpoint": (job(model={"checkpoint": "/m\0x"}), "model.checkpoint: a checkpoint (folder path or"),
    "NUL in results home": (job(destination={"results_home": "/tmp/a\0b"}), "destination.results_home: results_home"),
    "hosted with a GPU": (hosted("http://h") | {"resources": {"gpus": 1}}, "job: resources.gpus must be 0"),
    "YAML alias bomb": (yaml.safe_load(BOMB + "model: {checkpoint: /m}\nbenchmarks: *i\n"), "job: more than 100000"),
}


@pytest.mark.parametrize("case", SPECS)
def test_bad_spec_names_field_and_fix(case):
    data, expected = SPECS[case]
    with pytest.raises(SpecError) as info:
        JobSpec.parse(data)
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems
    assert len(str(info.value)) < 2000  # huge inputs are cut, not echoed


def test_loopback_and_private_endpoints_stay_allowed():
    for url in ("http://127.0.0.1:8000", "http://[::1]:8000", "http://10.0.0.7/v1", "http://vllm.svc:8000"):
        assert JobSpec.parse(hosted(url)).model.base_url.endswith("/v1")


def test_missing_secret_and_oversize_model_fail_before_any_server(model_dir):
    no_key = JobSpec.parse(job(model={"base_url": "http://127.0.0.1:9", "model": "m", "api_key_secret": "K"}))
    with pytest.raises(PreflightError, match="secret K .model.api_key_secret. is not set; add it as a team secret"):
        preflight.run(no_key, secrets={})
    small_limit = {"max_model_gb": 1e-06}
    big = JobSpec.parse(job(model={"checkpoint": str(model_dir)}, benchmarks=["gsm8k_local"], resources=small_limit))
    with pytest.raises(PreflightError, match=r"over the 1e-06 GB limit \(resources.max_model_gb\); lower resources"):
        preflight.run(big)


ARC = {"name": "arc", "type": "multiple_choice", "data": "rows.jsonl", "prompt": "{{query}}", "choices": "choices"}
ROW = {"query": "Q?", "choices": ["a", "b", "c"], "gold": 1}


def bench_files(folder: Path, body: dict | str | bytes, rows: bytes | None = None) -> Path:
    """A benchmark file (a dict is dumped as YAML) beside rows.jsonl (one good row unless given)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rows.jsonl").write_bytes(json.dumps(ROW).encode() + b"\n" if rows is None else rows)
    path = folder / "bench.yaml"
    if isinstance(body, dict):
        body = yaml.safe_dump({**ARC, "answer": "gold", **body})
    path.write_bytes(body if isinstance(body, bytes) else body.encode())
    return path


FILES = {
    "empty file": ("", None, "(file)", "must be a mapping of keys"),
    "YAML alias bomb": (BOMB + "name: x\n", None, "(file)", "expands to too many values (a YAML alias bomb?)"),
    "huge file": ("name: x\n" + "#" * (1 << 20), None, "(file)", "larger than 1 MiB"),
    "non-UTF-8 file": (b"name: \xff\xfe\n", None, "(file)", "not valid UTF-8 YAML"),
    "empty data": ({}, b"", "data", "has no rows"),
    "non-UTF-8 data": ({}, b'{"query": "\xff"}\n', "data", "is not UTF-8 text"),
    "rows missing the answer": ({}, b'{"query": "q", "choices": ["a", "b"]}\n', "answer", "'gold' is undefined"),
    "nested data": ({}, b"[" * 100_000 + b"]" * 100_000 + b"\n", "data", "cannot be parsed"),
    "data outside as a system file": ({"data": "../../../../../../etc/passwd"}, None, "data", "use a .jsonl, .json"),
    "NUL in data path": ({"data": "rows\0.jsonl"}, None, "data", "is not a usable path"),
    "name traversal": ({"name": "../../etc"}, None, "name", "String should match pattern"),
    "empty stop sequence": ({"until": [""]}, None, "until", "stop sequences must not be empty strings"),
    "Jinja in description": ({"description": "{{ lipsum }}"}, None, "description", "description is plain text"),
    "choices not a list": ({"choices": "query"}, None, "choices", "field 'query' must hold a list of options"),
    "answer out of range": ({"answer": "{{5}}"}, None, "answer", "'5' is not an index 0..2"),
}


@pytest.mark.parametrize("case", FILES)
def test_bad_benchmark_file_names_key_and_fix(tmp_path, case):
    body, rows, key, message = FILES[case]
    with pytest.raises(CustomBenchmarkError) as info:
        custom.load(bench_files(tmp_path, body, rows))
    assert (info.value.key, message in str(info.value)) == (key, True), str(info.value)


def test_data_file_over_the_size_limit_is_refused_unread(tmp_path):
    path = bench_files(tmp_path, {})
    with (tmp_path / "rows.jsonl").open("r+b") as f:
        f.truncate(custom.MAX_DATA_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(CustomBenchmarkError, match="larger than 2 GiB"):
        custom.load(path)


def test_corpus_size():
    assert len(SPECS) + len(FILES) + 3 >= 30


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
SPEC_PATHS = [
    ("model", "checkpoint"),
    ("model", "base_url"),
    ("model", "model"),
    ("model", "api_key_secret"),
    ("model", "endpoint"),
    ("benchmarks",),
    ("settings", "limit"),
    ("settings", "system_prompt"),
    ("settings", "max_tokens"),
    ("resources", "gpus"),
    ("destination", "project"),
    ("destination", "results_home"),
    ("destination", "wandb_host"),
    ("job_id",),
]
URLS = st.builds(
    "{}://{}{}".format,
    st.sampled_from(["http", "https", "file", "ftp", ""]),
    st.sampled_from(["127.0.0.1", "169.254.169.254", "[fe80::1]", "[::1]", "h", "", "u:p@h", "metadata"]),
    st.text(max_size=12),
)


def with_value(data: dict, path: tuple[str, ...], value) -> dict:
    data = json.loads(json.dumps(data))
    target = data
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value
    return data


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SPEC_PATHS), JSON | URLS | st.lists(st.text(max_size=20), max_size=3))
def test_spec_parser_gives_a_spec_or_a_spec_error(path, value):
    try:
        spec = JobSpec.parse(with_value(job(), path, value))
    except SpecError as exc:
        assert exc.problems and all(": " in p for p in exc.problems)
    else:
        assert isinstance(spec, JobSpec) and spec.benchmarks


@settings(max_examples=100, deadline=None)
@given(JSON)
def test_spec_parser_on_arbitrary_documents(data):
    try:
        JobSpec.parse(data)
    except SpecError as exc:
        assert exc.problems


FILE_KEYS = [*custom.CustomBenchmarkFile.model_fields, "extra_key"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.dictionaries(st.sampled_from(FILE_KEYS), JSON | st.text(max_size=40), max_size=3),
    st.one_of(st.none(), st.binary(max_size=60), st.lists(JSON, max_size=3).map(lambda r: json.dumps(r).encode())),
)
def test_benchmark_parser_gives_a_benchmark_or_its_error(tmp_path, changes, rows):
    try:
        bench = custom.load(bench_files(tmp_path / "h", changes, rows))
    except CustomBenchmarkError as exc:
        assert exc.key and exc.problems
    else:
        assert bench.task_config()["task"] == bench.name


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_benchmark_parser_on_arbitrary_bytes(tmp_path, body):
    try:
        custom.load(bench_files(tmp_path / "b", body))
    except CustomBenchmarkError as exc:
        assert exc.key
