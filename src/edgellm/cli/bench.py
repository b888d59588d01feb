"""`edgellm bench`: measure a model under a workload and load profile into a run directory."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from edgellm.bench.devices import PROFILES
from edgellm.bench.energy import CostSettings
from edgellm.bench.load import PROFILES as LOAD_PROFILES
from edgellm.bench.records import RequestRecord
from edgellm.bench.run import CONFIG, RECORDS, BenchConfig, Hooks, check_config, run_bench
from edgellm.bench.search import SearchSettings
from edgellm.bench.slo import SloError, parse_slo
from edgellm.bench.workloads import WORKLOADS, WorkloadError, WorkloadOptions

console = Console(highlight=False)


class _ProgressHooks(Hooks):
    """A bar of finished requests with live generation tok/s (tokens as they stream)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.bar: TaskID = progress.add_task("requests", total=None, tps=0.0, errors=0)
        self.t0 = time.monotonic()
        self.tokens = 0
        self.errors = 0

    def planned(self, n_requests: int) -> None:
        self.progress.update(self.bar, total=n_requests)
        self.t0 = time.monotonic()

    def token(self, record: RequestRecord) -> None:
        self.tokens += 1
        elapsed = time.monotonic() - self.t0
        if elapsed > 0:
            self.progress.update(self.bar, tps=self.tokens / elapsed)

    def finished(self, record: RequestRecord) -> None:
        if not record.ok:
            self.errors += 1
        if not record.warmup:
            self.progress.update(self.bar, advance=1, errors=self.errors)


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"expected comma-separated integers, got '{text}'") from exc


def _slo(text: str | None) -> dict[str, float] | None:
    if text is None:
        return None
    try:
        return parse_slo(text)
    except SloError as exc:
        raise typer.BadParameter(str(exc), param_hint="--slo") from exc


def _precision(text: str) -> tuple[float, bool]:
    """`0.05` (in the rate's unit) or `5%` (of the passing rate)."""
    relative = text.strip().endswith("%")
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError as exc:
        raise typer.BadParameter(
            f"'{text}': expected a width (0.05) or a percentage (5%)",
            param_hint="--search-precision",
        ) from exc
    if value <= 0:
        raise typer.BadParameter("must be positive", param_hint="--search-precision")
    return (value / 100 if relative else value), relative


def _has_records(run_dir: Path) -> bool:
    return any(p.stat().st_size for p in run_dir.rglob(RECORDS)) if run_dir.exists() else False


