"""One bench run: a workload under a load profile against one model, into a run directory.

Run directory layout (all plain files, see docs/testbed.md):
  config.json       the exact BenchConfig
  environment.json  package versions, machine, command line
  model.json        the server's model card and the model file's sha256
  records.jsonl     one RequestRecord per request (appended as each finishes)
  sessions.done     ids of finished sessions (what `--resume` skips)
  samples.jsonl     resource samples (CPU %, RSS, phase)
  summary.json      table, percentiles, CV by context length, energy and cost, SLO figures
  search.json       `--load search`: the rates it walked and the capacity it found
  server.log        the local node's log (when bench started it)
  repeat-NN/        `--repeat N`: one such directory per run; the top-level summary.json
                    holds every figure's mean and 95 % interval across them
  repeat-NN/finished  the run ran to its end (what `--resume` skips; an interrupted run has
                    a summary.json too, written when it was interrupted)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, Field

from edgellm.bench.client import RequestSpec, measure
from edgellm.bench.devices import get_profile
from edgellm.bench.energy import CostSettings, energy_summary, read_rapl_uj
from edgellm.bench.environment import environment, model_description
from edgellm.bench.load import Gate, LoadSettings, get_load_profile
from edgellm.bench.records import RequestRecord, ResourceSample
from edgellm.bench.resources import PhaseTracker, ResourceSampler, metrics_probe, pid_probe
from edgellm.bench.search import SearchResult, SearchSettings, StepMeasure
from edgellm.bench.slo import evaluate
from edgellm.bench.summary import RunSummary, summarize, summarize_repeats
from edgellm.bench.tokenizers import LocalTokenizer, ServerTextTokenizer
from edgellm.bench.workloads import (
    Session,
    Tokenizer,
    WorkloadError,
    WorkloadOptions,
    get_workload,
)

_Line = TypeVar("_Line", bound=BaseModel)

CONFIG, RECORDS, SAMPLES, SUMMARY, DONE, SEARCH, FINISHED = (
    "config.json",
    "records.jsonl",
    "samples.jsonl",
    "summary.json",
    "sessions.done",
    "search.json",
    "finished",
)


class BenchConfig(BaseModel):
    model: str
    url: str | None = Field(None, description="server root or /v1 URL; None: start a local node")
    api: Literal["openai", "ollama"] = "openai"
    workload: str = "oasst"
    workload_options: WorkloadOptions = Field(default_factory=WorkloadOptions)
    load: str = "synchronous"
    concurrency: int = Field(4, ge=1)
    rate: float = Field(1.0, gt=0)
    sweep_points: int = Field(3, ge=1)
    max_requests: int | None = Field(None, ge=1)
    max_duration_s: float | None = Field(None, gt=0)
    warmup: int = Field(1, ge=0, description="requests sent first and left out of results")
    max_tokens: int = Field(500, ge=1)
    temperature: float = 0.0
    seed: int = 42
    device_profile: str | None = Field(None, description="emulate a device (local node only)")
    power_profile: str = Field("rpi5", description="device whose power model gives the energy")
    sample_interval_s: float = Field(0.5, gt=0)
    cost: CostSettings = Field(default_factory=CostSettings)
    threads: int = 0
    ctx: int = 4096
    timeout_s: float = 600.0
    slo: dict[str, float] | None = Field(None, description="per-request bounds in seconds")
    search: SearchSettings | None = Field(None, description="--load search")
    repeat: int = Field(1, ge=1, description="run the workload this many times")
    restart_between: bool = Field(True, description="repeats: restart the local node")


class Hooks:
    """Progress callbacks (the CLI draws rich progress bars with them)."""

    def planned(self, n_requests: int) -> None: ...

    def token(self, record: RequestRecord) -> None: ...

    def finished(self, record: RequestRecord) -> None: ...


def _root(url: str) -> str:
    return url.rstrip("/").removesuffix("/v1")


@contextlib.contextmanager
def _server(cfg: BenchConfig, run_dir: Path) -> Iterator[tuple[str, int | None, dict[str, Any]]]:
    if cfg.url:
        yield _root(cfg.url), None, {}
        return
    from edgellm.bench.server import LocalServer

    profile = get_profile(cfg.device_profile) if cfg.device_profile else None
    with LocalServer(
        cfg.model,
        threads=cfg.threads,
        ctx=cfg.ctx,
        profile=profile,
        log_path=run_dir / "server.log",
    ) as server:
        yield server.url, server.pid, server.profile_applied


def _tokenizer(client: httpx.Client, cfg: BenchConfig, card: dict[str, Any] | None) -> Tokenizer:
    server = ServerTextTokenizer(client, cfg.model)
    if server.available():
        return server
    described = model_description(card, cfg.model)
    if "file" in described:
        return LocalTokenizer(Path(described["file"]))
    raise RuntimeError(
        "no tokenizer: the server has no /tokenize and the model file is not available here"
    )


def _model_card(client: httpx.Client, cfg: BenchConfig) -> dict[str, Any] | None:
    path = "/api/tags" if cfg.api == "ollama" else "/v1/models"
    try:
        response = client.get(path)
        response.raise_for_status()
        listed = response.json().get("data") or response.json().get("models") or []
    except (httpx.HTTPError, ValueError):
        return None
    for card in listed:
        if card.get("id") == cfg.model or card.get("name") == cfg.model:
            return dict(card)
    return None


def _load_jsonl(path: Path, model: type[_Line]) -> list[_Line]:
    """The lines of a JSONL file that parse as `model`; none if the file is not there. A line
    that does not parse (cut short by an interrupted run) is skipped."""
    if not path.exists():
        return []
    lines = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            lines.append(model.model_validate_json(line))
    return lines


def load_records(path: Path) -> list[RequestRecord]:
    return _load_jsonl(path, RequestRecord)


def load_samples(path: Path) -> list[ResourceSample]:
    return _load_jsonl(path, ResourceSample)


def _prepare_resume(run_dir: Path) -> set[str]:
    """Keep the records of finished sessions only; a half-replayed conversation restarts."""
    done_path = run_dir / DONE
    done = set(done_path.read_text().split()) if done_path.exists() else set()
    kept = [r for r in load_records(run_dir / RECORDS) if r.conversation_id in done]
    (run_dir / RECORDS).write_text("".join(r.model_dump_json() + "\n" for r in kept))
    return done


class _Replay:
    """Replays sessions turn by turn, writing one record per request as it finishes."""

    def __init__(
        self,
        cfg: BenchConfig,
        client: httpx.AsyncClient,
        run_dir: Path,
        phases: PhaseTracker,
        hooks: Hooks,
        first_id: int,
    ) -> None:
        self.cfg = cfg
        self.client = client
        self.run_dir = run_dir
        self.phases = phases
        self.hooks = hooks
        self.next_id = first_id
        self.records: list[RequestRecord] = []

    def _spec(self, session: Session, messages: list[dict[str, str]] | None) -> RequestSpec:
        return RequestSpec(
            model=self.cfg.model,
            messages=messages,
            prompt=session.prompt if messages is None else None,
            max_tokens=session.max_tokens or self.cfg.max_tokens,
            temperature=self.cfg.temperature,
            seed=self.cfg.seed,
            ignore_eos=session.ignore_eos,
        )

    async def request(
        self, spec: RequestSpec, session: Session, turn: int, stage: str, warmup: bool
    ) -> RequestRecord:
        record = RequestRecord(
            request_id=self.next_id,
            model=self.cfg.model,
            stage=stage,
            warmup=warmup,
            conversation_id=session.id,
            turn=turn,
            start_s=time.time(),
        )
        self.next_id += 1
        self.phases.start(record.request_id)

        def on_token(r: RequestRecord) -> None:
            if r.chunks == 1:
                self.phases.first_token(r.request_id)
            self.hooks.token(r)

        try:
            await measure(self.client, spec, record, api=self.cfg.api, on_token=on_token)
        except asyncio.CancelledError:
            # stopped by us (Ctrl-C), not by the server: kept, but out of every figure
            record.ok, record.cancelled, record.error = False, True, "cancelled by the benchmark"
            self._write(record)
            raise
        finally:
            self.phases.end(record.request_id)
        self._write(record)
        self.hooks.finished(record)
        return record

    def _write(self, record: RequestRecord) -> None:
        self.records.append(record)
        with (self.run_dir / RECORDS).open("a", encoding="utf-8") as out:
            out.write(record.model_dump_json() + "\n")

    def judge(self, stage: str) -> StepMeasure:
        """The SLO verdict of a finished stage (the capacity search's feedback)."""
        result = evaluate(
            [r for r in self.records if r.stage == stage and not r.warmup],
            self.cfg.slo or {},
            stage,
        )
        return StepMeasure(
            attainment=result.attainment,
            goodput_rps=result.goodput_rps,
            goodput_tps=result.goodput_tps,
            requests=result.counted,
        )

    async def session(self, session: Session, gate: Gate, stage: str) -> None:
        if session.prompt is not None:
            if gate.take():
                record = await self.request(self._spec(session, None), session, 0, stage, False)
                gate.done()
                if record.ok:
                    self._mark_done(session)
            return
        history = ([{"role": "system", "content": session.system}] if session.system else []) + [
            *session.history
        ]
        for turn, user in enumerate(session.user_turns):
            if not gate.take():
                return
            messages = [*history, {"role": "user", "content": user}]
            record = await self.request(self._spec(session, messages), session, turn, stage, False)
            gate.done()
            if not record.ok:
                return  # the conversation cannot go on without this answer
            answer = record.output
            dataset = session.dataset_answers[turn] if turn < len(session.dataset_answers) else None
            if self.cfg.workload_options.history == "dataset" and dataset is not None:
                answer = dataset
            history = [*messages, {"role": "assistant", "content": answer}]
        self._mark_done(session)

    async def warmup(self, sessions: list[Session]) -> None:
        for session in sessions:
            if session.prompt is not None:
                spec = self._spec(session, None)
            else:
                spec = self._spec(session, [{"role": "user", "content": session.user_turns[0]}])
            await self.request(spec, session, 0, "warmup", True)

    def _mark_done(self, session: Session) -> None:
        with (self.run_dir / DONE).open("a", encoding="utf-8") as out:
            out.write(session.id + "\n")


def check_config(cfg: BenchConfig) -> None:
    """Everything that can be checked before a directory is created or a server started."""
    get_load_profile(cfg.load)
    if cfg.load == "search" and (not cfg.slo or cfg.search is None):
        raise WorkloadError("--load search needs --slo and its settings (--target, ...)")
    if cfg.workload != "synthetic":  # the synthetic workload needs the server's tokenizer
        get_workload(cfg.workload).sessions(cfg.workload_options, None)


def run_bench(
    cfg: BenchConfig,
    run_dir: Path,
    *,
    hooks: Hooks | None = None,
    resume: bool = False,
    accuracy: dict[str, dict[str, float]] | None = None,
) -> RunSummary:
    """Run (or resume) the benchmark described by `cfg` into `run_dir`; return its summary."""
    hooks = hooks or Hooks()
    check_config(cfg)
    if cfg.repeat > 1:
        return _run_repeats(cfg, run_dir, hooks, resume, accuracy)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _server(cfg, run_dir) as server:
        return _run_once(cfg, run_dir, server, hooks, resume, accuracy)


def repeat_dirs(run_dir: Path, cfg: BenchConfig) -> list[Path]:
    return [run_dir / f"repeat-{i:02d}" for i in range(1, cfg.repeat + 1)]


def _run_repeats(
    cfg: BenchConfig,
    run_dir: Path,
    hooks: Hooks,
    resume: bool,
    accuracy: dict[str, dict[str, float]] | None,
) -> RunSummary:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG).write_text(cfg.model_dump_json(indent=2) + "\n")
    single = cfg.model_copy(update={"repeat": 1})
    with contextlib.ExitStack() as stack:
        shared = None
        if not cfg.restart_between and not cfg.url:
            shared = stack.enter_context(_server(single, run_dir))
        for sub in repeat_dirs(run_dir, cfg):
            if resume and (sub / FINISHED).exists():
                continue
            sub.mkdir(exist_ok=True)
            (sub / FINISHED).unlink(missing_ok=True)
            with nullcontext(shared) if shared else _server(single, sub) as server:
                _run_once(single, sub, server, hooks, resume and (sub / CONFIG).exists(), None)
            (sub / FINISHED).touch()
    return finalize(run_dir, cfg, accuracy=accuracy)


