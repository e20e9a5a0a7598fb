"""How a notebook user is told to fix each hinted error: the engine's hints in magic syntax."""

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
}
