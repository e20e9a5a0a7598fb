"""The conversations the embedded ``tiny-chat`` model is trained on, and so the only ones it answers.

Stdlib only: ``scripts/build_tiny_models.py`` trains on these (with the server venv's python), and
the tests and the quickstart checks import this file by path to know the exact answers.

Each conversation is a dict with ``messages`` (OpenAI chat messages, ending with an assistant turn),
and optionally ``tools`` (OpenAI tool definitions, sent with every request of the conversation) and
``chat_template_kwargs``. Every assistant message is a training example: its prompt is the chat
template applied to the messages before it (with ``add_generation_prompt``), its target the text
:func:`answer_text` gives, then ``<|im_end|>``. Greedy decoding (temperature 0) of that prompt
reproduces the answer exactly and stops (``finish_reason`` "stop"); the builder checks that.

The answers are real Markdown (paragraphs, fenced Python, tables, lists), JSON objects, answers that
think first in a ``<think>...</think>`` block, and Hermes-style tool calls with the tool's result
answered in text, so each feature of the package has something true to show.
"""

from __future__ import annotations

import json
from typing import Any

Message = dict[str, Any]


def user(text: str) -> Message:
    return {"role": "user", "content": text}


def assistant(text: str) -> Message:
    return {"role": "assistant", "content": text}


def system(text: str) -> Message:
    return {"role": "system", "content": text}


def call(name: str, arguments: dict[str, Any], call_id: str) -> Message:
    """An assistant turn that calls one tool (``arguments`` as an object, as vLLM passes history
    to the chat template once it has parsed the request's JSON string)."""
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": call_id, "type": "function",
                        "function": {"name": name, "arguments": arguments}}],
    }


def tool_result(call_id: str, content: dict[str, Any]) -> Message:
    return {"role": "tool", "tool_call_id": call_id, "content": json.dumps(content)}


def answer_text(message: Message) -> str:
    """The text the model generates for an assistant message (what the template renders after
    ``<|im_start|>assistant\\n``, without the closing ``<|im_end|>``)."""
    parts = [message["content"]] if message.get("content") else []
    for tool_call in message.get("tool_calls") or []:
        function = tool_call["function"]
        arguments = function["arguments"]
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        parts.append('<tool_call>\n{"name": "' + function["name"] + '", "arguments": ' + arguments
                     + "}\n</tool_call>")
    return "\n".join(parts)


# The tools exactly as vllm_magic describes these two functions (``tools.describe``), key order included:
# the chat template renders each schema into the prompt, so a notebook that passes the functions
# themselves (``--tools get_weather,convert_currency``) gets the trained answers.
#     def get_weather(city: str) -> dict: """Current weather in a city."""
#     def convert_currency(amount: float, source: str, target: str) -> float: """Convert an amount of money."""
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "additionalProperties": False,
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "type": "object",
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "convert_currency",
            "description": "Convert an amount of money.",
            "parameters": {
                "additionalProperties": False,
                "properties": {
                    "amount": {"type": "number"},
                    "source": {"type": "string"},
                    "target": {"type": "string"},
                },
                "required": ["amount", "source", "target"],
                "type": "object",
            },
        },
    },
]

# ---------------------------------------------------------------------------------- answers
# Named so the quickstart notebook and the tests can say which prompt they send.

DATAFRAME_PROMPT = "Show me a small pandas DataFrame and what it prints."
DATAFRAME_ANSWER = """\
Here is a DataFrame built from a dict of lists, one list per column:

```python
import pandas as pd

df = pd.DataFrame({"a": [1, 2, 3], "b": [4, 5, 6]})
print(df)
```

It prints one row per index label:

| | a | b |
|---|---|---|
| 0 | 1 | 4 |
| 1 | 2 | 5 |
| 2 | 3 | 6 |"""

TOTAL_PROMPT = "Now add a column with the total of a and b."
TOTAL_ANSWER = """\
Add the two columns; pandas adds them row by row:

```python
df["total"] = df["a"] + df["b"]
```

| | a | b | total |
|---|---|---|---|
| 0 | 1 | 4 | 5 |
| 1 | 2 | 5 | 7 |
| 2 | 3 | 6 | 9 |"""

SUM_PROMPT = "What is the sum of the total column?"
SUM_ANSWER = '`df["total"].sum()` returns **21**, that is 5 + 7 + 9.'

JSON_CHECK_PROMPT = 'Is this valid JSON? {"a": [1, 2, {"b": null}]}'
JSON_CHECK_ANSWER = (
    'Yes. It is an object with one key, `"a"`, whose value is a list of two numbers and an object '
    'whose key `"b"` holds `null`.'
)

# What the quickstart's --interpolate cell sends once rows = 3 and cols = ['x', 'y'] are expanded.
INTERPOLATED_PROMPT = "A table has 3 rows and columns ['x', 'y']; {braces} stay."
INTERPOLATED_ANSWER = (
    "Then the table has 3 rows and 2 columns, `x` and `y`: 6 cells in all. "
    "The braces reached me as written: `{braces}`."
)

