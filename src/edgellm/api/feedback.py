"""`POST /v1/feedback` (EdgeLLM extension): the outcome of an answer a cascade judged, for its
online threshold to learn from; and the thresholds' state for `/v1/router`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from edgellm.api import openapi
from edgellm.errors import EdgeLLMError
from edgellm.gateway.thresholds import OnlineThreshold

if TYPE_CHECKING:
    from edgellm.gateway.router import Router

ANSWER_ID = r"^(chatcmpl|cmpl)-[0-9a-f]{32}$"


class AnswerNotFoundError(EdgeLLMError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "answer_not_found"
    param = "id"


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ANSWER_ID, description="the `id` of a chat or text completion")
    correct: StrictBool | None = Field(None, description="whether the answer was right")
    score: float | None = Field(
        None, ge=0, le=1, allow_inf_nan=False, description="or how good it was, from 0 to 1"
    )

    @model_validator(mode="after")
    def _one_outcome(self) -> FeedbackRequest:
        if (self.correct is None) == (self.score is None):
            raise ValueError("give exactly one of `correct` and `score`")
        return self

    @property
    def outcome(self) -> float:
        if self.score is not None:
            return self.score
        return 1.0 if self.correct else 0.0


class FeedbackResponse(BaseModel):
    object: Literal["feedback"] = "feedback"
    id: str
    policy: str = Field(description="the cascade that judged the answer")
    score: float = Field(description="the confidence score of the first tier's answer")
    threshold: float = Field(description="the threshold it was compared with")
    escalated: bool = Field(description="whether the cascade escalated it")
    first_tier_served: bool = Field(
        description="whether the first tier's answer was the one served (not escalated, or "
        "served degraded when no higher tier answered): the outcome is about that tier"
    )
    outcome: float
    threshold_now: float = Field(description="the policy's threshold after learning")


NOT_FOUND = (
    "No answer with this id is waiting for feedback: unknown, expired, already rated, or not "
    "judged by a cascade with an online threshold"
)


def online_thresholds(router: Router) -> dict[str, OnlineThreshold]:
    """The policies with an online threshold, by name."""
    found = {}
    for name, policy in router.policies.items():
        online = getattr(policy, "online", None)
        if isinstance(online, OnlineThreshold):
            found[name] = online
    return found


def thresholds_state(router: Router) -> dict[str, dict[str, Any]]:
    return {name: t.describe() for name, t in online_thresholds(router).items()}


def save_thresholds(router: Router) -> None:
    for threshold in online_thresholds(router).values():
        threshold.save()


def feedback_routes(router: Router) -> APIRouter:
    routes = APIRouter()
    responses = openapi.errors((400, 401, 404, 413, 422, 429))
    responses[404] = responses[404] | {"description": NOT_FOUND}

    @routes.post("/v1/feedback", response_model=FeedbackResponse, responses=responses)
    async def feedback(body: FeedbackRequest) -> FeedbackResponse:
        """EdgeLLM extension: rate an answer (`correct` or a `score` in [0, 1]) by its `id`;
        a cascade with an online threshold learns from it. Each answer takes one rating, within
        the policy's `answer_ttl_s` of being given."""
        for name, online in online_thresholds(router).items():
            rated = online.rate(body.id, body.outcome)
            if rated is not None:
                return FeedbackResponse(
                    id=body.id,
                    policy=name,
                    score=rated.score,
                    threshold=rated.threshold,
                    escalated=rated.escalated,
                    first_tier_served=rated.kept,
                    outcome=rated.outcome,
                    threshold_now=rated.threshold_now,
                )
        raise AnswerNotFoundError(NOT_FOUND)

    return routes
