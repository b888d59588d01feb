"""Grammar-constrained generation in the engine, with the real bundled models: every text that
ends by its grammar parses and validates against its schema; bad grammars are refused before
they reach llama.cpp; each slot follows its own grammar; a grammar no token can continue fails
its request alone."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import BaseModel, Field, ValidationError

from edgellm.config import EngineConfig
from edgellm.engine.engine import Engine
from edgellm.engine.llama import GrammarError
from edgellm.engine.structured import schema_grammar
from edgellm.engine.types import (
    Failed,
    Finished,
    FinishReason,
    GenerationRequest,
    SamplingParams,
    TextDelta,
)
from edgellm.errors import InvalidRequestError

# Bounded strings and lists: a small model left free can fill 160 tokens with one list or one
# string, and the grammar then ends nothing; with bounds the grammar itself closes the text
# within the budget (maxLength and maxItems are enforced).
Name = Annotated[str, Field(max_length=24)]


class Reading(BaseModel):
    sensor: Name
    celsius: float
    ok: bool


class Inventory(BaseModel):
    site: Name
    items: list[Name] = Field(max_length=3)
    count: int | None = None


SCHEMAS: list[type[BaseModel]] = [Reading, Inventory]


@pytest.fixture(scope="module", params=["smollm2", "gemma"])
def engine(
    request: pytest.FixtureRequest, smollm2_path: Path, gemma_path: Path
) -> Iterator[Engine]:
    path = smollm2_path if request.param == "smollm2" else gemma_path
    eng = Engine.load(request.param, path, EngineConfig(n_ctx=1024, n_threads=1, parallel=2))
    yield eng
    eng.close()


def _prompt(engine: Engine, text: str) -> list[int]:
    if engine.name == "smollm2":
        return engine.chat_prompt([{"role": "user", "content": text}])
    return engine.text_prompt(text + "\n")


async def _generate(engine: Engine, request: GenerationRequest) -> tuple[str, Finished]:
    text = ""
    async for event in engine.submit(request):
        if isinstance(event, TextDelta):
            text += event.text
        elif isinstance(event, Finished):
            return text, event
        elif isinstance(event, Failed):
            raise event.error
    raise AssertionError("no final event")


def _request(
    engine: Engine, text: str, grammar: str | None, seed: int, max_tokens: int = 160
) -> GenerationRequest:
    temperature = 0.0 if seed == 0 else 0.8
    return GenerationRequest(
        prompt_tokens=_prompt(engine, text),
        max_tokens=max_tokens,
        sampling=SamplingParams(temperature=temperature, seed=seed, grammar=grammar),
    )


def test_texts_ended_by_the_grammar_validate_against_the_schema(engine: Engine) -> None:
    for model in SCHEMAS:
        grammar = schema_grammar(model.model_json_schema(), param="response_format")
        question = f"Give one {model.__name__.lower()} as JSON."
        ended = 0
        for seed in range(4):  # greedy, then three seeds
            text, done = asyncio.run(_generate(engine, _request(engine, question, grammar, seed)))
            if done.reason is FinishReason.STOP:
                ended += 1
                model.model_validate_json(text)  # raises if the text is off the schema
            else:
                assert done.reason is FinishReason.LENGTH
        assert ended >= 2, f"{model.__name__}: only {ended} of 4 generations ended by the grammar"


@pytest.mark.parametrize("char", ["\n", "\t"])
def test_a_string_never_holds_a_raw_control_character(engine: Engine, char: str) -> None:
    """JSON forbids raw control characters inside strings: a model pushed hard toward one
    (a logit bias on its token) writes something else there, and the text still parses."""
    (token,) = engine.tokenize(char)
    schema = {"type": "object", "properties": {"note": {"type": "string"}}, "required": ["note"]}
    grammar = schema_grammar(schema, param="response_format")
    request = _request(engine, "Write a note of two lines as JSON.", grammar, seed=0)
    request = replace(request, sampling=replace(request.sampling, logit_bias=((token, 30.0),)))
    text, done = asyncio.run(_generate(engine, request))
    assert char not in text  # the grammar's only whitespace between tokens is a space
    if done.reason is FinishReason.STOP:
        assert isinstance(json.loads(text)["note"], str)
    # negative: the same bias without the grammar does write the character
    free = _request(engine, "Write a note of two lines as JSON.", None, seed=0, max_tokens=8)
    free = replace(free, sampling=replace(free.sampling, logit_bias=((token, 30.0),)))
    assert char in asyncio.run(_generate(engine, free))[0]


def test_without_the_grammar_the_same_requests_are_not_json(engine: Engine) -> None:
    invalid = 0
    for model in SCHEMAS:
        question = f"Give one {model.__name__.lower()} as JSON."
        for seed in range(2):
            request = _request(engine, question, None, seed, max_tokens=64)
            text, _ = asyncio.run(_generate(engine, request))
            try:
                model.model_validate_json(text)
            except ValidationError:
                invalid += 1
    assert invalid >= 3  # the grammar, not the model, makes the answers valid


def test_each_slot_follows_its_own_grammar(engine: Engine) -> None:
    digits, words = 'root ::= [0-9]{3} "."', 'root ::= ("yes" | "no") "."'

    async def both() -> list[str]:
        runs = [
            _generate(engine, _request(engine, "Answer.", g, seed))
            for seed in (1, 2)
            for g in (digits, words)
        ]
        return [text for text, _ in await asyncio.gather(*runs)]

    texts = asyncio.run(both())
    assert all(re.fullmatch(r"[0-9]{3}\.", t) for t in texts[0::2]), texts
    assert all(t in ("yes.", "no.") for t in texts[1::2]), texts


@pytest.mark.parametrize(
    ("grammar", "reason"),
    [
        ("root ::= missing", "failed to parse"),
        ('item ::= "a"', "root"),
        ('root ::= root "a"', "left recursion"),
        ("root ::= [a-", "failed to parse"),
        ("", "empty"),
        ('root ::= "a"' + " " * 70_000, "characters"),
    ],
)
def test_bad_grammars_are_refused_before_the_queue(
    engine: Engine, grammar: str, reason: str
) -> None:
    with pytest.raises(InvalidRequestError) as err:
        asyncio.run(_generate(engine, _request(engine, "x", grammar, 1)))
    assert err.value.param == "grammar"
    assert reason in str(err.value)
    if reason in ("failed to parse", "root", "left recursion"):
        assert isinstance(err.value, GrammarError)
    # the engine goes on serving
    text, done = asyncio.run(_generate(engine, _request(engine, "x", 'root ::= "ok"', 1)))
    assert (text, done.reason) == ("ok", FinishReason.STOP)


def test_a_grammar_no_token_can_continue_fails_only_its_request(engine: Engine) -> None:
    # llama.cpp matches a token's text up to its first NUL byte: no token can produce one
    dead = 'root ::= "a" "\\x00"'

    async def run() -> tuple[BaseException | None, str]:
        failing = _generate(engine, _request(engine, "x", dead, 1))
        healthy = _generate(engine, _request(engine, "x", 'root ::= "fine"', 2))
        results = await asyncio.gather(failing, healthy, return_exceptions=True)
        first, second = results
        assert not isinstance(second, BaseException)
        return (first if isinstance(first, BaseException) else None), second[0]

    error, text = asyncio.run(run())
    assert error is not None and getattr(error, "param", None) == "grammar"
    assert text == "fine"


def test_grammar_and_ignore_eos_are_refused_together(engine: Engine) -> None:
    request = GenerationRequest(
        prompt_tokens=_prompt(engine, "x"),
        max_tokens=4,
        ignore_eos=True,
        sampling=SamplingParams(temperature=0.0, grammar='root ::= "a"'),
    )
    with pytest.raises(InvalidRequestError) as err:
        asyncio.run(_generate(engine, request))
    assert err.value.param == "ignore_eos"
