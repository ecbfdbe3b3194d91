"""MiniCPM-2B tokenizer + chat-format references from transformers' SLOW (sentencepiece) LlamaTokenizer.

One-off reference tool, NOT part of edge-llm. transformers 5.x no longer has a slow LlamaTokenizer
(`use_fast=False` is ignored there and the converted fast tokenizer prepends `▁`), so this part runs in a small
side venv with the last 4.x release and no torch:

    python3 -m venv $WORK/refvenv/tf4
    $WORK/refvenv/tf4/bin/pip install "transformers<5" sentencepiece protobuf jinja2   # got 4.57.6
    $WORK/refvenv/tf4/bin/python benchmarks/references/record_minicpm_tokenizer.py

(record_references.py runs it for you.) Writes tests/data/references/minicpm2b_tokenizer.json.
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import sentencepiece as spm
import transformers
from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import refjson  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOK_DIR = Path(__file__).resolve().parents[3] / "shared/fixtures/minicpm-2b-tokenizer"   # ../shared beside the checkout
OUT = ROOT / "tests" / "data" / "references" / "minicpm2b_tokenizer.json"

STRINGS = [
    "Hello world",
    "Hello, world!",
    " Hello world",
    "  two leading spaces",
    "trailing space ",
    "multiple   inner   spaces",
    "line one\nline two",
    "\n\nstarts with newlines",
    "ends with newline\n",
    "windows\r\nnewline",
    "tab\tseparated\tvalues",
    "你好",
    "你好，世界！",
    "中国的首都是北京。",
    "请背诵李白的《静夜思》。",
    "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。",
    "MiniCPM是面壁智能与清华大学联合开发的端侧大模型。",
    "English 和 中文 mixed 混合 text。",
    "12345",
    "3.14159",
    "The year 2024 has 366 days.",
    "1,000,000 + 2,500 = 1,002,500",
    "What does \"lantern\" mean?",
    "Quote John 3:16.",
    "It's a dog's life; isn't it?",
    "!!! ??? ... --- ***",
    "(parentheses) [brackets] {braces} <angles>",
    "def f(x):\n    return x * 2\n",
    "Café naïve résumé",
    "emoji 😀 👍",
    "<用户>你好<AI>",
    "<用户>What is the capital of France?<AI>",
    "<s>",
    "</s>",
    "<unk>",
    "<s>Hello</s>",
    "a <s> b </s> c",
    "text with <unk> inside",
    "",
    " ",
]

SPECIAL_TEXT = ("<s>", "</s>", "<unk>")

# Conversations as OpenBMB's MiniCPMForCausalLM.chat(tokenizer, query, history) sees them: `history` is the
# list of earlier {"role", "content"} messages, `query` the new user message.
CHATS = [
    {"name": "single_turn_en", "history": [], "query": "What is the capital of France?"},
    {"name": "single_turn_zh", "history": [], "query": "请背诵李白的《静夜思》。"},
    {"name": "query_with_surrounding_whitespace", "history": [], "query": "  Hello!  \n"},
    {"name": "query_with_newlines", "history": [], "query": "Translate to English:\n你好，世界！"},
    {"name": "multi_turn", "history": [
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "你好！有什么可以帮你的吗？"},
    ], "query": "山东省最高的山是哪座山？"},
    {"name": "multi_turn_en_two_answers", "history": [
        {"role": "user", "content": "What does \"lantern\" mean?"},
        {"role": "assistant", "content": "A lantern is a portable lamp in a case. "},
        {"role": "user", "content": "Quote John 3:16."},
        {"role": "assistant", "content": "For God so loved the world..."},
    ], "query": "Thank you."},
    {"name": "with_system_message", "history": [
        {"role": "system", "content": "You are a helpful assistant."},
    ], "query": "Hi"},
]

CHAT_SOURCE = {
    "official": "https://huggingface.co/openbmb/MiniCPM-2B-sft-bf16/blob/main/modeling_minicpm.py "
                "(MiniCPMForCausalLM.chat; the file's history lists fab7c2d 2024-01-30 and 4ab96b0 2024-01-31)",
    "read_from": "the HF page itself was not reachable from here; the method was read in public copies: GitHub "
                 "mindspore-lab/mindnlp mindnlp/transformers/models/minicpm/modeling_minicpm.py @ 1a82249a (a port "
                 "of the HF remote code; chat() identical except return_tensors='ms') and other copies of the "
                 "method in public repositories (same lines, return_tensors='pt')",
    "template_note": "this folder's tokenizer_config.json has the first-published template, which .strip()s every "
                     "message; a later template of the release drops the .strip() (the two differ only for "
                     "messages with leading/trailing whitespace, e.g. query_with_surrounding_whitespace)",
    "code": [
        "history.append({\"role\": role, \"content\": query})",
        "history_str = tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=False)",
        "inputs = tokenizer(history_str, return_tensors='pt').to(self.device)",
        "outputs = self.generate(**inputs, **gen_kwargs)",
        "outputs = outputs.tolist()[0][len(inputs[\"input_ids\"][0]):-1]",
        "response = tokenizer.decode(outputs)",
        "pattern = re.compile(r\".*?(?=<AI>|<用户>)\", re.DOTALL); response = first match if any",
        "history.append({\"role\": \"assistant\", \"content\": response})",
    ],
    "how_recorded_here": "rendered = tokenizer.apply_chat_template(history + [{role: user, content: query}], "
                         "tokenize=False, add_generation_prompt=False) with the tokenizer_config.json chat_template "
                         "(jinja2, via transformers 4.57.6); input_ids = tokenizer(rendered)['input_ids'] "
                         "with the slow LlamaTokenizer (add_bos_token true -> leading <s>=1). The template ends "
                         "every user turn with '<AI>' itself, so add_generation_prompt is irrelevant (it has no "
                         "add_generation_prompt branch). Cross-checked against '<s>' + plain string building.",
}


def main() -> None:
    tok = AutoTokenizer.from_pretrained(str(TOK_DIR), use_fast=False)
    if type(tok).__name__ != "LlamaTokenizer" or tok.is_fast:
        sys.exit(f"expected the slow LlamaTokenizer, got {type(tok)}")
    sp = spm.SentencePieceProcessor(model_file=str(TOK_DIR / "tokenizer.model"))
    cfg = json.loads((TOK_DIR / "tokenizer_config.json").read_text(encoding="utf-8"))

    tokenize = []
    for s in STRINGS:
        ids = tok.encode(s, add_special_tokens=False)
        sp_ids = sp.encode(s)
        entry = {
            "text": s,
            "ids": ids,
            "pieces": tok.convert_ids_to_tokens(ids),
            "sentencepiece_ids": sp_ids,
            "same_as_sentencepiece": ids == sp_ids,
        }
        if any(t in s for t in SPECIAL_TEXT):
            entry["note"] = ("contains <s>/</s>/<unk>: transformers splits it out as a special token (ids 1/2/0) and "
                             "encodes the pieces around it separately; edge-llm deliberately keeps such text plain, "
                             "i.e. expects sentencepiece_ids")
        tokenize.append(entry)

    with_special = []
    for s in ["Hello world", "你好，世界！", "<用户>你好<AI>"]:
        with_special.append({"text": s, "ids": tok.encode(s, add_special_tokens=True)})

    chats = []
    for c in CHATS:
        history = copy.deepcopy(c["history"])
        history.append({"role": "user", "content": c["query"]})
        rendered = tok.apply_chat_template(history, tokenize=False, add_generation_prompt=False)
        manual = "".join(("<用户>" + m["content"].strip() + "<AI>") if m["role"] == "user" else m["content"].strip()
                         for m in history)
        if rendered != manual:
            sys.exit(f"{c['name']}: template rendering {rendered!r} != manual {manual!r}")
        ids = tok(rendered)["input_ids"]
        sp_ids = [tok.bos_token_id] + sp.encode(rendered)
        chats.append({
            "name": c["name"],
            "history": c["history"],
            "query": c["query"],
            "rendered": rendered,
            "input_ids": ids,
            "same_as_bos_plus_sentencepiece": ids == sp_ids,
        })

    out = {
        "what": "MiniCPM-2B (openbmb/MiniCPM-2B-sft-bf16, first published files) tokenizer references from "
                "transformers' slow sentencepiece LlamaTokenizer",
        "tokenizer_dir": "../shared/fixtures/minicpm-2b-tokenizer",   # beside the checkout
        "tokenizer_class": f"{type(tok).__module__}.{type(tok).__name__} (slow, use_fast=False)",
        "tokenizer_config": {k: cfg.get(k) for k in ("legacy", "add_bos_token", "add_eos_token", "chat_template")},
        "sentencepiece_add_dummy_prefix": False,
        "special_ids": {"unk": tok.unk_token_id, "bos": tok.bos_token_id, "eos": tok.eos_token_id},
        "versions": {"transformers": transformers.__version__, "sentencepiece": spm.__version__,
                     "python": sys.version.split()[0]},
        "notes": [
            "tokenize[i].ids = tokenizer.encode(text, add_special_tokens=False)",
            "with legacy=true and add_dummy_prefix=false the slow tokenizer gives plain sentencepiece ids (no '▁' is "
            "prepended to the text) except where the text contains <s>, </s> or <unk>",
            "<用户> and <AI> are not single tokens: '<' 95396, '用户' 4194, '>' 95388, 'AI' 10850",
            "transformers 5.x has no slow LlamaTokenizer: there use_fast=False is ignored and the tokenizer converted "
            "to `tokenizers` prepends '▁' (e.g. '<用户>你好<AI>' -> 1786 '▁<' first) and differs after newlines; "
            "not used here",
            "OpenBMB's fine-tune script hard-codes 1786 ('▁<') for the first token of <用户>: the official release "
            "also ships a tokenizer.json whose fast tokenizer prepends '▁'; these references follow the slow "
            "sentencepiece behaviour",
        ],
        "tokenize": tokenize,
        "tokenize_add_special_tokens": with_special,
        "chat_source": CHAT_SOURCE,
        "chat": chats,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    refjson.dump(OUT, out)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
