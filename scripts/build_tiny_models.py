"""Build the tiny chat models that the integration tests and the quickstart serve with vLLM.

Run with the SERVER venv's python (it has torch, transformers, tokenizers):

    <vllm-env>/bin/python scripts/build_tiny_models.py OUT_DIR

It writes ``OUT_DIR/tiny-chat``, ``OUT_DIR/tiny-random`` and ``OUT_DIR/tiny-vision``. Why home-made
models: this machine reaches no model hub, and a real chat model would take minutes to load on 2 CPU
cores.

``tiny-chat`` is TRAINED here, on the CPU, in about a minute: a small Llama that learns by heart the
few dozen conversations of ``scripts/tiny_corpus.py`` (Markdown with code and tables, JSON objects,
answers that think in ``<think>...</think>`` first, Hermes-style ``<tool_call>`` answers and the
tools' results answered in text). It is trained on the exact token sequences the chat template
produces, with the loss on the assistant's tokens and the closing ``<|im_end|>``, so greedy
decoding of every corpus prompt gives back the trained answer and stops on EOS. The build checks
that with transformers' greedy generation, with a safety margin between the best and second-best
logit at every step, and fails otherwise. It knows nothing else: any other prompt gets a mix of
memorised fragments.

``tiny-random`` is random weights, kept for robustness tests:

- ``initializer_range=0.2`` (not the default 0.02), so greedy output depends on the prompt
  instead of repeating one token forever;
- the ``lm_head`` rows of special tokens and of tokens that do not decode to printable ASCII are
  zeroed, so greedy (temperature 0) output is printable ASCII that never hits EOS:
  ``finish_reason`` is always ``length`` unless a stop string matches.

``tiny-vision`` is random weights too, with image input: an Idefics3 (a SigLIP-style vision encoder
of 2 layers, 56x56 pixels in 14-pixel patches, pixel-shuffled to 4 image tokens, before a Llama like
``tiny-random``) and its processor, so vLLM's CPU build serves images (gibberish about them). Other
vision architectures need ``torchvision`` in vLLM 0.32 (LLaVA, PaliGemma, Qwen2-VL and Gemma 3 import
it), whose PyPI builds need CUDA's torch; Idefics3 does not. Image splitting is off: every image is
resized to fit 56x56 and costs the same 8 prompt tokens (its 4 image tokens and their markers).

All are deterministic: fixed seeds, single-threaded tokenizer training, a fixed number of torch
threads and deterministic algorithms, so rebuilding gives identical files.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

# Tokenizer training parallelises with rayon; one thread keeps merges (and so ids) reproducible.
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import torch  # noqa: E402
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoTokenizer,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3Processor,
    Idefics3VisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil  # noqa: E402


def _load_corpus() -> ModuleType:
    """scripts/tiny_corpus.py by path (scripts/ is not a package)."""
    path = Path(__file__).resolve().parent / "tiny_corpus.py"
    spec = importlib.util.spec_from_file_location("tiny_corpus", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


corpus = _load_corpus()

SEED = 1234
MAX_MODEL_LEN = 512
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]
# Not special (vLLM would drop special tokens from the text before its reasoning and tool parsers
# see it), but single tokens, which those parsers look up in the vocabulary.
MARKUP_TOKENS = ["<think>", "</think>", "<tool_call>", "</tool_call>"]

# ChatML, with tools, tool calls and tool results the way Qwen2.5's (Hermes-style) template
# renders them, simplified, and Qwen3's ``enable_thinking=False`` switch.
CHAT_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nTo call a function, answer with a JSON object of its name and arguments "
    "inside <tool_call></tool_call> tags. Functions:\\n' }}"
    "{%- for tool in tools %}"
    "{%- set fn = tool.function if tool.function is defined else tool %}"
    "{{- '- ' + fn.name + ': ' + (fn.description or '') + ' Parameters: ' + (fn.parameters | tojson)"
    " + '\\n' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'system' and loop.first %}"
    "{%- elif message.role == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' + message.content + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if message.content %}{{- message.content }}{%- endif %}"
    "{%- for tool_call in message.tool_calls or [] %}"
    "{%- set fn = tool_call.function if tool_call.function is defined else tool_call %}"
    "{%- if message.content or not loop.first %}{{- '\\n' }}{%- endif %}"
    "{{- '<tool_call>\\n{\"name\": \"' + fn.name + '\", \"arguments\": ' }}"
    "{%- if fn.arguments is string %}{{- fn.arguments }}{%- else %}{{- fn.arguments | tojson }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)

# ---------------------------------------------------------------------------- the trained model
CHAT_VOCAB_SIZE = 1024  # BPE merges learnt from the corpus; the markup tokens come on top
CHAT_SHAPE = {  # 1.4M parameters: memorises the corpus in ~60 full-batch steps (~30 s here)
    "hidden_size": 192,
    "intermediate_size": 384,
    "num_hidden_layers": 3,
    "num_attention_heads": 3,
    "num_key_value_heads": 1,
    "head_dim": 64,
}
TORCH_THREADS = 2  # fixed, not "all cores": float sums in a different order could change the bits
MAX_STEPS = 150  # the cosine schedule's length; training stops as soon as the margin holds
LEARNING_RATE = 4e-3
WARMUP_STEPS = 20
CHECK_EVERY = 10
BUCKET = 10  # sequences of similar length per forward pass, so little of the work is padding
# Greedy decoding must be robust to vLLM's own kernels: at every answer token the trained token
# must lead the runner-up by this many logits (vLLM's float32 logits differ by ~1e-5).
MIN_MARGIN = 2.0

# --------------------------------------------------------------------------- the random model
RANDOM_VOCAB_SIZE = 1024
# Training text for the random model's tokenizer: enough variety for ~1024 byte-level BPE tokens
# of notebook-flavoured English.
RANDOM_TOKENIZER_TEXT = """\
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


