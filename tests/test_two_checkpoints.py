"""Two real checkpoints compared on real rows (issue 17): SmolLM2-135M-Instruct and a checkpoint derived from
it by seeded noise on some weights, each served by vLLM and evaluated on ARC-Challenge and MMLU rows. Every
statistic of `evaljobs compare` and the statistical gate is recomputed here with scipy / statsmodels on the
per-example scores the two bundles hold."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from evaljobs import cli
from evaljobs.engine.gate import Gate, evaluate
from evaljobs.engine.job import run_job
from evaljobs.engine.spec import JobSpec

LIMIT = 40
BENCHMARKS = ["arc_challenge_local", "mmlu_marketing_local"]


def noisy_copy(model_dir: Path, out: Path, seed: int = 0, scale: float = 0.35) -> Path:
    """``model_dir`` with Gaussian noise (``scale`` times each tensor's standard deviation, seeded) added to the
    MLP down-projections of every other layer: a checkpoint that still answers, differently."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(model_dir, out)
    weights = load_file(str(model_dir / "model.safetensors"))
    generator = torch.Generator().manual_seed(seed)
    changed = 0
    for name, tensor in weights.items():
        if name.endswith("mlp.down_proj.weight") and int(name.split(".")[2]) % 2 == 0:
            noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float32) * tensor.float().std() * scale
            weights[name] = (tensor.float() + noise).to(tensor.dtype)
            changed += 1
    assert changed >= 10
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def evaluate_checkpoint(folder: Path, home: Path):
    spec = JobSpec.parse(
        {
            "model": {"checkpoint": str(folder)},
            "benchmarks": BENCHMARKS,
            "settings": {"limit": LIMIT},
            "destination": {"project": "pair", "results_home": str(home), "wandb": "disabled"},
        }
    )
    return run_job(spec)


@pytest.fixture(scope="module")
def compared(model_dir, tmp_path_factory):
    home = tmp_path_factory.mktemp("results")
    noisy = noisy_copy(model_dir, tmp_path_factory.mktemp("derived") / "smollm2-noisy")
    base, new = evaluate_checkpoint(model_dir, home), evaluate_checkpoint(noisy, home)
    return home, base, new


def per_example(row):
    records = [json.loads(line) for line in (Path(row.bundle) / "samples.jsonl").read_text().splitlines()]
    return {(r["task"], r["doc_id"]): float(r["score"]) for r in records}


def test_compare_matches_scipy_and_statsmodels_on_the_two_checkpoints(compared, capsys):
    home, base, new = compared
    base_model, new_model = base.rows[0].model, new.rows[0].model
    assert (base_model, new_model) == ("smollm2-135m-instruct", "smollm2-noisy")
    argv = ["compare", "--project", "pair", "--model", new_model, "--baseline", base_model]
    assert cli.main([*argv, "--results-home", str(home), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    by_name = {b["benchmark"]: b for b in out["benchmarks"]}
    assert sorted(by_name) == sorted(BENCHMARKS)
    raw = []
    for row_new, row_base in zip(new.rows, base.rows, strict=True):
        a_scores, b_scores = per_example(row_new), per_example(row_base)
        keys = sorted(a_scores)
        assert keys == sorted(b_scores) and len(keys) == LIMIT
        a, b = np.array([a_scores[k] for k in keys]), np.array([b_scores[k] for k in keys])
        got = by_name[row_new.benchmark]
        up, down = int(np.sum((a == 1) & (b == 0))), int(np.sum((a == 0) & (b == 1)))
        both, neither = int(np.sum((a == 1) & (b == 1))), int(np.sum((a == 0) & (b == 0)))
        assert (got["n"], got["flips_up"], got["flips_down"]) == (LIMIT, up, down)
        assert got["method"] == "mcnemar_exact"
        p = mcnemar([[both, up], [down, neither]], exact=True).pvalue
        assert got["p_value"] == pytest.approx(p, abs=1e-6)
        if up + down:  # the same p from scipy's exact binomial test on the discordant pairs
            assert p == pytest.approx(min(1.0, sps.binomtest(up, up + down, 0.5).pvalue), rel=1e-9)
        d = a - b
        half = sps.t.ppf(0.975, LIMIT - 1) * d.std(ddof=1) / math.sqrt(LIMIT)
        assert got["delta"] == pytest.approx(d.mean(), abs=1e-6)
        assert (got["ci_low"], got["ci_high"]) == (
            pytest.approx(d.mean() - half, abs=1e-6),
            pytest.approx(d.mean() + half, abs=1e-6),
        )
        raw.append((row_new.benchmark, p))
    adjusted = multipletests([p for _, p in raw], method="holm")[1]
    for (name, _), q in zip(raw, adjusted, strict=True):
        assert by_name[name]["p_adjusted"] == pytest.approx(q, abs=1e-6)
    # The noise changed answers: the comparison has discordant pairs to test.
    assert sum(b["flips_up"] + b["flips_down"] for b in out["benchmarks"]) >= 5


def test_the_statistical_gate_decides_as_an_independent_z_test(compared):
    home, base, new = compared
    base_model, new_model = base.rows[0].model, new.rows[0].model
    deltas, variances = [], []
    for row_new, row_base in zip(new.rows, base.rows, strict=True):
        a_scores, b_scores = per_example(row_new), per_example(row_base)
        keys = sorted(a_scores)
        slope = 100 / (1 - row_new.baseline)
        a, b = np.array([a_scores[k] for k in keys]), np.array([b_scores[k] for k in keys])
        deltas.append(slope * (max(0, a.mean() - row_new.baseline) - max(0, b.mean() - row_new.baseline)))
        variances.append((slope * (a - b).std(ddof=1)) ** 2 / len(keys))
    delta, se = np.mean(deltas), math.sqrt(sum(variances)) / len(variances)
    for model, baseline, sign in ((new_model, base_model, 1), (base_model, new_model, -1)):
        verdict = evaluate(Gate("pair", model, baseline_model=baseline, mode="statistical"), home)
        p_better = sps.norm.sf(sign * delta / se)
        assert verdict.evidence["p_better"] == pytest.approx(p_better, rel=1e-6)
        assert verdict.evidence["delta"] == pytest.approx(sign * delta, abs=1e-6)
        if p_better >= 0.05:
            assert not verdict.released and verdict.reason.startswith("not significantly better")
        assert verdict.decided
        if sign * delta > 0 and p_better >= 0.05:  # a higher point estimate, not significant: the point gate
            assert evaluate(Gate("pair", model, baseline_model=baseline), home).released  # would promote noise
