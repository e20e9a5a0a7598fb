"""One prompt over many rows against a real vLLM (CPU build) serving the random-weight tiny model.

Guided decoding makes even a random model's every answer hold to its constraint, so 100% valid
values over 200 rows prove the constraint reached the server in a field it honours; the control
(no constraint) shows the model alone would not comply. Token counts are the server's own.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Literal

import nbformat
import pandas as pd
import pydantic
from nbclient import NotebookClient

from vllm_magic import Chat, ask_each

ROOT = Path(__file__).resolve().parents[2]
ROWS = pd.DataFrame({"text": [f"Note {i}: the order {i * 7} arrived late." for i in range(200)]},
                    index=pd.Index([f"n{i}" for i in range(200)], name="note"))


class Review(pydantic.BaseModel):
    """Bounded fields only: the random model never closes a free-text JSON string."""

    verdict: Literal["yes", "no"]
    stars: int = pydantic.Field(ge=1, le=5)
    recommended: bool


def random_chat(server) -> Chat:
    return Chat(server.base_url, api_key=server.api_key, temperature=1.0)


def test_a_choice_holds_on_every_row_with_real_token_counts(vllm_random) -> None:
    table = ask_each(ROWS, "Label: {text}", chat=random_chat(vllm_random), choice="red|green|blue", max_tokens=8,
                     progress=False)
    assert table.error.isna().all() and table.index.equals(ROWS.index)
    assert table.answer.cat.categories.tolist() == ["red", "green", "blue"] and table.answer.notna().all()
    assert table.answer.nunique() >= 2, "really sampled, not one constant"
    assert (table.prompt_tokens > 5).all() and (table.completion_tokens >= 1).all()
    assert set(table.finish_reason) == {"stop"}


def test_a_regex_and_a_bounded_schema_hold_on_every_row(vllm_random) -> None:
    chat = random_chat(vllm_random)
    codes = ask_each(ROWS, "Code: {text}", chat=chat, regex=r"[A-Z]{2}-[0-9]{3}", max_tokens=12, progress=False)
    assert codes.error.isna().all() and codes.answer.map(lambda c: bool(re.fullmatch(r"[A-Z]{2}-[0-9]{3}", c))).all()
    reviews = ask_each(ROWS, "Review: {text}", chat=chat, schema=Review, max_tokens=400, progress=False)
    assert reviews.error.isna().all(), reviews.error.dropna().head()
    assert reviews.dtypes[["verdict", "stars", "recommended"]].astype(str).tolist() == ["category", "Int64", "boolean"]
    assert reviews.stars.between(1, 5).all() and set(reviews.verdict) <= {"yes", "no"}


def test_json_reaches_the_server_and_nothing_cut_passes_as_valid(vllm_random) -> None:
    """Any JSON object: the random model writes keys that are free-text strings, which it rarely closes
    (REAL_VLLM.md), so some answers end on max_tokens. Every answer that finished is a JSON object
    (the constraint reached the server); every cut one is an error, never a value."""
    table = ask_each(ROWS, "JSON for: {text}", chat=random_chat(vllm_random), json=True, max_tokens=200,
                     progress=False)
    finished = table.finish_reason == "stop"
    assert finished.sum() >= 20, table.finish_reason.value_counts()
    objects = table.answer[finished].map(lambda text: isinstance(json.loads(text), dict))
    assert table.error[finished].isna().all() and objects.all()
    cut = table.finish_reason == "length"
    assert (finished | cut).all() and table.error[cut].str.contains("cut by max_tokens").all()
    assert table.answer[cut].isna().all()


def test_without_a_constraint_the_random_model_does_not_comply(vllm_random) -> None:
    table = ask_each(ROWS.head(20), "Label: {text}", chat=random_chat(vllm_random), max_tokens=8, progress=False)
    assert table.error.isna().all() and not table.answer.isin(["red", "green", "blue"]).all()
    cut = table.finish_reason == "length"
    assert cut.sum() >= 10 and (table.finish_reason[~cut] == "stop").all(), "sampling may draw EOS now and then"
    assert (table.completion_tokens[cut] == 8).all() and (table.completion_tokens <= 8).all()


def test_the_extract_notebook_runs_on_the_real_server(vllm_random) -> None:
    notebook = nbformat.read(ROOT / "notebooks" / "extract.ipynb", as_version=4)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "OPENAI_"))}
    env.update(VLLM_BASE_URL=vllm_random.base_url, VLLM_API_KEY=vllm_random.api_key)
    NotebookClient(notebook, kernel_name="python3", timeout=300,
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute(env=env)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert printed.count("0 of 8 rows failed") == 2, printed
    assert "linear-gradient" in "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert vllm_random.api_key not in nbformat.writes(notebook)
