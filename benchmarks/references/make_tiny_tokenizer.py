"""Train the tiny byte-level BPE tokenizer shared by the tiny test models (tests/data/tiny-tokenizer/).

One-off reference tool, NOT part of edge-llm: it needs the `tokenizers` library (installed in the separate
reference venv $WORK/refvenv, see record_references.py), never torch.

    $WORK/refvenv/bin/python benchmarks/references/make_tiny_tokenizer.py [OUT_DIR]

What it builds (deterministic: the same bytes every run, checked by training twice):
  * model: BPE, byte-level (ByteLevel pre-tokenizer with GPT-2's regex, no prefix space; ByteLevel decoder and
    post-processor, as SmolLM2's tokenizer.json has them, minus SmolLM2's digit splitting);
  * vocab: 400 ids in all = 3 special tokens (<|endoftext|>=0, <|im_start|>=1, <|im_end|>=2, like SmolLM2)
    + the 256 byte symbols + 141 merges learnt from TRAINING_TEXT below (English, a little Chinese, code);
  * tokenizer_config.json: bos <|im_start|>, eos <|im_end|>, pad <|im_end|>, unk <|endoftext|>, no BOS added,
    and SmolLM2-135M-Instruct's ChatML chat template copied verbatim (it inserts a default system prompt).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# single-threaded word counting: no ordering effects from parallel merges of the counts
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("RAYON_RS_NUM_CPUS", "1")

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402

VOCAB_SIZE = 400
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Copied verbatim from SmolLM2-135M-Instruct's tokenizer_config.json.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TRAINING_TEXT = """\
The quick brown fox jumps over the lazy dog. The dog was not amused, and the fox ran into the forest.
Once upon a time there was a small model that lived on an edge device. It could read, write and count:
one, two, three, four, five, six, seven, eight, nine, ten. It was not very clever, but it was very fast.
What is the capital of France? The capital of France is Paris. What is the capital of Italy? It is Rome.
Hello, world! How are you today? I am fine, thank you. Please tell me a short story about the sea.
The weather is nice: the sun is shining, the birds are singing and the children are playing outside.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024 3.14159 2.71828 1,000,000 -7 +8 50% $19.99
Questions and answers help the assistant learn to be helpful, honest and harmless to the user.
<|im_start|>system
You are a helpful assistant.<|im_end|>
<|im_start|>user
Write a haiku about the moon.<|im_end|>
<|im_start|>assistant
Silver light on waves, the moon listens to the sea, night breathes slowly in.<|im_end|>
你好，世界！今天天气很好。我们一起去公园散步吧。
中国的首都是北京。法国的首都是巴黎。请用中文回答这个问题。
人工智能模型可以在手机和电脑上运行。这个模型很小，但是速度很快。
学而时习之，不亦说乎？有朋自远方来，不亦乐乎？
def add(a, b):
    return a + b


def greet(name: str) -> str:
\t\"\"\"Say hello.\"\"\"
\treturn f"Hello, {name}!"


for i in range(10):
    if i % 2 == 0:
        print(i, "is even")
    else:
        print(i, "is odd")

class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y

int main(void) {
\tint x = 0;
\tfor (int i = 0; i < 10; i++) {
\t\tx += i;
\t}
\treturn x;
}
{"name": "edge", "version": "1.0", "items": [1, 2, 3], "ok": true, "value": null}
Caf\u00e9, na\u00efve, r\u00e9sum\u00e9, \u00fcber, se\u00f1or, fa\u00e7ade. Emoji: \U0001F600 \U0001F680 \u2764\ufe0f
The end. Thank you for reading, and have a nice day!
"""


def build_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    # train line by line, in file order
    tok.train_from_iterator(TRAINING_TEXT.splitlines(keepends=True), trainer=trainer)
    return tok


def tokenizer_config() -> dict:
    added = {
        str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                 "special": True}
        for i, t in enumerate(SPECIAL_TOKENS)
    }
    return {
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": "<|im_start|>",
        "chat_template": SMOLLM2_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "model_max_length": 256,
        "pad_token": "<|im_end|>",
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": "<|endoftext|>",
        "vocab_size": VOCAB_SIZE,
    }


def special_tokens_map() -> dict:
    return {
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
    }


def tokenizer_json_text(tok: Tokenizer) -> str:
    # canonical form: parse and re-dump so the file does not depend on the library's pretty-printer
    return json.dumps(json.loads(tok.to_str()), ensure_ascii=False, indent=2) + "\n"


def write_tokenizer(out_dir: Path) -> Tokenizer:
    tok = build_tokenizer()
    again = build_tokenizer()
    if tokenizer_json_text(tok) != tokenizer_json_text(again):
        sys.exit("tokenizer training is not deterministic within one process")
    if tok.get_vocab_size(with_added_tokens=True) != VOCAB_SIZE:
        sys.exit(f"vocab size {tok.get_vocab_size(with_added_tokens=True)} != {VOCAB_SIZE}")
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tokenizer.json").write_text(tokenizer_json_text(tok), encoding="utf-8")
    dump = lambda d: json.dumps(d, ensure_ascii=False, indent=2) + "\n"  # noqa: E731
    (out_dir / "tokenizer_config.json").write_text(dump(tokenizer_config()), encoding="utf-8")
    (out_dir / "special_tokens_map.json").write_text(dump(special_tokens_map()), encoding="utf-8")
    return Tokenizer.from_file(str(out_dir / "tokenizer.json"))


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[2]
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "tests" / "data" / "tiny-tokenizer"
    t = write_tokenizer(out)
    print(f"wrote {out}: vocab {t.get_vocab_size()}")
