"""Custom-benchmark templates are untrusted: whether our checks or lm-eval render them, they reach no file,
environment variable or Python internal, and cannot build huge values; ``${VAR}`` in a prompt stays text."""

import json
import os
from pathlib import Path

import jinja2.sandbox
import pytest
import yaml

from evaljobs.engine import catalog, custom
from evaljobs.engine.errors import CustomBenchmarkError

CANARY = "canary-template-secret"
ROW = {"query": "Q?", "choices": ["a", "b"], "gold": 1}
HOSTILE = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.environ }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ joiner.__init__.__globals__.__builtins__.open('/etc/passwd').read() }}",
    "{{ query.__class__.__base__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ choices.append('x') or choices }}",
    "{{ 'a' * 10**9 }}",
    "{{ 9 ** 99999999 }}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}",
]


def bench(tmp_path: Path, prompt: str) -> Path:
    (tmp_path / "rows.jsonl").write_text(json.dumps(ROW) + "\n")
    body = {"name": "t", "type": "multiple_choice", "data": "rows.jsonl", "prompt": prompt, "choices": "choices"}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(body | {"answer": "gold"}))
    return path


@pytest.mark.parametrize("prompt", HOSTILE)
def test_hostile_template_is_refused_naming_the_key(tmp_path, monkeypatch, prompt):
    monkeypatch.setenv("EVALJOBS_TEMPLATE_CANARY", CANARY)
    with pytest.raises(CustomBenchmarkError) as info:
        custom.load(bench(tmp_path, prompt))
    assert info.value.key == "prompt"
    assert "root:" not in str(info.value) and CANARY not in str(info.value)


def test_lm_eval_renders_prompts_in_the_sandbox_too(tmp_path, monkeypatch):
    """A branch the up-front check does not take (``random``) is still sandboxed when lm-eval renders it."""
    monkeypatch.setenv("EVALJOBS_TEMPLATE_CANARY", CANARY)
    sneaky = "{% if [0, 1]|random %}{{ cycler.__init__.__globals__.os.environ }}{% endif %}{{query}}"
    render = custom.SandboxedTemplate(sneaky)
    outcomes = []
    for _ in range(40):
        try:
            outcomes.append(render(ROW))
        except jinja2.sandbox.SecurityError:
            outcomes.append("refused")
    assert set(outcomes) == {"Q?", "refused"}


def test_environment_variables_never_reach_prompts(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALJOBS_TEMPLATE_CANARY", CANARY)
    loaded = custom.load(bench(tmp_path, "${EVALJOBS_TEMPLATE_CANARY} {{query}}"))
    assert loaded.task_config()["doc_to_text"](ROW) == "${EVALJOBS_TEMPLATE_CANARY} Q?"


@pytest.mark.parametrize("name", ["arc_challenge_local", "gsm8k_local", "mmlu_marketing_local"])
def test_sandboxed_prompts_equal_lm_evals_own_rendering(data_root, name):
    """The sandbox changes nothing for honest templates: the same characters as lm-eval's Jinja, row by row."""
    from lm_eval.utils import apply_template

    loaded = custom.load(catalog.resolve(name).custom, catalog.resolve(name).params)
    rows = custom.read_rows(loaded.path, loaded.data, "data")[:50]
    config = loaded.task_config()
    for key in ("doc_to_text", "doc_to_target"):
        template = config[key]
        assert [template(r) for r in rows] == [_lm_eval(apply_template(template.source, r), template) for r in rows]
    assert os.environ.get("EVALJOBS_TEMPLATE_CANARY") is None


def _lm_eval(text: str, template: custom.SandboxedTemplate):
    return int(text) if template.kind == "index" else text
