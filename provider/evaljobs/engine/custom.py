"""Custom benchmarks from a YAML file, compiled to lm-evaluation-harness task configs.

A custom benchmark is a small YAML file over local rows (.jsonl, .json or .csv)::

    name: arc_local
    type: multiple_choice        # or: generate
    data: rows.jsonl             # relative to the YAML file; ${VAR} expands job params and environment
    prompt: "{{query}}"          # Jinja over one row
    choices: choices             # a row field holding a list, a list of field names, or a Jinja list
    answer: gold                 # a row field, or a Jinja template
    answer_format: index         # multiple_choice: index (0-based) | letter | text
    extract: last_number         # generate: last_number | first_line | a regex with one group
    until: ["\\n\\n"]            # generate: stop sequences
    max_tokens: 256              # generate

Every row is checked before anything is served, so a wrong field name, a missing or empty file or a
template that does not render gives one error naming the YAML key. Templates are untrusted: they are rendered
in a sandbox (no files, environment or Python internals, no huge values), also when lm-eval renders them, and
``${VAR}`` takes environment variables in ``data`` and ``fewshot_data`` only, so a file cannot copy a secret
into a prompt. ``description`` is plain text. The compiled config follows lm-eval's
conventions (a choice is scored as the prompt followed by ``" " + choice``; ``limit`` takes the first rows
in file order), so scores are comparable with lm-eval's own tasks.
"""

from __future__ import annotations

import ast
import csv
import json
import re
import string
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal

import jinja2
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from evaljobs.engine.errors import CustomBenchmarkError
from evaljobs.engine.spec import MAX_SPEC_VALUES, expanded_size

