"""Logprobs and several samples from the real vLLM (random-weight model: sampling really varies)."""

from __future__ import annotations

from vllm_magic import Chat


def test_logprobs_cover_every_token_of_the_answer(vllm_random) -> None:
    chat = Chat(vllm_random.base_url, api_key=vllm_random.api_key, temperature=1.0)
    turn = chat.ask("Tell me something.", logprobs=True, top_logprobs=3, max_tokens=8)
    table = turn.logprobs
    assert len(table) == turn.completion_tokens == 8 and "".join(table.token) == turn.text
    assert table.probability.between(0, 1).all() and all(len(alts) == 3 for alts in table.alternatives)


def test_samples_differ_and_a_seed_gives_them_again(vllm_random) -> None:
    chat = Chat(vllm_random.base_url, api_key=vllm_random.api_key, temperature=1.0)
    turn = chat.ask("Tell me something.", n=3, seed=11, max_tokens=8)
    assert len(turn.samples) == 3 and len(set(turn.samples)) == 3 and turn.text == turn.samples[0]
    again = chat.stream("Tell me something.", n=3, seed=11, max_tokens=8, record=False)
    again.text()
    assert again.turn.samples == turn.samples
    turn.pick(1)
    assert chat.history[-1].text == turn.samples[1]