def _run_once(
    cfg: BenchConfig,
    run_dir: Path,
    server: tuple[str, int | None, dict[str, Any]],
    hooks: Hooks,
    resume: bool,
    accuracy: dict[str, dict[str, float]] | None,
) -> RunSummary:
    root, pid, profile_applied = server
    if cfg.workload == "synthetic" and cfg.workload_options.salt is None:
        options = cfg.workload_options.model_copy(update={"salt": secrets.token_hex(4)})
        cfg = cfg.model_copy(update={"workload_options": options})
    done = _prepare_resume(run_dir) if resume else set()
    if not resume:
        for name in (RECORDS, SAMPLES, DONE, SEARCH):
            (run_dir / name).unlink(missing_ok=True)
    (run_dir / CONFIG).write_text(cfg.model_dump_json(indent=2) + "\n")
    env = environment()
    phases = PhaseTracker()
    rapl_start = read_rapl_uj()
    with httpx.Client(base_url=root, timeout=60.0) as sync_client:
        env["device_emulation"] = profile_applied or None
        (run_dir / "environment.json").write_text(json.dumps(env, indent=2) + "\n")
        card = _model_card(sync_client, cfg)
        (run_dir / "model.json").write_text(
            json.dumps(model_description(card, cfg.model), indent=2) + "\n"
        )
        tokenizer = _tokenizer(sync_client, cfg, card) if cfg.workload == "synthetic" else None
        workload = get_workload(cfg.workload)
        sessions = workload.sessions(cfg.workload_options, tokenizer)
        warmups = workload.warmup(cfg.workload_options, tokenizer, cfg.warmup)
        todo = [s for s in sessions if s.id not in done]
        planned = sum(s.n_requests for s in todo)
        if cfg.max_requests is not None and cfg.load not in ("sweep", "search"):
            planned = min(planned, cfg.max_requests)
        hooks.planned(planned)
        probe = pid_probe(pid) if pid is not None else metrics_probe(f"{root}/metrics", sync_client)
        source = f"pid:{pid}" if pid is not None else f"{root}/metrics"
        sampler = ResourceSampler(probe, source, phases, cfg.sample_interval_s).start()
        try:
            asyncio.run(_drive(cfg, root, run_dir, phases, hooks, warmups, todo))
        finally:
            samples = sampler.stop()
            with (run_dir / SAMPLES).open("a", encoding="utf-8") as out:
                out.writelines(s.model_dump_json() + "\n" for s in samples)
    return finalize(run_dir, cfg, rapl_start=rapl_start, accuracy=accuracy)


