"""`edgellm chat`: a streaming terminal chat against any OpenAI-compatible server."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import typer
from rich.console import Console

from edgellm.engine.types import TextDelta
from edgellm.wire import decode

console = Console(highlight=False)


@dataclass
class TurnStats:
    ttft_s: float = 0.0
    elapsed_s: float = 0.0
    chunks: int = 0
    completion_tokens: int | None = None
    server_decode_tps: float | None = None

    def summary(self) -> str:
        tokens = self.completion_tokens if self.completion_tokens is not None else self.chunks
        decode_s = self.elapsed_s - self.ttft_s
        rate = (tokens - 1) / decode_s if tokens > 1 and decode_s > 0 else 0.0
        parts = [f"{tokens} tokens", f"TTFT {self.ttft_s * 1e3:.0f} ms", f"{rate:.1f} tok/s"]
        if self.server_decode_tps:
            parts.append(f"server decode {self.server_decode_tps:.1f} tok/s")
        return " · ".join(parts)


@dataclass
class ChatSession:
    client: httpx.Client
    model: str
    temperature: float
    max_tokens: int
    messages: list[dict[str, str]] = field(default_factory=list)

    def stream_reply(self, stats: TurnStats) -> Iterator[str]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        started = time.perf_counter()
        reader = decode.StreamReader(strict=True)
        with self.client.stream("POST", "/chat/completions", json=body) as response:
            if response.status_code != 200:
                raise ChatError(_error_message(response))
            for line in response.iter_lines():
                for delta in reader.line(line):
                    if isinstance(delta, TextDelta) and delta.text:
                        if stats.chunks == 0:
                            stats.ttft_s = time.perf_counter() - started
                        stats.chunks += 1
                        yield delta.text
                if reader.error is not None:
                    raise ChatError(reader.error)
                if reader.ended:
                    break
        if reader.usage:
            stats.completion_tokens = reader.usage.get("completion_tokens")
        if reader.timings.get("predicted_per_second"):
            stats.server_decode_tps = float(reader.timings["predicted_per_second"])
        stats.elapsed_s = time.perf_counter() - started


class ChatError(Exception):
    pass


def _error_message(response: httpx.Response) -> str:
    return f"{response.status_code}: {decode.error_text(response.read(), limit=200)}"


def _first_model(client: httpx.Client) -> str:
    response = client.get("/models")
    response.raise_for_status()
    data = response.json().get("data", [])
    if not data:
        raise ChatError("the server lists no models")
    return str(data[0]["id"])


def register(app: typer.Typer) -> None:
    @app.command()
    def chat(
        url: str = typer.Option("http://127.0.0.1:8080/v1", help="OpenAI-compatible base URL"),
        model: str | None = typer.Option(None, "--model", "-m", help="default: first listed"),
        system: str | None = typer.Option(None, help="system prompt"),
        temperature: float = typer.Option(0.7),
        max_tokens: int = typer.Option(500),
        api_key: str | None = typer.Option(
            None, envvar="OPENAI_API_KEY", help="sent as a Bearer token if set"
        ),
        once: str | None = typer.Option(None, help="ask one question, print the answer, exit"),
    ) -> None:
        """Chat in the terminal; each answer streams and ends with its speed."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        timeout = httpx.Timeout(
            connect=5.0,
            read=float(os.environ.get("EDGELLM_CHAT_TIMEOUT", 600)),
            write=30.0,
            pool=5.0,
        )
        with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout) as client:
            try:
                session = ChatSession(
                    client, model or _first_model(client), temperature, max_tokens
                )
            except (httpx.HTTPError, ChatError) as exc:
                console.print(f"[red]cannot reach {url}: {exc}[/red]")
                raise typer.Exit(1) from exc
            if system:
                session.messages.append({"role": "system", "content": system})
            if once is not None:
                raise typer.Exit(_turn(session, once))
            console.print(
                f"[bold]EdgeLLM chat[/bold] with [cyan]{session.model}[/cyan] at {url} "
                "(/reset clears the history, /exit or Ctrl-D quits)"
            )
            while True:
                try:
                    prompt = console.input("[bold green]you>[/bold green] ")
                except (EOFError, KeyboardInterrupt):
                    console.print()
                    return
                if prompt.strip() in {"/exit", "/quit"}:
                    return
                if prompt.strip() == "/reset":
                    del session.messages[int(bool(system)) :]
                    continue
                if prompt.strip():
                    _turn(session, prompt)


def _turn(session: ChatSession, prompt: str) -> int:
    session.messages.append({"role": "user", "content": prompt})
    stats = TurnStats()
    reply: list[str] = []
    try:
        for text in session.stream_reply(stats):
            reply.append(text)
            sys.stdout.write(text)
            sys.stdout.flush()
    except (httpx.HTTPError, ChatError) as exc:
        session.messages.pop()
        console.print(f"\n[red]error: {exc}[/red]")
        return 1
    except KeyboardInterrupt:
        console.print("\n[yellow](interrupted)[/yellow]")
    session.messages.append({"role": "assistant", "content": "".join(reply)})
    console.print(f"\n[dim]{stats.summary()}[/dim]")
    return 0