def log(message: str) -> None:
    print(f"[build_tiny_models] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- tokenizers


def train_tokenizer(texts: list[str], vocab_size: int, markup: list[str]) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if markup:
        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in markup])
    return tokenizer


def as_transformers(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def write_tokenizer(tokenizer: Tokenizer, out: Path) -> None:
    """Write tokenizer.json plus a tokenizer_config.json carrying the chat template.

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
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def render(tok: PreTrainedTokenizerFast, example: dict[str, Any]) -> str:
    """The prompt text vLLM builds for this corpus example: history + generation prompt."""
    return str(tok.apply_chat_template(
        example["messages"], tools=example["tools"], add_generation_prompt=True, tokenize=False,
        **example["chat_template_kwargs"],
    ))


def llama_config(tokenizer: Tokenizer, **shape: Any) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        max_position_embeddings=MAX_MODEL_LEN,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.token_to_id(ENDOFTEXT),
        eos_token_id=tokenizer.token_to_id(IM_END),
        pad_token_id=tokenizer.token_to_id(ENDOFTEXT),
        **shape,
    )


# --------------------------------------------------------------------------- trained model


def chat_tokenizer() -> Tokenizer:
    """BPE learnt from the corpus as the template renders it, so answers take few tokens."""
    provisional = as_transformers(train_tokenizer(["x"], 300, []))
    texts = []
    for conversation in corpus.CONVERSATIONS:
        texts.append(str(provisional.apply_chat_template(
            conversation["messages"], tools=conversation.get("tools"), tokenize=False,
            **(conversation.get("chat_template_kwargs") or {}))))
    return train_tokenizer(texts, CHAT_VOCAB_SIZE, MARKUP_TOKENS)


def training_sequences(tok: PreTrainedTokenizerFast) -> list[tuple[list[int], int]]:
    """(token ids, index of the first answer token) per corpus example.

    The prompt is tokenized on its own, as vLLM tokenizes it; the answer's tokens follow, then
    ``<|im_end|>``. Identical prompts must have identical answers, or greedy decoding could not
    reproduce both.
    """
    eos = tok.convert_tokens_to_ids(IM_END)
    seen: dict[str, str] = {}
    sequences = []
    for example in corpus.examples():
        prompt = render(tok, example)
        if prompt in seen:
            if seen[prompt] != example["answer"]:
                raise SystemExit(f"two answers to the same prompt:\n{prompt}")
            continue
        seen[prompt] = example["answer"]
        prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tok(example["answer"], add_special_tokens=False)["input_ids"] + [eos]
        if tok.decode(answer_ids[:-1]) != example["answer"]:
            raise SystemExit(f"the tokenizer does not round-trip {example['answer']!r}")
        if len(prompt_ids) + len(answer_ids) > MAX_MODEL_LEN:
            raise SystemExit(f"example longer than {MAX_MODEL_LEN} tokens:\n{prompt}")
        sequences.append((prompt_ids + answer_ids, len(prompt_ids)))
    return sequences


def batch(sequences: list[tuple[list[int], int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and labels (-100 outside the answers). Causal attention never looks
    right, so the padding needs no attention mask."""
    width = max(len(ids) for ids, _ in sequences)
    input_ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    labels = torch.full((len(sequences), width), -100, dtype=torch.long)
    for row, (ids, start) in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, start : len(ids)] = torch.tensor(ids[start:])
    return input_ids, labels


