"""The folder tokenizer gives lm-eval the ids transformers gives, without importing transformers or torch."""

import json
import subprocess
import sys

import pytest

from evaljobs.engine.harness import Endpoint, model_args
from evaljobs.engine.spec import Settings
from evaljobs.engine.tokenizer import FolderTokenizer


@pytest.fixture(scope="module")
def texts(data_root) -> list[str]:
    """Real prompts and answers: GSM8K, IFEval (Unicode, markdown), ARC; and edge cases."""
    rows = []
    for name, fields in (("gsm8k/test.jsonl", ("question", "answer")), ("ifeval/input_data.jsonl", ("prompt",))):
        lines = (data_root / name).read_text(encoding="utf-8").splitlines()[:60]
        rows += [json.loads(line)[f] for line in lines for f in fields]
    arc = [json.loads(line) for line in (data_root / "arc/arc_challenge.jsonl").read_text().splitlines()[:30]]
    rows += [row["query"] + " " + choice for row in arc for choice in row["choices"]]
    return rows + ["", " ", "\n\n", "<|im_start|>user\nhi<|im_end|>", "naïve café 東京 🙂", " leading space"]


@pytest.mark.parametrize("add_special_tokens", [False, True])
def test_ids_and_text_equal_transformers(model_dir, texts, add_special_tokens):
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(str(model_dir))
    ours = FolderTokenizer(model_dir, add_special_tokens=add_special_tokens)
    for text in texts:
        ids = reference(text, add_special_tokens=add_special_tokens).input_ids
        assert ours.encode(text) == ids, text
        assert ours.decode(ids) == reference.decode(ids)
    assert ours.batch_decode([[1, 2, 3], [42]]) == reference.batch_decode([[1, 2, 3], [42]])
    assert (ours.eos_token, ours.eos_token_id) == (reference.eos_token, reference.eos_token_id)
    assert (ours.bos_token, ours.bos_token_id) == (reference.bos_token, reference.bos_token_id)


def test_lm_eval_uses_it_unless_a_chat_template_is_applied(model_dir):
    endpoint = Endpoint("http://127.0.0.1:9/v1", "m", "completions", str(model_dir))
    assert model_args(endpoint, Settings())["tokenizer_folder"] == str(model_dir)
    templated = model_args(endpoint, Settings(chat_template=True))
    assert (templated["tokenizer"], templated["tokenizer_backend"]) == (str(model_dir), "huggingface")


PROBE = """
import sys
from pathlib import Path
from evaljobs.engine.harness import Endpoint, Harness
from evaljobs.engine.spec import Settings
harness = Harness(Endpoint("http://127.0.0.1:9/v1", "m", "completions", sys.argv[1]), Settings(), Path(sys.argv[2]))
lm = harness.lm
print(lm.tok_encode("Question: 2+2?"), lm.eot_token_id, "transformers" in sys.modules, "torch" in sys.modules)
"""


def test_a_harness_starts_without_transformers_or_torch(model_dir, tmp_path):
    from transformers import AutoTokenizer

    out = subprocess.run([sys.executable, "-c", PROBE, str(model_dir), str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    ids, eos, transformers, torch = out.stdout.rsplit("]", 1)[0] + "]", *out.stdout.rsplit("]", 1)[1].split()
    reference = AutoTokenizer.from_pretrained(str(model_dir))
    assert json.loads(ids) == reference("Question: 2+2?", add_special_tokens=False).input_ids
    assert (int(eos), transformers, torch) == (reference.eos_token_id, "False", "False")