MAX_FILE_BYTES = 1 << 20
MAX_DATA_BYTES = 2 << 30
DATA_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv"}
LETTERS = string.ascii_uppercase
NUMBER = r"(-?[0-9][0-9,]*(?:\.[0-9]+)?)"
FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Compared after removing these from both the answer and the extracted output (lm-eval's GSM8K convention).
IGNORED_IN_ANSWERS = [",", r"\$", r"\.$"]
PATH_KEYS = ("data", "fewshot_data")  # the only keys where ${VAR} takes environment variables
MAX_RENDERED = 1_000_000  # characters or items a template may build with * or **


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja without access to files, the environment or Python internals (attributes starting with ``_``,
    mutating methods), which also refuses to build huge strings, lists or numbers with ``*`` and ``**``."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        sized = [len(v) for v in (left, right) if isinstance(v, (str, list, tuple))]
        counts = [abs(v) for v in (left, right) if isinstance(v, int)]
        too_big = (operator == "*" and sized and counts and sized[0] * counts[-1] > MAX_RENDERED) or (
            operator == "**" and isinstance(right, (int, float)) and abs(right) > 64
        )
        if too_big:
            raise jinja2.sandbox.SecurityError(f"{operator} would build a value too large for a prompt")
        return super().call_binop(context, operator, left, right)


# keep_trailing_newline as lm-eval's own environment, so prompts are the same characters.
_jinja = _Sandbox(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


@lru_cache(maxsize=512)
def _compiled(source: str) -> jinja2.Template:
    return _jinja.from_string(source)


@dataclass(frozen=True)
class SandboxedTemplate:
    """A template lm-eval calls with each row (instead of rendering it with its unrestricted Jinja):
    ``kind`` text gives the text, index an int, list a Python literal list."""

    source: str
    kind: Literal["text", "index", "list"] = "text"

    def __call__(self, doc: dict) -> Any:
        text = _compiled(self.source).render(**doc)
        if self.kind == "index":
            return int(text)
        return ast.literal_eval(text) if self.kind == "list" else text


class CustomBenchmarkFile(BaseModel):
    """The YAML keys of a custom benchmark file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][\w.-]{0,63}$")
    type: Literal["multiple_choice", "generate"]
    data: str = Field(max_length=4096)
    prompt: str = Field(max_length=100_000)
    answer: str = Field(max_length=10_000)
    choices: str | list[str] | None = None
    answer_format: Literal["index", "letter", "text"] = "index"
    extract: str = Field("last_number", max_length=1000)
    until: list[str] = Field(["\n\n"], max_length=16)
    max_tokens: int = Field(256, ge=1, le=65_536)
    fewshot_data: str | None = Field(None, max_length=4096)
    num_fewshot: int = Field(0, ge=0, le=64)
    # first_n: every question gets the same first rows of fewshot_data (lm-eval's MMLU): one shared prompt
    # prefix, which vLLM's prefix cache reuses; random: lm-eval's default, a seeded draw per question.
    fewshot_order: Literal["first_n", "random"] = "random"
    description: str = Field("", max_length=100_000)
    metric: Literal["acc", "acc_norm", "exact_match"] | None = None
    baseline: float | None = Field(None, ge=0.0, lt=1.0)
    category: str = Field("custom", pattern=r"^[\w .-]{1,64}$")
    # the row field naming the cluster an example belongs to (a passage, a template): its CI is clustered on it
    cluster: str | None = Field(None, max_length=256)

    @field_validator("until")
    @classmethod
    def _stops(cls, value: list[str]) -> list[str]:
        if not all(value):
            raise ValueError("stop sequences must not be empty strings")
        return value

    @field_validator("description")
    @classmethod
    def _plain_description(cls, value: str) -> str:
        if re.search(r"\{[{%#]", value):
            raise ValueError("description is plain text; remove the Jinja markers ({{, {%, {#)")
        return value


class CustomBenchmark:
    """A validated custom benchmark: its file, its rows' location, and its lm-eval task config."""

    def __init__(self, path: Path, spec: CustomBenchmarkFile, data: Path, fewshot: Path | None, rows: list[dict]):
        self.path, self.spec, self.data, self.fewshot = path, spec, data, fewshot
        self._first_row, self.size = rows[0], len(rows)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def output(self) -> str:
        return self.spec.type

    @property
    def metric(self) -> str:
        if self.spec.type == "generate":
            return "exact_match,extract"
        return f"{self.spec.metric or 'acc'},none"

    @cached_property
    def baseline(self) -> float:
        """Random-guess score: 1 / number of choices (first row) unless the file says otherwise."""
        if self.spec.baseline is not None:
            return self.spec.baseline
        if self.spec.type == "generate":
            return 0.0
        return 1.0 / len(_render_choices(self.spec.choices, self._first_row))

    def task_config(self) -> dict[str, Any]:
        """The lm-eval task config (the dict form of a task YAML)."""
        spec = self.spec
        files = {"test": str(self.data)}
        config: dict[str, Any] = {
            "task": spec.name,
            "dataset_path": DATA_FORMATS[self.data.suffix],
            "test_split": "test",
            "doc_to_text": SandboxedTemplate(spec.prompt),
            "description": spec.description,
            "num_fewshot": spec.num_fewshot,
            "metadata": {"version": 1.0, "source": str(self.path)},
        }
        if self.fewshot:
            files["train"] = str(self.fewshot)
            config["fewshot_split"] = "train"
            if spec.fewshot_order == "first_n":
                config["fewshot_config"] = {"sampler": "first_n"}
        config["dataset_kwargs"] = {"data_files": files}
        if spec.type == "multiple_choice":
            config |= {
                "output_type": "multiple_choice",
                "doc_to_choice": SandboxedTemplate("{{" + _choices_expr(spec.choices) + "}}", "list"),
                "doc_to_target": SandboxedTemplate(_target_template(spec), "index"),
                "metric_list": [
                    {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                    {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
                ],
            }
        else:
            config |= {
                "output_type": "generate_until",
                "doc_to_target": SandboxedTemplate(_target_template(spec)),
                "generation_kwargs": {
                    "until": spec.until,
                    "max_gen_toks": spec.max_tokens,
                    "do_sample": False,
                    "temperature": 0.0,
                },
                "filter_list": [{"name": "extract", "filter": _extract_filters(spec.extract)}],
                "metric_list": [
                    {
                        "metric": "exact_match",
                        "aggregation": "mean",
                        "higher_is_better": True,
                        "ignore_case": True,
                        "ignore_punctuation": False,
                        "regexes_to_ignore": IGNORED_IN_ANSWERS,
                    }
                ],
            }
        return config


def load(path: str | Path, params: dict[str, str] | None = None) -> CustomBenchmark:
    """Read and check a custom benchmark file. ``params`` fill ``${NAME}`` in string values before the
    environment does (the catalog uses it to share one file between several subjects)."""
    path = Path(path).expanduser().resolve()
    raw = _substitute(_read_yaml(path), params or {})
    try:
        spec = CustomBenchmarkFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_input=False)[0]
        key = ".".join(str(p) for p in err["loc"]) or "(file)"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = f"unknown key; the keys are: {', '.join(CustomBenchmarkFile.model_fields)}"
        raise CustomBenchmarkError(path, key, message) from None
    data = _data_file(path, spec.data, "data")
    rows = read_rows(path, data, "data")
    fewshot = None
    if spec.fewshot_data:
        fewshot = _data_file(path, spec.fewshot_data, "fewshot_data")
        if DATA_FORMATS[fewshot.suffix] != DATA_FORMATS[data.suffix]:
            raise CustomBenchmarkError(path, "fewshot_data", "must have the same format as data (.jsonl/.json or .csv)")
        _check_rows(path, spec, read_rows(path, fewshot, "fewshot_data"))
    _check_rows(path, spec, rows)
    _check_extract(path, spec)
    return CustomBenchmark(path, spec, data, fewshot, rows)


def read_rows(path: Path, data: Path, key: str) -> list[dict]:
    """All rows of a data file as dicts; errors name ``key``."""
    if data.stat().st_size > MAX_DATA_BYTES:
        raise CustomBenchmarkError(path, key, f"{data} is larger than {MAX_DATA_BYTES >> 30} GiB")
    try:
        text = data.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CustomBenchmarkError(path, key, f"{data} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        if data.suffix == ".csv":
            rows = list(csv.DictReader(text.splitlines()))
        elif data.suffix == ".json":
            rows = json.loads(text)
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (json.JSONDecodeError, csv.Error, RecursionError) as exc:
        raise CustomBenchmarkError(path, key, f"{data} cannot be parsed: {str(exc)[:200]}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise CustomBenchmarkError(path, key, f"{data} must hold one object (row) per line or a list of objects")
    if not rows:
        raise CustomBenchmarkError(path, key, f"{data} has no rows")
    return rows


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise CustomBenchmarkError(path, "(file)", "no such file; give the path of a custom benchmark .yaml")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise CustomBenchmarkError(path, "(file)", "larger than 1 MiB; a benchmark file holds settings, not rows")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CustomBenchmarkError(path, "(file)", f"not valid UTF-8 YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise CustomBenchmarkError(path, "(file)", "must be a mapping of keys (name, type, data, prompt, answer, ...)")
    if expanded_size(raw) > MAX_SPEC_VALUES:
        raise CustomBenchmarkError(path, "(file)", "expands to too many values (a YAML alias bomb?); remove aliases")
    return raw


def _substitute(raw: dict, params: dict[str, str]) -> dict:
    """``${NAME}``: ``params`` everywhere; environment variables only in the data paths (never in prompts,
    where a secret would reach the model and the results)."""
    import os

    def sub(key: str, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return string.Template(value).safe_substitute({**os.environ, **params} if key in PATH_KEYS else params)

    return {key: sub(key, value) for key, value in raw.items()}


def _data_file(path: Path, value: str, key: str) -> Path:
    if "${" in value:
        raise CustomBenchmarkError(path, key, f"{value!r} uses an unset variable; set it (e.g. EVALJOBS_DATA_ROOT)")
    try:
        data = (path.parent / value).resolve()
    except (ValueError, OSError) as exc:
        raise CustomBenchmarkError(path, key, f"{value[:200]!r} is not a usable path ({exc})") from None
    if data.suffix not in DATA_FORMATS:
        raise CustomBenchmarkError(path, key, f"{data.name}: use a .jsonl, .json or .csv file")
    if not data.is_file():
        raise CustomBenchmarkError(path, key, f"{data} does not exist (paths are relative to the YAML file)")
    return data


def _render(path: Path, key: str, template: str, row: dict, number: int) -> str:
    try:
        return _compiled(template).render(**row)
    except jinja2.UndefinedError as exc:
        raise CustomBenchmarkError(
            path, key, f"row {number}: {exc.message}; the row's fields are: {', '.join(row)}"
        ) from None
    except jinja2.sandbox.SecurityError as exc:
        raise CustomBenchmarkError(path, key, f"row {number}: the template is not allowed: {exc}") from None
    except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError, RecursionError, MemoryError) as exc:
        raise CustomBenchmarkError(path, key, f"bad template: {str(exc)[:300]}") from None


def _check_rows(path: Path, spec: CustomBenchmarkFile, rows: list[dict]) -> None:
    for number, row in enumerate(rows, 1):
        if spec.cluster is not None and spec.cluster not in row:
            raise CustomBenchmarkError(path, "cluster", f"row {number} has no field {spec.cluster!r}")
        _render(path, "prompt", spec.prompt, row, number)
        if spec.type == "generate":
            if not _render(path, "answer", _answer_template(spec.answer), row, number).strip():
                raise CustomBenchmarkError(path, "answer", f"row {number}: the answer is empty")
            continue
        if spec.choices is None:
            raise CustomBenchmarkError(
                path, "choices", "multiple_choice needs choices (a field, field names or a list)"
            )
        choices = _checked_choices(path, spec.choices, row, number)
        answer = _render(path, "answer", _answer_template(spec.answer), row, number).strip()
        _check_answer(path, spec.answer_format, answer, choices, number)


def _checked_choices(path: Path, choices: str | list[str], row: dict, number: int) -> list[str]:
    fields = choices if isinstance(choices, list) else [choices] if FIELD.match(choices) else []
    for field in fields:
        if field not in row:
            raise CustomBenchmarkError(
                path, "choices", f"row {number} has no field {field!r}; fields: {', '.join(row)}"
            )
    if isinstance(choices, str) and fields and not isinstance(row[choices], list):
        raise CustomBenchmarkError(path, "choices", f"row {number}: field {choices!r} must hold a list of options")
    try:
        rendered = _render_choices(choices, row)
    except jinja2.UndefinedError as exc:
        raise CustomBenchmarkError(path, "choices", f"row {number}: {exc.message}; fields: {', '.join(row)}") from None
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, jinja2.TemplateError):
        rendered = None
    if not isinstance(rendered, list) or len(rendered) < 2:
        raise CustomBenchmarkError(
            path,
            "choices",
            f"row {number}: choices must give a list of at least 2 options "
            "(a field holding a list, a list of field names, or one {{ [...] }} Jinja expression)",
        )
    return rendered


def _check_answer(path: Path, fmt: str, answer: str, choices: list[str], number: int) -> None:
    n = len(choices)
    if fmt == "index" and not (answer.isdigit() and int(answer) < n):
        raise CustomBenchmarkError(
            path,
            "answer",
            f"row {number}: {answer!r} is not an index 0..{n - 1}; "
            "set answer_format to letter or text if the answers are letters or texts",
        )
    if fmt == "letter" and not (len(answer) == 1 and answer.upper() in LETTERS[:n]):
        raise CustomBenchmarkError(path, "answer", f"row {number}: {answer!r} is not a letter A..{LETTERS[n - 1]}")
    if fmt == "text" and answer not in choices:
        raise CustomBenchmarkError(path, "answer", f"row {number}: {answer!r} is not one of the choices")


def _check_extract(path: Path, spec: CustomBenchmarkFile) -> None:
    if spec.type != "generate" or spec.extract in ("last_number", "first_line"):
        return
    try:
        groups = re.compile(spec.extract).groups
    except re.error as exc:
        raise CustomBenchmarkError(path, "extract", f"bad regular expression: {exc}") from None
    if groups != 1:
        raise CustomBenchmarkError(path, "extract", "give last_number, first_line or a regex with exactly one group")


def _answer_template(answer: str) -> str:
    """A Jinja template whose output is the answer: a bare field name, or the template as written."""
    return "{{" + answer + "}}" if FIELD.match(answer) else answer


def _captured(answer: str) -> str:
    return "{% set _a %}" + _answer_template(answer) + "{% endset %}"


def _choices_expr(choices: str | list[str] | None) -> str:
    """The Jinja expression giving the list of options as strings."""
    if isinstance(choices, list):
        return "[" + ", ".join(f"{field}|string" for field in choices) + "]"
    if choices and FIELD.match(choices):
        return f"{choices}|map('string')|list"
    match = re.fullmatch(r"\s*\{\{(.*)\}\}\s*", choices or "", re.S)
    if not match or "{{" in match.group(1):
        raise ValueError("choices template must be one {{ ... }} expression")
    return match.group(1)


def _render_choices(choices: str | list[str] | None, row: dict) -> list:
    return SandboxedTemplate("{{" + _choices_expr(choices) + "}}", "list")(row)


def _target_template(spec: CustomBenchmarkFile) -> str:
    """lm-eval's doc_to_target: the answer text (generate) or the index of the right choice."""
    if spec.type == "generate" or spec.answer_format == "index":
        return _captured(spec.answer) + "{{_a|trim}}"
    if spec.answer_format == "letter":
        return _captured(spec.answer) + "{{'" + LETTERS + "'.index(_a|trim|upper)}}"
    return _captured(spec.answer) + "{{(" + _choices_expr(spec.choices) + ").index(_a|trim)}}"


def _extract_filters(extract: str) -> list[dict]:
    if extract == "last_number":
        pattern, group = NUMBER, -1
    elif extract == "first_line":
        pattern, group = r"(?m)^[ \t]*(\S[^\n]*?)[ \t]*$", 0
    else:
        pattern, group = extract, 0
    return [
        {"function": "regex", "regex_pattern": pattern, "group_select": group},
        {"function": "remove_whitespace"},
        {"function": "take_first"},
    ]