def buckets(sequences: list[tuple[list[int], int]], pad: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The sequences sorted by length and cut into batches of ``BUCKET``."""
    ordered = sorted(sequences, key=lambda seq: len(seq[0]))
    return [batch(ordered[i : i + BUCKET], pad) for i in range(0, len(ordered), BUCKET)]


@torch.no_grad()
def worst_margin(model: LlamaForCausalLM, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Smallest lead of the trained token over the best other token, over every answer token
    (negative when some answer token is not the argmax: greedy decoding would leave the path)."""
    worst = math.inf
    for input_ids, labels in batches:
        logits = model(input_ids=input_ids).logits[:, :-1].float()
        targets = labels[:, 1:]
        mask = targets != -100
        picked, wanted = logits[mask], targets[mask]
        target_logit = picked.gather(1, wanted[:, None])[:, 0]
        others = picked.scatter(1, wanted[:, None], float("-inf"))
        worst = min(worst, float((target_logit - others.max(dim=1).values).min()))
    return worst


def train(tokenizer: Tokenizer, tok: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """Full-batch AdamW (the gradient of every answer token each step, accumulated over the
    length buckets) until every answer token leads by ``MIN_MARGIN``."""
    sequences = training_sequences(tok)
    batches = buckets(sequences, tokenizer.token_to_id(ENDOFTEXT))
    answer_tokens = [int((labels[:, 1:] != -100).sum()) for _, labels in batches]
    total = sum(answer_tokens)
    log(f"{len(sequences)} examples, {sum(len(ids) for ids, _ in sequences)} tokens, "
        f"{total} of them answer tokens")
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(llama_config(tokenizer, **CHAT_SHAPE)).float().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, betas=(0.9, 0.95),
                                  weight_decay=0.0)

    def lr_at(step: int) -> float:
        if step < WARMUP_STEPS:
            return (step + 1) / WARMUP_STEPS
        progress = (step - WARMUP_STEPS) / (MAX_STEPS - WARMUP_STEPS)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    started = time.monotonic()
    margin = -math.inf
    for step in range(1, MAX_STEPS + 1):
        optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for (input_ids, labels), count in zip(batches, answer_tokens):
            # the model's loss is a mean over this bucket; weigh it to a mean over all buckets
            loss = model(input_ids=input_ids, labels=labels).loss * (count / total)
            loss.backward()
            loss_sum += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % CHECK_EVERY == 0:
            model.eval()
            margin = worst_margin(model, batches)
            model.train()
            log(f"step {step}: loss {loss_sum:.4f}, worst margin {margin:+.2f} "
                f"({time.monotonic() - started:.0f} s)")
            if margin >= MIN_MARGIN:
                break
    else:
        raise SystemExit(f"not memorised after {MAX_STEPS} steps (worst margin {margin:+.2f})")
    return model.eval()


@torch.no_grad()
def verify_greedy(model: LlamaForCausalLM, tok: PreTrainedTokenizerFast) -> None:
    """Greedy generation reproduces every corpus answer and then stops on EOS."""
    eos = tok.convert_tokens_to_ids(IM_END)
    failures = []
    for example in corpus.examples():
        prompt_ids = tok(render(tok, example), add_special_tokens=False, return_tensors="pt")["input_ids"]
        out = model.generate(prompt_ids, max_new_tokens=MAX_MODEL_LEN - prompt_ids.shape[1],
                             do_sample=False, eos_token_id=eos, pad_token_id=eos)
        new = out[0, prompt_ids.shape[1]:].tolist()
        text = tok.decode(new[:-1] if new and new[-1] == eos else new)
        if not new or new[-1] != eos or text != example["answer"]:
            failures.append(f"{example['messages'][-1]['content']!r}: got {text!r}")
    if failures:
        raise SystemExit("greedy answers differ from the corpus:\n" + "\n".join(failures))


def build_chat(out: Path) -> None:
    started = time.monotonic()
    tokenizer = chat_tokenizer()
    tok = as_transformers(tokenizer)
    model = train(tokenizer, tok)
    verify_greedy(model, tok)
    out.mkdir(parents=True, exist_ok=True)
    write_tokenizer(tokenizer, out)
    model.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    log(f"tiny-chat: {params / 1e6:.1f}M parameters, vocab {tokenizer.get_vocab_size()}, "
        f"{len(corpus.examples())} answers verified, {time.monotonic() - started:.0f} s")


# ---------------------------------------------------------------------------- random model


def is_printable_ascii(text: str) -> bool:
    return bool(text) and all(" " <= ch <= "~" for ch in text)


def build_random(out: Path) -> None:
    tokenizer = train_tokenizer(RANDOM_TOKENIZER_TEXT.splitlines() * 4, RANDOM_VOCAB_SIZE, [])
    out.mkdir(parents=True, exist_ok=True)
    write_tokenizer(tokenizer, out)
    config = llama_config(
        tokenizer, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=64, initializer_range=0.2,
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config)
    banned = [
        token_id
        for token_id in range(tokenizer.get_vocab_size())
        if tokenizer.id_to_token(token_id) in SPECIAL_TOKENS
        or not is_printable_ascii(tokenizer.decode([token_id], skip_special_tokens=False))
    ]
    with torch.no_grad():
        model.lm_head.weight[banned] = 0.0
    model.to(torch.bfloat16).save_pretrained(out)


# ---------------------------------------------------------------------------- vision model
VISION_IMAGE_SIZE = 56
VISION_PATCH = 14
VISION_SCALE = 2  # the connector's pixel shuffle: (56 / 14)^2 / 2^2 = 4 image tokens
# The tokens Idefics3's processor wraps an image in; the row/column tags only appear with image splitting.
VISION_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"] + [
    f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)]


