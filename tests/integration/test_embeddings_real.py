"""Embeddings against a real vLLM (CPU build) serving all-MiniLM-L6-v2.

Every vector is checked against a reference computed here with transformers from the same weights
(mean pooling over the attention mask, then L2 normalisation: what sentence-transformers does for
this model). transformers and torch live only in the server's venv, so the reference runs there as
a subprocess that prints the vectors as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import vllm_env  # scripts/vllm_env.py, loaded by this folder's conftest
from nbclient import NotebookClient

from vllm_magic import embed, errors

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-4

REFERENCE = r"""
import json, sys
import torch
from transformers import AutoModel, AutoTokenizer

model_dir, texts = sys.argv[1], json.load(sys.stdin)
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = AutoModel.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
with torch.no_grad():
    hidden = model(**batch).last_hidden_state
mask = batch["attention_mask"].unsqueeze(-1).float()
pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
json.dump(torch.nn.functional.normalize(pooled, p=2, dim=1).tolist(), sys.stdout)
"""

WORDS = ("cat", "market", "rain", "python", "music", "bread", "river", "engine")
TEXTS = [f"Sentence {i} is about the {WORDS[i % len(WORDS)]} and the number {i * 7}." for i in range(40)]


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    """transformers' vectors for TEXTS, from the same weights vLLM serves."""
    python, model_dir = vllm_env.ensure_env(), vllm_env.ensure_models()["embed"]
    env = {**os.environ, **vllm_env.OFFLINE_ENV}
    done = subprocess.run([str(python), "-c", REFERENCE, str(model_dir)], input=json.dumps(TEXTS),
                          capture_output=True, text=True, env=env, timeout=600, check=True)
    return dict(zip(TEXTS, np.array(json.loads(done.stdout), dtype=np.float32)))


def connect(server) -> dict[str, str]:
    return {"base_url": server.base_url, "api_key": server.api_key}


def test_vectors_match_transformers_in_order_with_concurrency_and_duplicates(vllm_embed, expected) -> None:
    order = np.random.default_rng(3).integers(0, len(TEXTS), 150)
    texts = pd.Series([TEXTS[i] for i in order], index=[f"r{i}" for i in range(len(order))])
    emb = embed(texts, batch_size=8, concurrency=4, progress=False, **connect(vllm_embed))
    assert emb.shape == (150, 384) and emb.index.equals(texts.index)
    assert set(emb.dtypes) == {np.dtype("float32")}
    want = np.stack([expected[text] for text in texts])
    assert np.abs(emb.to_numpy() - want).max() < TOLERANCE
    assert np.allclose(np.linalg.norm(emb.to_numpy(), axis=1), 1.0, atol=1e-5)


def test_one_text_and_the_array_form(vllm_embed, expected) -> None:
    vector = embed(TEXTS[5], as_="array", **connect(vllm_embed))
    assert vector.shape == (1, 384) and np.abs(vector[0] - expected[TEXTS[5]]).max() < TOLERANCE


def test_an_input_over_the_limit_fails_with_vllms_words_and_truncate_fixes_it(vllm_embed) -> None:
    texts = ["short", "word " * 400]
    with pytest.raises(errors.ContextLengthError) as info:
        embed(texts, **connect(vllm_embed))
    message = str(info.value)
    assert "This model's maximum context length is 256 tokens" in message and "--truncate" in message
    emb = embed(texts, truncate=True, **connect(vllm_embed))
    assert emb.shape == (2, 384) and not np.isnan(emb.to_numpy()).any()


def test_unsupported_dimensions_show_vllms_message(vllm_embed) -> None:
    with pytest.raises(errors.BadRequestError, match="does not support Matryoshka embeddings"):
        embed(["hi"], dimensions=64, **connect(vllm_embed))


def test_a_chat_server_has_no_embeddings(vllm_chat) -> None:
    with pytest.raises(errors.NotFoundError, match=r"has no embeddings endpoint \(HTTP 404, Not Found\)"):
        embed(["hi"], **connect(vllm_chat))


def test_a_wrong_key_is_refused_and_never_shown(vllm_embed) -> None:
    with pytest.raises(errors.AuthError) as info:
        embed(["hi"], base_url=vllm_embed.base_url, api_key="not-the-key")
    assert "HTTP 401" in str(info.value) and "not-the-key" not in str(info.value)


def test_the_embeddings_notebook_finds_the_right_neighbours(vllm_embed) -> None:
    notebook = nbformat.read(ROOT / "notebooks" / "embeddings.ipynb", as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(
        'print(others.idxmax(axis=1)[["cat", "stocks", "rain"]].tolist(), '
        'X.dtype, df.assign(score=X @ (q / np.linalg.norm(q))).score.idxmax())'
    ))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "OPENAI_"))}
    env.update(VLLM_BASE_URL=vllm_embed.base_url, VLLM_API_KEY=vllm_embed.api_key)
    NotebookClient(notebook, kernel_name="python3", timeout=120,
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute(env=env)
    printed = "".join(o.text for o in notebook.cells[-1].outputs if o.output_type == "stream")  # may come in parts
    assert printed.strip() == "['kitten', 'bonds', 'sunny'] float32 kitten"
    assert vllm_embed.api_key not in nbformat.writes(notebook)
