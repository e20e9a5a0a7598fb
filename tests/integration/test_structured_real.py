"""Structured answers from the real vLLM: guided decoding makes even the random-weight model comply,
which proves each constraint reached the server in a field it honours."""

from __future__ import annotations

import enum
import re

import pydantic

from vllm_magic import Chat


class Verdict(enum.Enum):
    YES = "yes"
    NO = "no"


class Rating(pydantic.BaseModel):
    """Bounded fields only: the random model never closes a free-text JSON string."""

    verdict: Verdict
    stars: int = pydantic.Field(ge=1, le=5)
    recommended: bool


def random_chat(server) -> Chat:
    return Chat(server.base_url, api_key=server.api_key, temperature=1.0)


def test_choice_and_regex_hold_on_every_answer(vllm_random) -> None:
    chat = random_chat(vllm_random)
    choices = {chat.ask("Pick one", choice="red|green|blue", record=False, seed=i, max_tokens=8).value
               for i in range(20)}
    assert choices <= {"red", "green", "blue"} and len(choices) >= 2, "valid, and really sampled"
    codes = [chat.ask("A code", regex=r"[A-Z]{2}-[0-9]{3}", record=False, seed=i, max_tokens=12).value
             for i in range(20)]
    assert all(re.fullmatch(r"[A-Z]{2}-[0-9]{3}", code) for code in codes) and len(set(codes)) > 1


def test_a_pydantic_schema_gives_validated_instances(vllm_random) -> None:
    chat = random_chat(vllm_random)
    ratings = [chat.ask("Rate it", schema=Rating, record=False, seed=i, max_tokens=450).value for i in range(8)]
    assert all(isinstance(r, Rating) and 1 <= r.stars <= 5 for r in ratings)


def test_without_the_constraint_the_random_model_does_not_comply(vllm_random) -> None:
    """The control: the same prompts unconstrained are not valid, so the constraint did the work."""
    chat = random_chat(vllm_random)
    texts = [chat.ask("Pick one", record=False, seed=i, max_tokens=8).text for i in range(5)]
    assert not all(t in {"red", "green", "blue"} for t in texts)