async def _drive(
    cfg: BenchConfig,
    root: str,
    run_dir: Path,
    phases: PhaseTracker,
    hooks: Hooks,
    warmups: list[Session],
    todo: list[Session],
) -> None:
    timeout = httpx.Timeout(connect=10.0, read=cfg.timeout_s, write=30.0, pool=cfg.timeout_s)
    limits = httpx.Limits(max_connections=max(cfg.concurrency, 1) * 2 + 8)
    async with httpx.AsyncClient(base_url=root, timeout=timeout, limits=limits) as client:
        first_id = len(load_records(run_dir / RECORDS))
        replay = _Replay(cfg, client, run_dir, phases, hooks, first_id)
        await replay.warmup(warmups)

        def on_search(result: SearchResult) -> None:
            (run_dir / SEARCH).write_text(result.model_dump_json(indent=2) + "\n")

        settings = LoadSettings(
            concurrency=cfg.concurrency,
            rate=cfg.rate,
            sweep_points=cfg.sweep_points,
            seed=cfg.seed,
            max_requests=cfg.max_requests,
            max_duration_s=cfg.max_duration_s,
            search=cfg.search,
            judge=replay.judge,
            on_search=on_search,
        )
        await get_load_profile(cfg.load).run(todo, replay.session, settings)


