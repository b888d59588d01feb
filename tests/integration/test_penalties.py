"""Repetition penalties over HTTP with the openai client against a real SmolLM2 node: OpenAI's
`presence_penalty` / `frequency_penalty` and llama.cpp's `repeat_penalty` change a greedy
answer and make it repeat itself less; neutral values change nothing; out-of-range values
are refused (422, as every value off the schema) naming the field."""

from __future__ import annotations

from collections import Counter
from typing import Any

import openai
import pytest

pytestmark = pytest.mark.integration

# a greedy small model continues a list like this one with the same word, over and over
PROMPT = "apple, apple, apple, apple, apple, apple, apple, apple,"


def _answer(client: openai.OpenAI, **extra: Any) -> tuple[str, list[str]]:
    extra.setdefault("temperature", 0)
    got = client.completions.create(
        model="smollm2-135m-instruct", prompt=PROMPT, max_tokens=32, logprobs=0, **extra
    )
    choice = got.choices[0]
    assert choice.logprobs is not None and choice.logprobs.tokens is not None
    return choice.text, choice.logprobs.tokens


def _most_repeated(tokens: list[str]) -> int:
    return Counter(tokens).most_common(1)[0][1]


def test_neutral_values_change_nothing(smol_client: openai.OpenAI) -> None:
    plain, _ = _answer(smol_client)
    neutral, _ = _answer(
        smol_client,
        presence_penalty=0,
        frequency_penalty=0,
        extra_body={"repeat_penalty": 1.0, "repeat_last_n": 64},
    )
    assert neutral == plain


@pytest.mark.parametrize(
    "penalty",
    [{"frequency_penalty": 2.0}, {"extra_body": {"repeat_penalty": 1.8, "repeat_last_n": -1}}],
    ids=["frequency", "repeat"],
)
def test_a_penalty_makes_the_answer_repeat_less(
    smol_client: openai.OpenAI, penalty: dict[str, Any]
) -> None:
    plain, plain_tokens = _answer(smol_client)
    assert _most_repeated(plain_tokens) >= 8, plain  # the prompt does make it repeat
    penalised, tokens = _answer(smol_client, **penalty)
    assert penalised != plain
    assert _most_repeated(tokens) < _most_repeated(plain_tokens), (plain, penalised)


@pytest.mark.parametrize(("presence", "frequency"), [(2.0, 0.0), (0.5, 1.5)])
def test_each_greedy_choice_is_the_best_penalised_alternative(
    smol_client: openai.OpenAI, presence: float, frequency: float
) -> None:
    """The log-probs reported are the model's own, so every step can be checked: the token
    chosen has the highest log-prob minus OpenAI's penalty among the top alternatives."""
    got = smol_client.completions.create(
        model="smollm2-135m-instruct",
        prompt="Once upon a time, in a small village by the sea, there lived",
        max_tokens=32,
        temperature=0,
        logprobs=5,
        presence_penalty=presence,
        frequency_penalty=frequency,
    )
    lp = got.choices[0].logprobs
    assert lp is not None and lp.tokens is not None and lp.top_logprobs is not None
    seen: Counter[str] = Counter()
    penalised_steps = 0
    for token, top in zip(lp.tokens, lp.top_logprobs, strict=True):
        scores = {
            t: v - (frequency * seen[t] + presence if seen[t] else 0.0) for t, v in top.items()
        }
        assert token in top
        assert scores[token] >= max(scores.values()) - 1e-3, (token, scores)
        if max(top, key=lambda t: top[t]) != token:
            penalised_steps += 1  # the model's own favourite lost to the penalty
        seen[token] += 1
    assert penalised_steps > 0  # the penalty did decide some steps


def test_penalised_sampling_is_seeded(smol_client: openai.OpenAI) -> None:
    def sampled(seed: int) -> str:
        text, _ = _answer(smol_client, temperature=0.9, seed=seed, frequency_penalty=1.0)
        return text

    assert sampled(7) == sampled(7)
    assert len({sampled(7), sampled(8), sampled(9)}) > 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("presence_penalty", 2.5),
        ("frequency_penalty", -3),
        ("repeat_penalty", 0),
        ("repeat_penalty", 5e-324),  # a float32 0: it made the logits NaN (found by fuzzing)
        ("repeat_last_n", -2),
    ],
)
def test_out_of_range_is_refused_naming_the_field(
    smol_client: openai.OpenAI, field: str, value: float
) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as err:
        smol_client.chat.completions.create(
            model="smollm2-135m-instruct",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=4,
            extra_body={field: value},
        )
    assert field in str(err.value)
