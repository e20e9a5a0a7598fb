"""Build the tiny random-weight chat model that the integration tests serve with vLLM.

Run with the SERVER venv's python (it has torch, transformers, tokenizers):

    <vllm-env>/bin/python scripts/build_tiny_models.py OUT_DIR

Why a home-made model: this machine reaches no model hub, and a real chat model would take
minutes to load on 2 CPU cores. This one loads in seconds, and its output is made predictable:

- ``initializer_range=0.2`` (not the default 0.02), so greedy output depends on the prompt
  instead of repeating one token forever;
- the ``lm_head`` rows of special tokens and of tokens that do not decode to printable ASCII are
  zeroed, so greedy (temperature 0) output is printable ASCII that never hits EOS:
  ``finish_reason`` is always ``length`` unless a stop string matches;
- fixed seed, single-threaded tokenizer training: rebuilding gives identical files.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# Tokenizer training parallelises with rayon; one thread keeps merges (and so ids) reproducible.
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

SEED = 1234
VOCAB_SIZE = 1024
MAX_MODEL_LEN = 512
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Training text: enough variety for ~1024 byte-level BPE tokens of notebook-flavoured English.
CORPUS = """\
The notebook talks to a language model served by vLLM on this machine.
You are a helpful assistant. Answer briefly and clearly, then stop.
Hello Jupyter! Say hello to the user and explain what a cell is.
A cat sits on the mat while the kernel runs the next cell.
What is 2+2? The answer is 4, and 3*7 is 21, and 10/4 is 2.5.
def add(a, b):
    return a + b
import pandas as pd; df = pd.DataFrame({"text": texts, "vector": vectors})
Streaming tokens arrive one by one; the usage shows prompt and completion counts.
Embeddings turn sentences into vectors; similar sentences point the same way.
The quick brown fox jumps over the lazy dog near the river bank at noon.
Temperature controls randomness; top_p keeps the most likely tokens; max_tokens caps length.
Errors come back as JSON with a message, a type, a param and a code.
System prompts set the tone: be terse, be polite, cite your sources, use Markdown.
Lists, tables and code blocks render as Markdown in the output area of the notebook.
Python, JavaScript, Rust and Go are programming languages used by developers every day.
Monday, Tuesday, Wednesday, Thursday, Friday, Saturday and Sunday make a week.
January February March April May June July August September October November December
Weather report: sunny mornings, cloudy afternoons, light rain overnight, cooler tomorrow.
Recipes mix flour, sugar, butter, eggs and milk; bake twenty minutes until golden brown.
Mountains, valleys, forests, deserts, oceans and islands shape the geography of continents.
Science asks questions: measure carefully, repeat experiments, publish results, invite review.
Music has rhythm, melody and harmony; orchestras play violins, trumpets, drums and pianos.
Libraries lend books about history, physics, chemistry, biology, poetry and philosophy.
Servers listen on ports; clients send requests; responses carry headers, status and bodies.
Gardeners plant tomatoes, carrots, lettuce and herbs, then water them every evening.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 256 512 1024 2048 3.14159 -1 +1 1e-5
Punctuation: ( ) [ ] { } < > = + - * / % & | ^ ~ ! ? , . ; : ' " ` @ # $ _ \\
"""


def build_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Repetition gives every line's pairs enough weight to merge into whole words.
    tokenizer.train_from_iterator(CORPUS.splitlines() * 4, trainer=trainer)
    return tokenizer


def write_tokenizer(tokenizer: Tokenizer, out: Path) -> None:
    """Write tokenizer.json plus a tokenizer_config.json carrying the ChatML template.

    Written by hand (not ``save_pretrained``) so the template sits in tokenizer_config.json
    where every transformers version and vLLM read it.
    """
    tokenizer.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": IM_END,
        "pad_token": ENDOFTEXT,
        "unk_token": None,
        "model_max_length": MAX_MODEL_LEN,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHATML_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def is_printable_ascii(text: str) -> bool:
    return bool(text) and all(" " <= ch <= "~" for ch in text)


def build_model(tokenizer: Tokenizer, out: Path) -> None:
    vocab_size = tokenizer.get_vocab_size()
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=MAX_MODEL_LEN,
        initializer_range=0.2,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.token_to_id(ENDOFTEXT),
        eos_token_id=tokenizer.token_to_id(IM_END),
        pad_token_id=tokenizer.token_to_id(ENDOFTEXT),
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config)
    banned = [
        token_id
        for token_id in range(vocab_size)
        if tokenizer.id_to_token(token_id) in SPECIAL_TOKENS
        or not is_printable_ascii(tokenizer.decode([token_id], skip_special_tokens=False))
    ]
    with torch.no_grad():
        model.lm_head.weight[banned] = 0.0
    model.to(torch.bfloat16).save_pretrained(out)


def check(out: Path) -> None:
    """Fail the build, not a later server start, if transformers cannot read what was written."""
    tok = AutoTokenizer.from_pretrained(out)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Hello"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n", prompt
    assert tok.eos_token == IM_END
    assert LlamaConfig.from_pretrained(out).max_position_embeddings >= MAX_MODEL_LEN


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    write_tokenizer(tokenizer, out)
    build_model(tokenizer, out)
    check(out)
    print(f"tiny chat model: {out} (vocab {tokenizer.get_vocab_size()})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