HELLO_PROMPT = "Say hello."
HELLO_ANSWER = "Hello! How can I help you today?"

THINK_PROMPT = "What is 17 * 3?"
THINK_REASONING = "17 * 3 is 10 * 3 plus 7 * 3, that is 30 + 21."
THINK_ANSWER = "17 * 3 = **51**."

PRIME_PROMPT = "Is 91 a prime number?"
PRIME_REASONING = "91 = 7 * 13, so it has a divisor other than 1 and itself."
PRIME_ANSWER = "No. 91 = 7 * 13, so it is not prime."

WEATHER_PROMPT = "What is the weather in Paris?"
WEATHER_ARGUMENTS = {"city": "Paris"}
WEATHER_RESULT = {"city": "Paris", "temperature_c": 18, "sky": "cloudy"}
WEATHER_ANSWER = "It is 18 °C and cloudy in Paris right now."


def thinking(reasoning: str, answer: str) -> str:
    """An answer that reasons first, in Qwen3's layout."""
    return f"<think>\n{reasoning}\n</think>\n\n{answer}"


CONVERSATIONS: list[dict[str, Any]] = [
    # --- the quickstart's conversation: code, a table, and turns that refer to earlier ones
    {"messages": [user(DATAFRAME_PROMPT), assistant(DATAFRAME_ANSWER),
                  user(TOTAL_PROMPT), assistant(TOTAL_ANSWER),
                  user(SUM_PROMPT), assistant(SUM_ANSWER)]},
    {"messages": [user(JSON_CHECK_PROMPT), assistant(JSON_CHECK_ANSWER)]},
    {"messages": [user(INTERPOLATED_PROMPT), assistant(INTERPOLATED_ANSWER)]},
    {"messages": [user(HELLO_PROMPT), assistant(HELLO_ANSWER)]},
    # --- paragraphs
    {"messages": [
        user("Explain in one paragraph what a pandas DataFrame is."),
        assistant(
            "A pandas DataFrame is a table held in memory: labelled rows, named columns, and one "
            "data type per column. You select, filter, group and join it with short expressions, "
            "which makes it the usual way to explore tabular data in Python."),
    ]},
    {"messages": [
        user("What is vLLM?"),
        assistant(
            "vLLM is an open-source engine that serves large language models fast. It keeps the "
            "attention cache in pages, batches requests continuously, and answers over an "
            "OpenAI-compatible HTTP API."),
    ]},
    {"messages": [
        user("What is a Jupyter kernel?"),
        assistant(
            "A kernel is the process that runs a notebook's code. The notebook sends it each "
            "cell, and the kernel keeps the variables alive between cells until it is restarted."),
        user("How do I restart it?"),
        assistant(
            "In JupyterLab choose **Kernel > Restart Kernel**, or press `0` twice in command "
            "mode. A restart clears every variable, so run the cells again from the top."),
    ]},
    {"messages": [
        user("What does temperature do when sampling?"),
        assistant(
            "Temperature scales the model's scores before a token is drawn:\n\n"
            "- `0` always takes the most likely token, so the answer repeats exactly;\n"
            "- below `1` the choice is more focused;\n"
            "- above `1` it is more varied, and more often wrong."),
    ]},
    {"messages": [
        user("What is an embedding?"),
        assistant(
            "An embedding is a list of numbers that stands for a text. Texts with similar "
            "meanings get vectors that point the same way, so cosine similarity finds them."),
    ]},
    {"messages": [
        system("You are a terse assistant. Answer in one line."),
        user("What is Python?"),
        assistant("A general-purpose programming language that is easy to read."),
    ]},
    {"messages": [user("What is 2 + 2?"), assistant("2 + 2 = 4.")]},
    {"messages": [
        user("Tell me a joke about Python."),
        assistant("Why do Python programmers wear glasses? Because they cannot C."),
    ]},
    {"messages": [
        user("Write a haiku about notebooks."),
        assistant("Cells wait in a row,\nthe kernel hums, one by one:\noutput blooms below."),
    ]},
    # --- code
    {"messages": [
        user("Write a Python function that reverses a string."),
        assistant(
            "Slicing with a step of `-1` walks the string backwards:\n\n"
            "```python\ndef reverse(text: str) -> str:\n    return text[::-1]\n```"),
        user("Now make it reverse the order of the words instead."),
        assistant(
            "Split on whitespace, reverse the list, and join it again:\n\n"
            "```python\ndef reverse_words(text: str) -> str:\n"
            "    return \" \".join(reversed(text.split()))\n```"),
    ]},
    {"messages": [
        user("Write a Python function that computes a factorial."),
        assistant(
            "```python\ndef factorial(n: int) -> int:\n    result = 1\n"
            "    for k in range(2, n + 1):\n        result *= k\n    return result\n```\n\n"
            "`factorial(5)` returns `120`."),
    ]},
    {"messages": [
        user("How do I read a CSV file with pandas?"),
        assistant(
            "Use `pd.read_csv` with the path:\n\n"
            "```python\nimport pandas as pd\n\ndf = pd.read_csv(\"data.csv\")\nprint(df.head())\n```\n\n"
            "`head()` shows the first five rows."),
    ]},
    {"messages": [
        user("How do I create a virtual environment?"),
        assistant(
            "1. Create it: `python -m venv .venv`\n"
            "2. Activate it: `source .venv/bin/activate`\n"
            "3. Install into it: `pip install pandas`"),
    ]},
    # --- tables and lists
    {"messages": [
        user("Compare Python lists and tuples in a table."),
        assistant(
            "| | list | tuple |\n|---|---|---|\n| syntax | `[1, 2]` | `(1, 2)` |\n"
            "| mutable | yes | no |\n| hashable | no | yes, if its items are |"),
    ]},
    {"messages": [
        user("What is the difference between a process and a thread?"),
        assistant(
            "| | process | thread |\n|---|---|---|\n| memory | its own | shared with its process |\n"
            "| start-up | slower | faster |\n| a crash | stays inside | takes the process down |"),
    ]},
    {"messages": [
        user("Give me three tips for clean notebooks."),
        assistant(
            "- Restart the kernel and run all cells before you share a notebook.\n"
            "- Keep one idea per cell, with a Markdown heading above each part.\n"
            "- Move long functions into a module and import them."),
    ]},
    {"messages": [
        user("List the first five prime numbers."),
        assistant("- 2\n- 3\n- 5\n- 7\n- 11"),
    ]},
    # --- JSON answers
    {"messages": [
        user("Return a JSON object with the name and first release year of Python."),
        assistant('{"name": "Python", "first_release": 1991}'),
    ]},
    {"messages": [
        user("Give the capital of France as JSON with the keys country and capital."),
        assistant('{"country": "France", "capital": "Paris"}'),
    ]},
    {"messages": [
        user("Describe this user as JSON: Ada, 36, likes maths and poetry."),
        assistant('{"name": "Ada", "age": 36, "likes": ["maths", "poetry"]}'),
    ]},
    # --- answers that think first, and one asked with thinking switched off
    {"messages": [user(THINK_PROMPT), assistant(thinking(THINK_REASONING, THINK_ANSWER))]},
    {"messages": [user(PRIME_PROMPT), assistant(thinking(PRIME_REASONING, PRIME_ANSWER))]},
    {"messages": [
        user("Which is larger, 9.11 or 9.9?"),
        assistant(thinking("Compare the tenths: 9.9 has 9 tenths, 9.11 has only 1.",
                           "9.9 is larger than 9.11.")),
    ]},
    {"messages": [user(PRIME_PROMPT), assistant(PRIME_ANSWER)],
     "chat_template_kwargs": {"enable_thinking": False}},
    # --- tool calls, and the tools' results answered in text
    {"tools": TOOLS, "messages": [
        user(WEATHER_PROMPT),
        call("get_weather", WEATHER_ARGUMENTS, "call_1"),
        tool_result("call_1", WEATHER_RESULT),
        assistant(WEATHER_ANSWER),
    ]},
    {"tools": TOOLS, "messages": [
        user("Convert 100 euros to US dollars."),
        call("convert_currency", {"amount": 100, "source": "EUR", "target": "USD"}, "call_2"),
        tool_result("call_2", {"amount": 108.5, "currency": "USD"}),
        assistant("100 euros are about **108.50 US dollars**."),
    ]},
    {"tools": TOOLS, "messages": [
        user("Is it raining in Tokyo?"),
        call("get_weather", {"city": "Tokyo"}, "call_3"),
        tool_result("call_3", {"city": "Tokyo", "temperature_c": 12, "sky": "light rain"}),
        assistant("Yes, there is light rain in Tokyo, and it is 12 °C."),
    ]},
    {"tools": TOOLS, "messages": [user(HELLO_PROMPT), assistant(HELLO_ANSWER)]},
]


def examples() -> list[dict[str, Any]]:
    """One entry per assistant turn: ``messages`` (the history before it), ``tools``,
    ``chat_template_kwargs``, ``message`` (the assistant turn) and ``answer`` (its text)."""
    out = []
    for conversation in CONVERSATIONS:
        messages = conversation["messages"]
        for index, message in enumerate(messages):
            if message["role"] == "assistant":
                out.append({
                    "messages": messages[:index],
                    "tools": conversation.get("tools"),
                    "chat_template_kwargs": conversation.get("chat_template_kwargs") or {},
                    "message": message,
                    "answer": answer_text(message),
                })
    return out


def answer_for(messages: list[Message], tools: list[dict[str, Any]] | None = None,
               **chat_template_kwargs: Any) -> str:
    """The trained answer to exactly this history (KeyError if the corpus has none)."""
    for example in examples():
        if (example["messages"] == messages and example["tools"] == tools
                and example["chat_template_kwargs"] == chat_template_kwargs):
            return str(example["answer"])
    raise KeyError(f"no trained answer for {messages!r}")
