"""lmms-eval's own CLI runs ``--model viper`` (registered by our entry point) offline on a tiny trained
checkpoint, over local tasks (tests/eval/lmms_tasks) whose documents are real mp4 files; its results
JSON and per-sample logs must agree with answers and scores computed here in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_viper.inference import load_inference
from lightning_viper.metrics.parsing import parse_choice
from tests.eval.lmms_tasks.utils import doc_to_text
from tests.eval.videos import write_jsonl, write_videos
from tests.fixtures_demo import Tiny

pytest.importorskip("lmms_eval", reason="lmms-eval is not installed: make install (or docs/evaluation.md)")
TASKS = Path(__file__).parent / "lmms_tasks"


def _samples(out: Path, task: str) -> list[dict]:
    (path,) = out.glob(f"*/*_samples_{task}.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda r: r["doc_id"])


@pytest.mark.slow
def test_lmms_eval_cli_runs_the_viper_plugin_offline(tiny: Tiny, tmp_path: Path) -> None:
    docs = write_videos(tmp_path / "videos", 3)
    write_jsonl(docs, tmp_path / "docs.jsonl")  # the tasks' data_files, relative to the run's directory
    out = tmp_path / "out"
    model_args = f"config={tiny.recipe},ckpt_path={tiny.checkpoint},overlay={tiny.overlay},device=cpu"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "TRANSFORMERS_OFFLINE": "1",
    }
    cmd = [sys.executable, "-m", "lmms_eval", "--model", "viper", "--model_args", model_args]
    cmd += ["--tasks", "viper_needle,viper_needle_mc", "--include_path", str(TASKS), "--batch_size", "1"]
    cmd += ["--log_samples", "--output_path", str(out)]
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    (results_file,) = out.glob("*/*_results.json")
    results = json.loads(results_file.read_text())
    assert results["n-samples"]["viper_needle"]["effective"] == 3
    generated, scored = _samples(out, "viper_needle"), _samples(out, "viper_needle_mc")
    assert [r["doc_id"] for r in generated] == [r["doc_id"] for r in scored] == [0, 1, 2]

    inf = load_inference(tiny.recipe, str(tiny.checkpoint), ["--config", str(tiny.overlay)], device="cpu")
    for doc, gen, mc in zip(docs, generated, scored, strict=True):
        text = doc_to_text(doc)
        assert gen["input"] == mc["input"] == text
        ours = inf.ask(doc["video"], text, max_new_tokens=4, until=["\n"]).text  # the task's generation_kwargs
        assert gen["filtered_resps"] == ours
        assert gen["viper_acc"] == float(parse_choice(ours, doc["options"]) == doc["answer_index"])

        frames = inf.decode(doc["video"]).frames
        nll = [-inf.loglikelihood(frames, text, f" {letter}")[0] for letter in "ABCD"]
        logged = [float(pair[0]) for pair in mc["filtered_resps"]]
        assert logged == pytest.approx(nll, rel=1e-4, abs=1e-4)
        assert mc["acc"] == float(min(range(4), key=nll.__getitem__) == doc["answer_index"])

    table = results["results"]
    assert table["viper_needle"]["viper_acc,none"] == pytest.approx(sum(r["viper_acc"] for r in generated) / 3)
    assert table["viper_needle_mc"]["acc,none"] == pytest.approx(sum(r["acc"] for r in scored) / 3)
