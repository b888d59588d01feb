"""`edgellm eval TASK`: accuracy by log-likelihood against a server (or a local node)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from edgellm.evals.runner import run_eval
from edgellm.evals.scorers import EvalBackendError, ServerTokenizer, make_scorer
from edgellm.evals.tasks import TASKS, get_task

console = Console(highlight=False)


@contextlib.contextmanager
def server_url(url: str | None, model: str, threads: int, log_dir: Path) -> Iterator[str]:
    """The given URL, or a local `edgellm node` started for the duration."""
    if url:
        yield url.rstrip("/").removesuffix("/v1")
        return
    from edgellm.bench.server import LocalServer

    console.print(f"[dim]starting a local edgellm node for {model} …[/dim]")
    with LocalServer(model, threads=threads, log_path=log_dir / "server.log") as server:
        yield server.url


def register(app: typer.Typer) -> None:
    @app.command(name="eval")
    def eval_(
        task: str = typer.Argument(..., help=f"one of: {', '.join(TASKS)}"),
        model: str = typer.Option(..., "--model", "-m", help="model name on the server"),
        url: str | None = typer.Option(
            None, help="server root or /v1 URL; default: start a local node for --model"
        ),
        limit: int | None = typer.Option(None, help="score only the first N items"),
        out: Path | None = typer.Option(
            None, help="output directory (default runs/eval-TASK-MODEL-TIME); reused = resume"
        ),
        scorer: str = typer.Option("auto", help="auto | loglikelihood | echo"),
        batch: int = typer.Option(8, help="items per HTTP request"),
        threads: int = typer.Option(0, help="threads of the local node (0 = all)"),
    ) -> None:
        """Score a multiple-choice task; writes items.jsonl (per item) and summary.json."""
        try:
            the_task = get_task(task)
        except KeyError as exc:
            console.print(f"[red]error:[/red] {exc.args[0]}")
            raise typer.Exit(2) from exc
        out_dir = out or Path("runs") / (
            f"eval-{task}-{model.replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            with (
                server_url(url, model, threads, out_dir) as root,
                httpx.Client(base_url=root, timeout=600.0) as client,
            ):
                the_scorer = make_scorer(scorer, client, model)
                tokenizer = ServerTokenizer(client, model) if the_task.needs_tokenizer else None
                with Progress(
                    TextColumn(f"[bold]{task}[/bold] {model}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("acc {task.fields[acc]:.1%}"),
                    TimeRemainingColumn(),
                    console=console,
                ) as progress:
                    bar = progress.add_task("eval", total=None, acc=0.0)

                    def on_progress(done: int, total: int, correct: int) -> None:
                        progress.update(bar, completed=done, total=total, acc=correct / done)

                    summary = run_eval(
                        the_task,
                        the_scorer,
                        model=model,
                        out_dir=out_dir,
                        tokenizer=tokenizer,
                        limit=limit,
                        batch_items=batch,
                        on_progress=on_progress,
                    )
        except (EvalBackendError, httpx.HTTPError, OSError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            console.print(f"[dim]finished items are kept in {out_dir}; rerun with --out to resume")
            raise typer.Exit(1) from exc
        except KeyboardInterrupt:
            console.print(f"\n[yellow]interrupted[/yellow]: rerun with --out {out_dir} to resume")
            raise typer.Exit(130) from None
        acc = summary.accuracy
        line = (
            f"{task} {model}: accuracy {acc.accuracy:.2%} ± {acc.stderr:.2%} "
            f"(95% CI {acc.ci95_low:.2%}-{acc.ci95_high:.2%}, n={acc.n})"
        )
        if summary.accuracy_norm:
            line += f"; acc_norm {summary.accuracy_norm.accuracy:.2%}"
        console.print(line)
        console.print(f"[dim]{out_dir}/items.jsonl, {out_dir}/summary.json[/dim]")
