"""Record independent reference outputs from Hugging Face transformers + torch (one-off tool).

NOT part of edge-llm: torch and transformers must never become edge-llm dependencies. They live in a separate
venv, $WORK/refvenv:

    python3 -m venv $WORK/refvenv
    $WORK/refvenv/bin/pip install torch==2.13.0 transformers safetensors tokenizers jinja2 sentencepiece numpy protobuf
    # recorded with torch 2.13.0+cpu, transformers 5.24.0, tokenizers 0.23.3, safetensors 0.8.0, numpy 2.4.6

    # the MiniCPM-2B slow-tokenizer part needs transformers 4.x (5.x has no slow LlamaTokenizer); no torch:
    python3 -m venv $WORK/refvenv/tf4
    $WORK/refvenv/tf4/bin/pip install "transformers<5" sentencepiece protobuf jinja2      # got 4.57.6

    # SmolLM2 checkpoint (dequantized Q4_1 weights), if $WORK/cache/smollm2-135m-instruct is missing:
    python ../shared/fixtures/make_smollm2.py $WORK/cache

    nice $WORK/refvenv/bin/python benchmarks/references/record_references.py
    # parts: --only tokenizer,tiny,smollm2,minicpm (default: all)

Writes (paths relative to the repository root):
  tests/data/tiny-tokenizer/                 byte-level BPE, 400 ids (make_tiny_tokenizer.py)
  tests/data/tiny-families/<name>/           tiny random bf16 checkpoints + reference.json + reference_logits.npy
  tests/data/references/smollm2.json         SmolLM2-135M-Instruct tokenizer / chat template / greedy references
  tests/data/references/smollm2_logits.npz   SmolLM2 top-64 logits + logsumexp per position
  tests/data/references/minicpm2b_tokenizer.json  (record_minicpm_tokenizer.py, run in $WORK/refvenv/tf4)

Everything is deterministic (single thread, fixed seeds, fixed zip timestamps): a second run gives the same bytes.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_tiny_tokenizer  # noqa: E402
import refjson  # noqa: E402

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

ROOT = Path(__file__).resolve().parents[2]
TINY_TOK = ROOT / "tests" / "data" / "tiny-tokenizer"
FAMILIES = ROOT / "tests" / "data" / "tiny-families"
REFS = ROOT / "tests" / "data" / "references"
SMOLLM2 = Path("$WORK/cache/smollm2-135m-instruct")
TF4_PYTHON = Path("$WORK/refvenv/tf4/bin/python")

VERSIONS = {
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "tokenizers": tokenizers.__version__,
    "safetensors": safetensors.__version__,
    "numpy": np.__version__,
    "python": sys.version.split()[0],
}


def dump_json(path: Path, obj) -> None:
    refjson.dump(path, obj)


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed, but with a fixed zip timestamp so the file is byte-for-byte reproducible."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


# ------------------------------------------------------------------------------------------ tiny models
TINY_COMMON = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    bos_token_id=1,
    eos_token_id=2,
    hidden_act="silu",
)
QWEN3_HEAD_DIM = 32  # != hidden_size / num_attention_heads = 16

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}
LINEAR_ROPE = {"rope_type": "linear", "factor": 2.0}

# name -> (config class, model class, extra config, rope_theta, rope_scaling)
TINY_FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM, {"tie_word_embeddings": True}, 10000.0, None),
    "llama3-rope": (LlamaConfig, LlamaForCausalLM, {"tie_word_embeddings": True}, 10000.0, LLAMA3_ROPE),
    "llama-linear-rope": (LlamaConfig, LlamaForCausalLM, {"tie_word_embeddings": True}, 10000.0, LINEAR_ROPE),
    "llama-untied": (LlamaConfig, LlamaForCausalLM, {"tie_word_embeddings": False}, 10000.0, None),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, {"tie_word_embeddings": True, "use_sliding_window": False,
                                             "sliding_window": None}, 10000.0, None),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, {"tie_word_embeddings": True, "head_dim": QWEN3_HEAD_DIM,
                                             "attention_bias": False, "use_sliding_window": False,
                                             "sliding_window": None}, 1e6, None),
    "mistral": (MistralConfig, MistralForCausalLM, {"tie_word_embeddings": True, "sliding_window": None},
                10000.0, None),
}

# Weight init, larger than transformers' default (normal std 0.02) so the logits are not degenerate.
# std 0.5 for the projections (the first idea) made attention almost one-hot (mean max weight 0.93) on these
# 64-wide models; 0.2 keeps attention soft (~0.64) and gives logits with std ~4 and a varied greedy continuation.
INIT = {
    "embed_tokens / lm_head": "normal(0, 0.5)",
    "linear weights (q/k/v/o, gate/up/down)": "normal(0, 0.2)",
    "biases (qwen2 q/k/v)": "0.1 * randn",
    "RMSNorm weights (input/post-attention/final, qwen3 q_norm/k_norm)": "1 + 0.1 * randn",
    "seed": "torch.manual_seed(0) before building the model and again before this init; parameters in "
            "named_parameters() order",
}

# Same seed and same parameter shapes/order => identical weights; only the config differs.
SAME_WEIGHTS_AS = {"llama3-rope": "llama", "llama-linear-rope": "llama", "mistral": "llama"}

INPUT_TEXT = "Hello, world! 你好"
N_GREEDY = 10


def init_weights(model: torch.nn.Module) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif "embed_tokens" in name or "lm_head" in name:
                p.normal_(0.0, 0.5)
            else:
                p.normal_(0.0, 0.2)


def classic_config(cfg: dict, rope_theta: float, rope_scaling: dict | None) -> dict:
    """config.json as released checkpoints write it (transformers 4.x field names).

    transformers 5 writes `rope_parameters` (with rope_theta inside) and `dtype`; released Llama/Qwen/Mistral
    checkpoints have `rope_theta`, `rope_scaling` and `torch_dtype`. transformers 5 reads both forms; the
    script checks that the reloaded config has the same rope parameters."""
    out = dict(cfg)
    rp = out.pop("rope_parameters", None) or {}
    assert float(rp.get("rope_theta", rope_theta)) == float(rope_theta), (rp, rope_theta)
    out["rope_theta"] = float(rope_theta)
    out["rope_scaling"] = copy.deepcopy(rope_scaling)
    if "dtype" in out:
        out["torch_dtype"] = out.pop("dtype")
    lt = out.get("layer_types")
    if lt is not None and all(t == "full_attention" for t in lt):
        out.pop("layer_types")  # absent from released Qwen2/Qwen3 configs; all layers are full attention
    return dict(sorted(out.items()))


def greedy_no_cache(model, ids: list[int], n: int) -> list[int]:
    """Independent check of generate(): full recompute each step, argmax of the last position."""
    seq = list(ids)
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([seq]), use_cache=False).logits[0, -1]
            seq.append(int(torch.argmax(logits)))
    return seq[len(ids):]


def make_tiny_family(name: str, tok) -> dict:
    cfg_cls, model_cls, extra, rope_theta, rope_scaling = TINY_FAMILIES[name]
    vocab = len(tok)
    kw = dict(TINY_COMMON, vocab_size=vocab, **extra)
    if rope_scaling is None:
        kw["rope_parameters"] = {"rope_type": "default", "rope_theta": rope_theta}
    else:
        kw["rope_parameters"] = dict(rope_scaling, rope_theta=rope_theta)
    config = cfg_cls(**kw)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = model_cls(config)
    init_weights(model)
    if config.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    model = model.to(torch.bfloat16).eval()

    out = FAMILIES / name
    out.mkdir(parents=True, exist_ok=True)
    for f in out.iterdir():
        f.unlink()
    model.save_pretrained(str(out))
    # config.json in the released-checkpoint form
    saved = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(classic_config(saved, rope_theta, rope_scaling), indent=2) + "\n")
    gen = {"bos_token_id": 1, "eos_token_id": 2, "transformers_version": transformers.__version__}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (out / f).write_bytes((TINY_TOK / f).read_bytes())

    # reload the saved bf16 folder, upcast to float32
    ref = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.bfloat16, attn_implementation="eager")
    assert type(ref) is model_cls, type(ref)
    assert ref.config.rope_parameters == config.rope_parameters, (ref.config.rope_parameters, config.rope_parameters)
    if name == "qwen3":
        assert ref.config.head_dim == QWEN3_HEAD_DIM
    sd_saved = {k: v for k, v in ref.state_dict().items()}
    for k, v in model.state_dict().items():
        assert torch.equal(sd_saved[k], v), k
    ref = ref.float().eval()

    input_ids = tok.encode(INPUT_TEXT, add_special_tokens=False)
    assert 10 <= len(input_ids) <= 14, len(input_ids)
    with torch.no_grad():
        logits = ref(torch.tensor([input_ids]), use_cache=False).logits[0].float().numpy()
        # same result from the in-memory model (original config object) upcast: the rewritten config is faithful
        # (a fresh float32 module: .to(bfloat16) on the original also rounds the rotary inv_freq buffer)
        mem = model_cls(config).eval()
        mem.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
        logits_mem = mem(torch.tensor([input_ids]), use_cache=False).logits[0].float().numpy()
    assert np.array_equal(logits, logits_mem), float(np.abs(logits - logits_mem).max())
    np.save(out / "reference_logits.npy", logits.astype(np.float32))

    gcfg = GenerationConfig(do_sample=False, max_new_tokens=N_GREEDY, min_new_tokens=N_GREEDY,
                            eos_token_id=None, pad_token_id=0, bos_token_id=1)
    with torch.no_grad():
        gen_out = ref.generate(torch.tensor([input_ids]), attention_mask=torch.ones(1, len(input_ids), dtype=torch.long),
                               generation_config=gcfg)
    greedy = gen_out[0, len(input_ids):].tolist()
    assert len(greedy) == N_GREEDY, greedy
    check = greedy_no_cache(ref, input_ids, N_GREEDY)
    assert check == greedy, (greedy, check)

    p = torch.softmax(torch.from_numpy(logits), -1)
    reference = {
        "family": name,
        "architecture": model_cls.__name__,
        "input_text": INPUT_TEXT,
        "input_ids": input_ids,
        "logits_file": "reference_logits.npy",
        "logits_shape": list(logits.shape),
        "logits_note": "float32 logits of every position of input_ids (row t predicts token t+1), from the saved "
                       "bf16 weights upcast to float32, eager attention, no KV cache",
        "greedy_ids": greedy,
        "greedy_note": f"model.generate(do_sample=False, max_new_tokens={N_GREEDY}, min_new_tokens={N_GREEDY}, "
                       "eos_token_id=None): no eos stopping; equal to a no-cache argmax loop",
        "argmax_per_position": [int(i) for i in logits.argmax(-1)],
        "logits_stats": {"std": round(float(logits.std()), 4), "mean_max_prob": round(float(p.max(-1).values.mean()), 4)},
        "config": {"vocab_size": vocab, "rope_theta": rope_theta, "rope_scaling": rope_scaling,
                   "tie_word_embeddings": config.tie_word_embeddings,
                   "head_dim": getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads},
        "init": INIT,
        "same_weights_as": SAME_WEIGHTS_AS.get(name),
        "checkpoint_dtype": "bfloat16",
        "versions": VERSIONS,
    }
    dump_json(out / "reference.json", reference)
    return reference


def run_tiny(tok) -> None:
    refs = {name: make_tiny_family(name, tok) for name in TINY_FAMILIES}
    # the three tied llama variants share weights (same seed, same shapes): only the rope differs
    for n, other in SAME_WEIGHTS_AS.items():
        assert (FAMILIES / n / "model.safetensors").read_bytes() == (FAMILIES / other / "model.safetensors").read_bytes()
    # mistral without sliding window is llama: the same logits
    assert np.array_equal(np.load(FAMILIES / "mistral" / "reference_logits.npy"),
                          np.load(FAMILIES / "llama" / "reference_logits.npy"))
    base = np.load(FAMILIES / "llama" / "reference_logits.npy")
    for n in ("llama3-rope", "llama-linear-rope"):
        d = float(np.abs(np.load(FAMILIES / n / "reference_logits.npy") - base).max())
        print(f"  {n}: max |logits - llama logits| = {d:.3f}")
        assert d > 1e-2, f"{n}: rope scaling has no visible effect"
    for name, r in refs.items():
        print(f"  {name}: greedy {r['greedy_ids']} std {r['logits_stats']}")


# ------------------------------------------------------------------------------------------ SmolLM2
SMOL_STRINGS = [
    "Hello world",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France?",
    " leading space",
    "   three leading spaces",
    "trailing space ",
    "trailing spaces   ",
    "multiple   inner    spaces",
    "line one\nline two",
    "\n\nleading newlines",
    "ends with newline\n",
    "windows\r\nline ending",
    "tab\tseparated\tvalues",
    "def add(a, b):\n\treturn a + b\n",
    "    def f(x):\n        return x ** 2\n",
    "for (int i = 0; i < 10; i++) {\n\tsum += i;\n}",
    "{\"key\": [1, 2, 3], \"ok\": true}",
    "12345 3.14159",
    "1,000,000 and 2024-11-29 and 007",
    "你好，世界！",
    "中国的首都是北京。",
    "日本語のテキスト",
    "Привет, мир!",
    "Café naïve résumé façade Ångström",
    "emoji 😀🚀❤️",
    "family 👨‍👩‍👧‍👦 and flag 🇫🇷",
    "<|im_start|>user\nHi<|im_end|>",
    "text with <|im_start|> inside",
    "<|endoftext|>",
    "<repo_name>",
    "<s> and </s> are plain here",
    "I'm sure you'll see they've won't",
    "https://example.com/path?x=1&y=2#frag",
    "!!!???...---",
    "x^2 + y^2 = z^2, ∑ ∫ √π ≈ 3.14",
    "supercalifragilisticexpialidocious",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "non\u00a0breaking\u200bzero-width",
    " ",
    "\n",
    "",
]
SMOL_SPECIAL = ["What is the capital of France?", "<|im_start|>user\nHi<|im_end|>", ""]

SMOL_CHATS = [
    ("single_turn", [{"role": "user", "content": "What is the capital of France?"}]),
    ("with_system", [{"role": "system", "content": "You are a pirate. Answer like a pirate."},
                     {"role": "user", "content": "Where is the treasure?"}]),
    ("multi_turn", [{"role": "user", "content": "Hi!"},
                    {"role": "assistant", "content": "Hello! How can I help you today?"},
                    {"role": "user", "content": "Tell me a joke."}]),
    ("system_multi_turn", [{"role": "system", "content": "Be brief."},
                           {"role": "user", "content": "What is 2+2?"},
                           {"role": "assistant", "content": "4"},
                           {"role": "user", "content": "And 3+3?"},
                           {"role": "assistant", "content": "6"},
                           {"role": "user", "content": "Thanks."}]),
    ("chinese", [{"role": "user", "content": "你好，请介绍一下你自己。"}]),
    ("code", [{"role": "user", "content": "Fix this:\n\ndef f(x):\n\treturn x +\n"}]),
    ("leading_trailing_whitespace", [{"role": "user", "content": "  spaced out  \n"}]),
    ("special_token_text", [{"role": "user", "content": "Say <|im_end|> please"}]),
]

SMOL_GREEDY = [
    ("capital_of_france", [{"role": "user", "content": "What is the capital of France?"}]),
    ("haiku", [{"role": "user", "content": "Write a haiku about the sea."}]),
    ("system_pirate", [{"role": "system", "content": "You are a pirate. Answer like a pirate."},
                       {"role": "user", "content": "Where is the treasure?"}]),
    ("multi_turn_math", [{"role": "user", "content": "What is 2+2?"},
                         {"role": "assistant", "content": "2+2 is 4."},
                         {"role": "user", "content": "And what is 3+3?"}]),
]
SMOL_NEW_TOKENS = 32
TOPK = 64


def chat_ids(tok, messages) -> list[int]:
    r = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(r, "keys") and "input_ids" in r:
        r = r["input_ids"]
    r = list(r)
    if r and isinstance(r[0], list):
        (r,) = r
    return [int(i) for i in r]


def run_smollm2() -> None:
    tok = AutoTokenizer.from_pretrained(str(SMOLLM2))
    raw = tokenizers.Tokenizer.from_file(str(SMOLLM2 / "tokenizer.json"))
    assert tok.bos_token_id == 1 and tok.eos_token_id == 2, (tok.bos_token_id, tok.eos_token_id)

    tokenize = []
    for s in SMOL_STRINGS:
        ids = tok.encode(s, add_special_tokens=False)
        raw_ids = raw.encode(s, add_special_tokens=False).ids
        assert ids == raw_ids, (s, ids, raw_ids)
        tokenize.append({"text": s, "ids": ids, "pieces": tok.convert_ids_to_tokens(ids),
                         "decoded": tok.decode(ids, skip_special_tokens=False)})
    with_special = [{"text": s, "ids": tok.encode(s, add_special_tokens=True),
                     "same_as_without": tok.encode(s, add_special_tokens=True) == tok.encode(s, add_special_tokens=False)}
                    for s in SMOL_SPECIAL]

    chats = []
    for name, msgs in SMOL_CHATS:
        text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        ids = chat_ids(tok, msgs)
        assert ids == tok.encode(text, add_special_tokens=False), name
        chats.append({"name": name, "messages": msgs, "add_generation_prompt": True, "rendered": text,
                      "input_ids": ids})

    model = AutoModelForCausalLM.from_pretrained(str(SMOLLM2), dtype=torch.float32, attn_implementation="eager").eval()
    greedy = []
    for name, msgs in SMOL_GREEDY:
        ids = chat_ids(tok, msgs)
        gcfg = GenerationConfig(do_sample=False, max_new_tokens=SMOL_NEW_TOKENS, eos_token_id=2, pad_token_id=2,
                                bos_token_id=1)
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 generation_config=gcfg)
        new = [int(i) for i in out[0, len(ids):]]
        stopped = 2 in new
        if stopped:
            assert new.index(2) == len(new) - 1
        greedy.append({
            "name": name, "messages": msgs, "input_ids": ids, "new_ids": new,
            "stopped_at_eos": stopped,
            "n_new": len(new),
            "eos_index_in_new_ids": new.index(2) if stopped else None,
            "text": tok.decode([i for i in new if i != 2], skip_special_tokens=False),
        })
        print(f"  smollm2 greedy {name}: {len(new)} tokens, eos={stopped}: {greedy[-1]['text']!r}")
    # independent check of generate's cached path for the first prompt
    first = greedy[0]
    check = greedy_no_cache(model, first["input_ids"], len(first["new_ids"]))
    assert check == first["new_ids"], (check, first["new_ids"])

    # logits: a short chat prompt and a plain text
    logit_inputs = {
        # ChatML written out without the template's default system prompt, to keep it short
        "chat": tok.encode("<|im_start|>user\nHello there!<|im_end|>\n<|im_start|>assistant\n",
                           add_special_tokens=False),
        "text": tok.encode("The Eiffel Tower is in Paris, the capital of France. It was built in the year",
                           add_special_tokens=False),
    }
    assert sum(len(v) for v in logit_inputs.values()) <= 32, {k: len(v) for k, v in logit_inputs.items()}
    arrays = {}
    logit_meta = {}
    for key, ids in logit_inputs.items():
        with torch.no_grad():
            lg = model(torch.tensor([ids]), use_cache=False).logits[0].float()
        top = torch.topk(lg, TOPK, dim=-1)
        arrays[f"{key}_input_ids"] = np.asarray(ids, dtype=np.int32)
        arrays[f"{key}_top64_ids"] = top.indices.numpy().astype(np.int32)
        arrays[f"{key}_top64_logits"] = top.values.numpy().astype(np.float32)
        arrays[f"{key}_logsumexp"] = torch.logsumexp(lg, dim=-1).numpy().astype(np.float32)
        arrays[f"{key}_argmax"] = lg.argmax(-1).numpy().astype(np.int32)
        logit_meta[key] = {"input_ids": ids, "text": tok.decode(ids), "positions": len(ids)}
    save_npz(REFS / "smollm2_logits.npz", arrays)

    cfg = json.loads((SMOLLM2 / "config.json").read_text())
    out = {
        "what": "SmolLM2-135M-Instruct references from transformers + torch (float32 weights); the checkpoint is "
                "$WORK/cache/smollm2-135m-instruct built by ../shared/fixtures/make_smollm2.py, whose weights "
                "are dequantized Q4_1 values (not the original bf16 release)",
        "model_dir": str(SMOLLM2),
        "model_sha256": hashlib.sha256((SMOLLM2 / "model.safetensors").read_bytes()).hexdigest(),
        "tokenizer_json_sha256": hashlib.sha256((SMOLLM2 / "tokenizer.json").read_bytes()).hexdigest(),
        "config": {k: cfg.get(k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                           "num_key_value_heads", "vocab_size", "rope_theta", "rms_norm_eps",
                                           "tie_word_embeddings")},
        "special_ids": {"endoftext": 0, "bos_im_start": tok.bos_token_id, "eos_im_end": tok.eos_token_id,
                        "pad": tok.pad_token_id},
        "versions": VERSIONS,
        "notes": [
            "tokenize[i].ids = AutoTokenizer (fast, tokenizer.json).encode(text, add_special_tokens=False); identical "
            "to tokenizers.Tokenizer.from_file(tokenizer.json).encode(text, add_special_tokens=False).ids",
            "special tokens written in the text (e.g. '<|im_start|>', '<|endoftext|>', '<repo_name>') are matched as "
            "special tokens by the HF tokenizer even with add_special_tokens=False",
            "add_special_tokens=True adds nothing (add_bos_token false, no post-processor template)",
            "the chat template inserts a default system prompt ('You are a helpful AI assistant named SmolLM, "
            "trained by Hugging Face') when the first message is not a system message",
            "greedy: model.generate(do_sample=False, max_new_tokens=32, eos_token_id=2); new_ids include the final "
            "eos id 2 when it stopped there; text is the decode of new_ids without the eos",
            "logits: see smollm2_logits.npz and README.md",
        ],
        "tokenize": tokenize,
        "tokenize_add_special_tokens": with_special,
        "chat": chats,
        "greedy": greedy,
        "logits": {"file": "smollm2_logits.npz", "top_k": TOPK, "inputs": logit_meta},
    }
    dump_json(REFS / "smollm2.json", out)


# ------------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="tokenizer,tiny,smollm2,minicpm")
    ap.add_argument("--tf4-python", default=str(TF4_PYTHON))
    args = ap.parse_args()
    parts = set(args.only.split(","))
    REFS.mkdir(parents=True, exist_ok=True)
    print("versions:", VERSIONS)
    if "tokenizer" in parts:
        make_tiny_tokenizer.write_tokenizer(TINY_TOK)
        print(f"tiny tokenizer -> {TINY_TOK}")
    tok = AutoTokenizer.from_pretrained(str(TINY_TOK))
    assert len(tok) == make_tiny_tokenizer.VOCAB_SIZE
    if "tiny" in parts:
        run_tiny(tok)
    if "smollm2" in parts:
        run_smollm2()
    if "minicpm" in parts:
        subprocess.run([args.tf4_python, str(Path(__file__).with_name("record_minicpm_tokenizer.py"))], check=True)


if __name__ == "__main__":
    main()