def build_vision(out: Path) -> None:
    tokenizer = train_tokenizer(RANDOM_TOKENIZER_TEXT.splitlines() * 4, RANDOM_VOCAB_SIZE, [])
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in VISION_TOKENS])
    out.mkdir(parents=True, exist_ok=True)
    write_tokenizer(tokenizer, out)
    text = llama_config(tokenizer, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=1, head_dim=64, initializer_range=0.2)
    vision = Idefics3VisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=VISION_IMAGE_SIZE, patch_size=VISION_PATCH)
    config = Idefics3Config(vision_config=vision.to_dict(), text_config=text.to_dict(), scale_factor=VISION_SCALE,
                            image_token_id=tokenizer.token_to_id("<image>"), pad_token_id=text.pad_token_id,
                            tie_word_embeddings=False)
    torch.manual_seed(SEED)
    Idefics3ForConditionalGeneration(config).to(torch.bfloat16).save_pretrained(out)
    side = {"longest_edge": VISION_IMAGE_SIZE}
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessorPil(size=side, max_image_size=side, do_image_splitting=False),
        tokenizer=AutoTokenizer.from_pretrained(out),
        image_seq_len=(VISION_IMAGE_SIZE // VISION_PATCH) ** 2 // VISION_SCALE**2,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    write_tokenizer(tokenizer, out)  # the processor rewrote the tokenizer's files; keep the project's own


# ------------------------------------------------------------------------------------ checks


def check(out: Path) -> None:
    """Fail the build, not a later server start, if transformers cannot read what was written."""
    for name in ("tiny-chat", "tiny-random", "tiny-vision"):
        tok = AutoTokenizer.from_pretrained(out / name)
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": "Hello"}], tokenize=False, add_generation_prompt=True
        )
        assert prompt == "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n", prompt
        assert tok.eos_token == IM_END
        text_config = AutoConfig.from_pretrained(out / name).get_text_config()
        assert text_config.max_position_embeddings >= MAX_MODEL_LEN
    vocab = AutoTokenizer.from_pretrained(out / "tiny-chat").get_vocab()
    assert all(token in vocab for token in MARKUP_TOKENS)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    torch.set_num_threads(TORCH_THREADS)
    torch.use_deterministic_algorithms(True)
    build_random(out / "tiny-random")
    build_vision(out / "tiny-vision")
    build_chat(out / "tiny-chat")
    check(out)
    print(f"tiny models: {out / 'tiny-chat'}, {out / 'tiny-random'}, {out / 'tiny-vision'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