def finalize(
    run_dir: Path,
    cfg: BenchConfig | None = None,
    *,
    rapl_start: int | None = None,
    accuracy: dict[str, dict[str, float]] | None = None,
) -> RunSummary:
    """(Re)compute summary.json from the raw records and samples of `run_dir`."""
    cfg = cfg or BenchConfig.model_validate_json((run_dir / CONFIG).read_text())
    if cfg.repeat > 1:
        runs = [d for d in repeat_dirs(run_dir, cfg) if (d / CONFIG).exists()]
        parts = [(load_records(d / RECORDS), finalize(d)) for d in runs]
        summary = summarize_repeats(parts, cfg.slo, accuracy)
        (run_dir / SUMMARY).write_text(summary.model_dump_json(indent=2) + "\n")
        return summary
    records = load_records(run_dir / RECORDS)
    samples = sorted(load_samples(run_dir / SAMPLES), key=lambda s: s.t_s)
    energy = None
    if len(samples) > 1:
        rapl_end = read_rapl_uj()
        rapl = (rapl_end - rapl_start) / 1e6 if rapl_end and rapl_start else None
        energy = energy_summary(
            records, samples, get_profile(cfg.power_profile), cfg.cost, rapl
        ).model_dump()
    search_path = run_dir / SEARCH
    search = (
        SearchResult.model_validate_json(search_path.read_text()) if search_path.exists() else None
    )
    summary = summarize(
        records,
        samples,
        accuracy,
        energy,
        slo=cfg.slo,
        search=search,
        sample_interval_s=cfg.sample_interval_s,
    )
    (run_dir / SUMMARY).write_text(summary.model_dump_json(indent=2) + "\n")
    return summary
