import json
from pathlib import Path

from typer.testing import CliRunner

from edgellm.cli import app
from edgellm.gateway.confidence import LogisticScorer
from edgellm.gateway.training import PromptClassifier


def eval_file(path: Path, correct: list[bool]) -> Path:
    rows = []
    for i, ok in enumerate(correct):
        confident = [-0.1, -4.0, -5.0, -6.0] if ok else [-1.0, -1.1, -1.2, -1.3]
        rows.append({"item_id": f"arc-easy-{i}", "pred": 0, "correct": ok,
                     "choice_logprobs": confident, "choice_tokens": [2, 2, 2, 2]})  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_train_from_the_testbeds_eval_files(tmp_path: Path) -> None:
    small = eval_file(tmp_path / "small.jsonl", [i % 3 != 0 for i in range(30)])
    large = eval_file(tmp_path / "large.jsonl", [True] * 30)
    runner = CliRunner()
    common = ["--small-evals", str(small), "--large-evals", str(large), "--task", "arc-easy"]
    out = tmp_path / "scorer.json"
    r = runner.invoke(app, ["router", "train", "--kind", "cascade", "-o", str(out), *common])
    assert r.exit_code == 0, r.output
    scorer = LogisticScorer.load(out)
    assert scorer.coef[scorer.features.index("mean_logprob")] > 0  # confident answers score up
    out = tmp_path / "router.json"
    r = runner.invoke(
        app, ["router", "train", "-o", str(out), "--escalation-rate", "0.25", *common]
    )
    assert r.exit_code == 0, r.output
    assert "30 prompts" in r.output
    assert 0.0 <= PromptClassifier.load(out).threshold <= 1.0


def test_train_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    r = CliRunner().invoke(app, ["router", "train", str(bad), "-o", str(tmp_path / "o.json")])
    assert r.exit_code == 1 and "lack a field" in r.output
    r = CliRunner().invoke(app, ["router", "train", "-o", str(tmp_path / "o.json")])
    assert r.exit_code == 1 and "--small-evals" in r.output
    r = CliRunner().invoke(app, ["router", "hash-key", "--key", "sk-1"])
    assert r.exit_code == 0 and len(r.output.strip()) == 64 and "sk-1" not in r.output