def register(app: typer.Typer) -> None:
    @app.command()
    def bench(
        model: str = typer.Option(
            "smollm2-135m-instruct", "--model", "-m", help="model name on the server"
        ),
        url: str | None = typer.Option(
            None, help="OpenAI-compatible (or Ollama) server; default: start a local node"
        ),
        api: str = typer.Option("openai", help="openai (SSE) | ollama (native /api/chat)"),
        workload: str = typer.Option("oasst", help=f"one of: {', '.join(WORKLOADS)}"),
        conversations: int = typer.Option(50, help="oasst: conversations to replay"),
        history: str = typer.Option(
            "model", help="oasst: assistant turns in the history: model (own answers) | dataset"
        ),
        prompt_tokens: str = typer.Option(
            "128", help="synthetic: prompt lengths in tokens, e.g. 64,256,1024"
        ),
        output_tokens: int = typer.Option(128, help="synthetic: tokens to generate"),
        requests_per_length: int = typer.Option(5, help="synthetic: prompts per length"),
        file: Path | None = typer.Option(None, help="file: JSONL of prompts/conversations"),
        load: str = typer.Option("synchronous", help=f"one of: {', '.join(LOAD_PROFILES)}"),
        concurrency: int = typer.Option(4, help="concurrent / sweep: requests in flight"),
        rate: float = typer.Option(1.0, help="constant / poisson: sessions started per second"),
        sweep_points: int = typer.Option(3, help="sweep: constant rates between the extremes"),
        max_requests: int | None = typer.Option(None, help="stop after N requests (per stage)"),
        max_duration: float | None = typer.Option(None, help="stop after S seconds (per stage)"),
        warmup: int = typer.Option(1, help="warm-up requests, excluded from results"),
        max_tokens: int = typer.Option(500, help="max_tokens per request (paper: 500)"),
        temperature: float = typer.Option(0.0, help="0 = greedy, deterministic"),
        seed: int = typer.Option(42),
        profile: str | None = typer.Option(
            None, help=f"emulate a device on the local node: {', '.join(PROFILES)}"
        ),
        power_profile: str | None = typer.Option(
            None, help="device power model for energy (default: --profile, else rpi5)"
        ),
        sample_interval: float = typer.Option(0.5, help="resource sampling interval (s)"),
        price_kwh: float = typer.Option(0.30, help="electricity price, USD per kWh"),
        cloud_price: float | None = typer.Option(
            None, help="cloud tier price, USD per 1k tokens (for the cost comparison)"
        ),
        threads: int = typer.Option(0, help="local node: llama.cpp threads (0 = all)"),
        ctx: int = typer.Option(4096, help="local node: context window"),
        out: Path | None = typer.Option(None, help="run directory (default runs/bench-…)"),
        resume: Path | None = typer.Option(
            None, help="continue an interrupted run directory (its config is reused)"
        ),
        report: bool = typer.Option(True, help="write plots and report.html at the end"),
        slo: str | None = typer.Option(
            None,
            help="per-request bounds, any of ttft, itl (largest gap), tpot, e2e, "
            "e.g. ttft=2s,tpot=50ms,e2e=60s: attainment and goodput in the summary",
        ),
        target: float = typer.Option(0.95, help="search: SLO attainment to keep (0-1]"),
        search_precision: str = typer.Option(
            "10%",
            help="search: stop when the bracket is this narrow: a share of the passing rate "
            "(10%) or an absolute width in --rate's unit (0.05)",
        ),
        search_max_steps: int = typer.Option(8, help="search: at most this many rates"),
        search_requests: int = typer.Option(20, help="search: requests measured per rate"),
        search_duration: float | None = typer.Option(None, help="search: seconds per rate"),
        search_arrivals: str = typer.Option("constant", help="search: constant | poisson"),
        repeat: int = typer.Option(1, help="run the workload N times: means with 95 % CIs"),
        restart_between: bool | None = typer.Option(
            None,
            help="repeats: restart the node between runs (default: yes for the node bench "
            "starts; a server given by --url cannot be restarted by bench)",
        ),
    ) -> None:
        """Replay a workload under a load profile and measure every request."""
        if resume is not None:
            if not (resume / CONFIG).exists():
                console.print(f"[red]error:[/red] {resume} has no {CONFIG}")
                raise typer.Exit(2)
            cfg = BenchConfig.model_validate_json((resume / CONFIG).read_text())
            run_dir = resume
        else:
            if workload not in WORKLOADS or load not in LOAD_PROFILES:
                console.print(f"[red]error:[/red] unknown workload '{workload}' or load '{load}'")
                raise typer.Exit(2)
            if profile is not None and profile not in PROFILES:
                console.print(f"[red]error:[/red] unknown profile '{profile}'")
                raise typer.Exit(2)
            if history not in ("model", "dataset") or api not in ("openai", "ollama"):
                console.print("[red]error:[/red] --history model|dataset, --api openai|ollama")
                raise typer.Exit(2)
            limits = _slo(slo)
            search = None
            if load == "search":
                if limits is None:
                    raise typer.BadParameter("--load search needs --slo", param_hint="--slo")
                if not 0 < target <= 1 or search_arrivals not in ("constant", "poisson"):
                    raise typer.BadParameter(
                        "--target in (0, 1], --search-arrivals constant|poisson",
                        param_hint="--target",
                    )
                precision, relative = _precision(search_precision)
                search = SearchSettings(
                    target=target,
                    precision=precision,
                    relative=relative,
                    max_steps=search_max_steps,
                    requests=search_requests,
                    duration_s=search_duration,
                    arrivals=search_arrivals,
                )
            if repeat < 1:
                raise typer.BadParameter("must be at least 1", param_hint="--repeat")
            if restart_between and url is not None:
                raise typer.BadParameter(
                    "bench restarts only the node it starts itself; restart the server at "
                    "--url yourself (one bench invocation per restart), or leave out --url",
                    param_hint="--restart-between",
                )
            cfg = BenchConfig(
                model=model,
                url=url,
                api=api,
                workload=workload,
                workload_options=WorkloadOptions(
                    conversations=conversations,
                    history=history,
                    prompt_tokens=_ints(prompt_tokens),
                    output_tokens=output_tokens,
                    requests_per_length=requests_per_length,
                    path=file,
                    seed=seed,
                ),
                load=load,
                concurrency=concurrency,
                rate=rate,
                sweep_points=sweep_points,
                max_requests=max_requests,
                max_duration_s=max_duration,
                warmup=warmup,
                max_tokens=max_tokens,
                temperature=temperature,
                seed=seed,
                device_profile=profile,
                power_profile=power_profile or profile or "rpi5",
                sample_interval_s=sample_interval,
                cost=CostSettings(
                    electricity_usd_per_kwh=price_kwh, cloud_usd_per_1k_tokens=cloud_price
                ),
                threads=threads,
                ctx=ctx,
                slo=limits,
                search=search,
                repeat=repeat,
                restart_between=url is None if restart_between is None else restart_between,
            )
            try:
                check_config(cfg)
            except (WorkloadError, ValueError) as exc:
                # nothing was created or started yet
                console.print(f"[red]error:[/red] {exc}")
                raise typer.Exit(2) from exc
            run_dir = out or Path("runs") / (
                f"bench-{workload}-{model.replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"
            )
        console.print(f"[bold]edgellm bench[/bold] → {run_dir}")
        interrupted = False
        try:
            with Progress(
                TextColumn(f"[bold]{cfg.model}[/bold] {cfg.workload}/{cfg.load}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[tps]:.1f} tok/s"),
                TextColumn("[red]{task.fields[errors]} errors"),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                summary = run_bench(
                    cfg, run_dir, hooks=_ProgressHooks(progress), resume=resume is not None
                )
        except KeyboardInterrupt:
            interrupted = True
            from edgellm.bench.run import finalize

            summary = finalize(run_dir, cfg)
        except Exception as exc:
            console.print(f"[red]error:[/red] {exc}")
            if _has_records(run_dir):
                console.print(f"[dim]finished requests are kept; resume with --resume {run_dir}")
            raise typer.Exit(1) from exc
        from edgellm.report.tables import print_extras, print_table

        print_table(console, summary)
        print_extras(console, summary)
        from edgellm.report.turns import print_turns

        print_turns(console, run_dir)
        if report:
            from edgellm.report.html import write_report

            console.print(f"report: {write_report(run_dir)}")
        if interrupted:
            console.print(f"[yellow]interrupted[/yellow]: resume with --resume {run_dir}")
            raise typer.Exit(130)
