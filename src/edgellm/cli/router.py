"""`edgellm router`: train the learned router and the cascade scorer, hash API keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from edgellm.errors import EdgeLLMError

app = typer.Typer(help="Gateway routing: train classifiers from eval outcomes, hash API keys.")
console = Console()


@app.command()
def train(
    outcomes: Path | None = typer.Argument(None, help="JSON lines of labelled outcomes"),
    out: Path = typer.Option(..., "--out", "-o", help="where to write the model (JSON)"),
    kind: str = typer.Option(
        "learned", help="learned: prompt classifier; cascade: logistic confidence scorer"
    ),
    escalation_rate: float = typer.Option(
        0.3, min=0.0, max=1.0, help="learned: fraction of the training prompts sent up a tier"
    ),
    small_evals: Path | None = typer.Option(
        None, help="instead of OUTCOMES: the small model's items.jsonl from `edgellm eval`"
    ),
    large_evals: Path | None = typer.Option(None, help="... and the large model's"),
    task: str | None = typer.Option(None, help="the eval task (for the prompts)"),
    embed_model: str | None = typer.Option(
        None,
        help="learned: also use this GGUF model's prompt embeddings as features (a catalog "
        "name, a .gguf path or a hub reference); the gateway loads it with the router",
    ),
    embed_ctx: int = typer.Option(
        128, min=8, help="learned: tokens of each prompt the embedding model reads"
    ),
    threads: int = typer.Option(2, min=1, help="learned: CPU threads of the embedding model"),
) -> None:
    """Train from outcomes. learned: lines {"prompt", "small_correct", "large_correct"};
    cascade: lines {"features": {mean_logprob, min_logprob, mean_entropy, n_tokens},
    "correct"}."""
    from edgellm.gateway.training import PromptClassifier, fit_cascade_scorer, read_jsonl

    try:
        if outcomes is not None:
            rows = read_jsonl(outcomes)
        elif small_evals and large_evals and task:
            rows = _rows_from_evals(small_evals, large_evals, task, kind)
        else:
            raise EdgeLLMError("give OUTCOMES, or --small-evals, --large-evals and --task")
        if kind == "learned":
            prompts = [str(r["prompt"]) for r in rows]
            ok = [bool(r["small_correct"]) or not bool(r.get("large_correct", True)) for r in rows]
            embedder = None
            if embed_model is not None:
                from edgellm.gateway.embeddings import PromptEmbedder

                embedder = PromptEmbedder(embed_model, n_ctx=embed_ctx, threads=threads)
            model = PromptClassifier.fit(prompts, ok, escalation_rate, embedder)
            model.save(out)
            features = "n-grams, length" + (f", {embed_model} embeddings" if embedder else "")
            console.print(
                f"trained on {len(rows)} prompts ({sum(ok)} where the small model suffices; "
                f"{features}); threshold {model.threshold:.4f} for {escalation_rate:.0%} "
                f"escalation → {out}"
            )
        elif kind == "cascade":
            scorer = fit_cascade_scorer([r["features"] for r in rows], [r["correct"] for r in rows])
            scorer.save(out)
            weights = ", ".join(
                f"{f}={w:+.3f}" for f, w in zip(scorer.features, scorer.coef, strict=True)
            )
            console.print(f"trained on {len(rows)} answers: {weights} → {out}")
        else:
            raise EdgeLLMError(f"unknown kind {kind!r} (learned or cascade)")
    except (KeyError, TypeError) as exc:
        console.print(f"[red]error:[/red] outcome lines lack a field: {exc}")
        raise typer.Exit(1) from exc
    except EdgeLLMError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc


def _rows_from_evals(small: Path, large: Path, task: str, kind: str) -> list[dict[str, Any]]:
    from edgellm.evals.tasks import get_task
    from edgellm.gateway.training import outcomes_from_evals

    try:
        items = get_task(task).load()
    except KeyError as exc:
        raise EdgeLLMError(str(exc.args[0])) from exc
    prompts = {it.id: it.requests[0][0] for it in items if it.requests}
    router_rows, cascade_rows = outcomes_from_evals(small, large, prompts)
    return router_rows if kind == "learned" else cascade_rows


@app.command("hash-key")
def hash_key_cmd(
    key: str = typer.Option(..., prompt=True, hide_input=True, help="the API key to hash"),
) -> None:
    """Print the SHA-256 to put in `auth.keys[].sha256` (the key itself is never stored)."""
    from edgellm.gateway.auth import hash_key

    console.print(hash_key(key))
