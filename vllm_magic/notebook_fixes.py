"""How a notebook user (cells, the panel, the sidebar) is told to fix each hinted error: magic syntax."""

from __future__ import annotations

NOTEBOOK_FIXES: dict[str, str] = {
    "no_url": "Connect with `%vllm connect http://HOST:8000`, or set VLLM_BASE_URL before starting the "
              "kernel, or `%config VLLMMagics.base_url = 'http://HOST:8000'`.",
    "key_env_unset": "Set {name} before starting the kernel, or use `%vllm connect URL --ask-key` to type the key in.",
    "no_conversation": "Existing ones: {existing}; `%%chat -c {name}` starts it.",
    "nothing_to_undo_load": "`%vllm load PATH` replaces a conversation; only then can `--undo` bring the old one back.",
    "unknown_model": "Served models: {served}. Connect with `--model NAME` naming one of them.",
    "max_tokens_over_limit": "Set a smaller default with `%vllm params max_tokens=N` (N at most {limit}), "
                             "or drop it with `%vllm params --unset max_tokens`.",
    "cell_max_tokens_over_limit": "Use a smaller `--max-tokens` on this cell (at most {limit}).",
    "cannot_ask_key": "Set VLLM_API_KEY before starting the kernel, or name another variable with "
                      "`%vllm connect URL --api-key-env NAME`.",
    "choose_model": "Choose one with `%vllm connect URL --model NAME` or `%%chat --model NAME`.",
    "choose_embedding_model": "Choose one with `%vllm embed EXPR --model NAME`, "
                              "`%config VLLMMagics.embedding_model = 'NAME'` or the VLLM_EMBEDDING_MODEL variable.",
    "bad_credentials": "Name a function of an importable module: `%config VLLMMagics.credentials = 'mymodule:get_token'`.",
    "check_path": "Check the path given to `%vllm load`.",
    "raise_max_tokens": "Raise it on the cell (`--max-tokens N`) or for every cell (`%vllm params max_tokens=N`), "
                        "then `%vllm retry`.",
    "constraint_ignored": "Check that the server enforces structured outputs (vLLM does); `%vllm undo` drops the "
                          "failed turn.",
    "one_constraint": "Use one of --json, --schema, --choice, --regex, --grammar.",
    "bad_regex": "Fix the pattern (Python `re` syntax, which vLLM's regex support shares).",
    "bad_choice": "Write `--choice \"pos|neg|neutral\"`, or name a list or Enum from the notebook.",
    "bad_schema": "Name a pydantic model, a dataclass, a TypedDict or a dict holding a JSON Schema, or write "
                  "`--schema \"name str, age int\"`.",
    "bad_inline_schema": "Write fields as `name type` separated by commas: `--schema \"name str, age int, tags list[str]\"`.",
    "empty_url": "Give one: `%vllm connect http://HOST:8000`.",
    "bad_url": "Use the form http://HOST:PORT, e.g. `%vllm connect http://127.0.0.1:8000`.",
    "dns": "Check the spelling of the host in `%vllm connect URL`, or use its IP address.",
    "unreachable": "Is the vLLM server running and reachable from this kernel? Start it with `vllm serve "
                   "MODEL`, or point to the right place with `%vllm connect http://HOST:PORT`.",
    "timeout": "If the server is busy or loading a model, wait and retry, or raise the limit with "
               "`%config VLLMMagics.timeout = 600`.",
    "stream_cut": "The partial answer is kept, marked incomplete; `%vllm retry` asks again. If this repeats, "
                  "check the server's log (it may have restarted or run out of memory).",
    "retry": "`%vllm retry` asks again.",
    "cut_not_recorded": "The partial text is shown above, marked incomplete (nothing was added to the "
                        "conversation); run the cell again. If this repeats, check the server's log.",
    "prompt_too_long": "Shorten the cell's prompt, or use a model with a longer context (`%%vllm complete -m NAME`).",
    "no_completions_endpoint": "Use a `%%chat` cell instead, or connect to a vLLM server (`%vllm connect URL`), "
                               "which serves completions for every text-generation model.",
    "ask_again": "Run the cell again when ready.",
    "embed_input": "Pass one of those, e.g. `%vllm embed df.text`.",
    "no_embeddings_endpoint": "Serve an embedding model (`vllm serve MODEL --runner pooling`) and send "
                              "embeddings to it: `%vllm connect URL --embeddings EMBEDDINGS_URL`.",
    "auth": "Set the key the server was started with (`vllm serve --api-key`) in VLLM_API_KEY, or name "
            "another variable with `%vllm connect URL --api-key-env NAME`.",
    "model_not_found": "Pick one of the served models with `--model NAME` or `%vllm connect URL --model NAME`; "
                       "`%vllm models` lists them.",
    "context_too_long": "Start afresh with `%vllm reset`, drop the last turn with `%vllm undo`, or send a "
                        "shorter prompt.",
    "bad_request": "Check the parameters with `%vllm params`; unset a wrong one with `%vllm params --unset NAME`.",
    "bad_param": "Set it again, e.g. `%vllm params {name}={example}`, or remove it with "
                 "`%vllm params --unset {name}`.",
    "name_value": "Write parameters as `%vllm params temperature=0.7 max_tokens=256`.",
    "reserved_model": "Choose the model with `--model NAME` or `%vllm connect URL --model NAME`.",
    "not_a_conversation": "Load a file written by `%vllm save PATH`.",
    "image_input": "Give `--image` a PIL image, a matplotlib Figure, a numpy array (HxW, HxWx3 or HxWx4; uint8, or "
                   "floats in 0..1), image file bytes, a file path or an http(s) URL; `--plot` sends the current figure.",
    "image_expr": "Define it in a cell run before this one; a file path or URL may be written as it is "
                  "(`--image photo.jpg`, `--image \"my photo.jpg\"`).",
    "image_path": "Check the path given to `--image`; a relative one starts in the notebook's working directory "
                  "(`%pwd` shows it).",
    "bad_image": "Give `--image` a PNG, JPEG, WebP, GIF or another format Pillow reads.",
    "no_pillow": "`%pip install pillow` installs it into this kernel; URLs need no Pillow.",
    "no_plot": "Draw one in a cell run before this one, or name the figure: `--image fig`.",
    "no_image_input": "Run the cell without `--image` / `--plot`, or serve a model that takes images (e.g. `vllm serve "
                      "Qwen/Qwen2.5-VL-3B-Instruct`) and `%vllm connect URL --model NAME`. If an earlier turn holds "
                      "the image, `%vllm undo` or `%vllm reset` drops it.",
    "map_option": "Use e.g. `{flag}`.",
    "map_input": "Pass a list of str, a Series (`%vllm map df.text \"... {{}}\"`) or a DataFrame "
                 "(`%vllm map df \"... {{column}}\"`).",
    "map_template": "Name one of them in the template ({names}); write a literal brace as {{{{ or }}}}.",
    "map_missing": "Fill or drop those rows first (e.g. `df.dropna()`), or drop `--on-error raise` to get their "
                   "error in the table.",
    "map_prompt_too_long": "Shorten those rows' texts or the template, or use a model with a longer context; "
                           "without `--on-error raise` the other rows go on and these keep their error.",
    "map_resume": "Give `--resume` the table a stopped `%vllm map` stored (it says where), or the DataFrame an "
                  "earlier `%vllm map` over the same rows gave.",
    "map_to": "Name a file ending in .parquet (a folder of parts) or .jsonl, e.g. `--to answers.parquet`.",
    "map_to_other": "Write to a new file with `--to`, or delete {path} to start over.",
    "map_to_and_resume": "Give `--to PATH` alone: the file says which rows are done.",
    "tool_signature": "Annotate every parameter with a type JSON can describe: str, int, float, bool, "
                      "list[str], Literal[...], an Enum, a pydantic model or a dataclass; no *args / **kwargs. "
                      "For a DataFrame or another object, take its name as a str and look it up in the function.",
    "sync_tool": "Make the tool a plain `def` (wrap async code in a synchronous function), then run the cell "
                 "with `%%chat --tools NAME` again.",
    "tool_name": "Register it under a name with `@tool(name=\"lookup\")`, then `%%chat --tools lookup`.",
    "unknown_tool": "Available: {available}. Define the function in a cell run before this one (or register "
                    "it with `@tool`), then `%%chat --tools f,g`.",
    "duplicate_tool": "Give one of them another name with `@tool(name=...)`, then name both in `%%chat --tools f,g`.",
    "no_samples": "Ask for several with `%%chat --n 3 --seed 1`, then `%vllm pick I`.",
    "tool_choice": "Use `--tool-choice` auto, required, none, json or a tool's name, and `--max-rounds` of 1 or more.",
    "context_names": "Write e.g. `%%chat --context df,model,x`; for an expression, give it a name in a cell first.",
    "context_name": "Define {name} in a cell run before this one, or leave it out of `--context`.",
    "history_missing": "Use the number of a cell's `In [N]` prompt (`%history -n` lists them); `{{Err}}` is the last "
                       "error, and errors are recorded from `%load_ext vllm_magic` on.",
    "no_notebook": "Name a file with `%config VLLMMagics.autosave_file = 'PATH'`, or load one saved with "
                   "`%vllm save` by `%vllm load PATH`.",
    "nothing_saved": "The notebook's conversations are saved there after every turn while "
                     "`%config VLLMMagics.autosave` is True (the default).",
    "restore_replaces": "`%vllm restore --force` replaces them; `%vllm load --undo -c NAME` then brings one back.",
    "autosave_failed": "Make the notebook's folder writable, name another file with "
                       "`%config VLLMMagics.autosave_file = 'PATH'`, or turn saving off with "
                       "`%config VLLMMagics.autosave = False`.",
    "bad_saved_file": "Move it away (the next turn replaces it), or name another file with "
                      "`%config VLLMMagics.autosave_file = 'PATH'`.",
}
