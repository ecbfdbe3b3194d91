"""The one decoder description every family module fills in: a frozen config whose fields are the hooks.

A family differs from the Llama baseline only in the values here (scales, biases, q/k norms, rope,
tied head); the graph builder (export/decoder.py), the numpy reference (export/reference.py) and the
calibrator (export/calibrate.py) read these fields and nothing else, so there is one copy of the maths.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edge_llm.errors import CheckpointError
from edge_llm.manifest import ModelShape

ROPE_TYPES = ("default", "linear", "llama3")
ACTIVATIONS = {"silu": "silu", "gelu_pytorch_tanh": "gelu_tanh"}   # config.json name -> DecoderConfig.hidden_act


@dataclass(frozen=True)
class RopeScaling:
    type: str = "default"             # default | linear | llama3
    factor: float = 1.0
    low_freq_factor: float = 1.0      # llama3 only
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192
    factors: tuple[float, ...] = ()  # longrope: the per-frequency divisors in use (Phi-3's short_factor)
    attention_factor: float = 1.0     # longrope: cos and sin are multiplied by it

    @classmethod
    def from_dict(cls, d: dict | None, *, source: str) -> "RopeScaling":
        if not d:
            return cls()
        kind = d.get("rope_type", d.get("type", "default"))
        if kind not in ROPE_TYPES:
            raise CheckpointError(f"{source}: rope_scaling type '{kind}' is not supported; supported: "
                                  f"{', '.join(ROPE_TYPES)}")
        if kind == "default":
            return cls()
        try:
            factor = float(d["factor"])
            if kind == "linear":
                return cls(type=kind, factor=factor)
            return cls(type=kind, factor=factor, low_freq_factor=float(d["low_freq_factor"]),
                       high_freq_factor=float(d["high_freq_factor"]),
                       original_max_position_embeddings=int(d["original_max_position_embeddings"]))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{source}: rope_scaling {d!r} is incomplete or malformed ({e})") from e


@dataclass(frozen=True)
class DecoderConfig(ModelShape):
    """A pre-norm decoder: RMSNorm, GQA attention with rotary, SwiGLU MLP, optional tied head. Its shape
    (architecture ... vocab_size) is edge_llm.manifest.ModelShape, the manifest's."""
    max_position_embeddings: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]
    rope_scaling: RopeScaling = field(default_factory=RopeScaling)
    embedding_scale: float = 1.0      # MiniCPM scale_emb: h0 = embed(ids) * s
    residual_scale: float = 1.0       # MiniCPM scale_depth/sqrt(L): h += branch * s
    logit_divisor: float = 1.0        # MiniCPM hidden/dim_model_base: logits = head(norm(h)) / s
    attention_bias: bool = False      # Qwen2: q/k/v projections carry a bias
    qk_norm: bool = False             # Qwen3: per-head RMSNorm of q and k before rotary
    hidden_act: str = "silu"          # gated MLP activation: silu | gelu_tanh (Gemma)
    attn_scale: float | None = None   # softmax scale; None: 1/sqrt(head_dim) (Gemma: query_pre_attn_scalar^-0.5)
    branch_norms: bool = False        # Gemma: RMSNorm of each branch's output before the residual add
                                      # (canonical names attn_out_norm / mlp_out_norm)
    sliding_window: int | None = None # keys visible to a sliding layer, the query's own included
    sliding_layers: tuple[int, ...] = ()   # layers that attend through the window
    local_rope_theta: float | None = None  # rotary base of sliding layers (Gemma 3 rope_local_base_freq)
    partial_rotary_factor: float = 1.0     # Phi-4-mini: rotary on the first head_dim * f dims of each head
    nope_layers: tuple[int, ...] = ()      # SmolLM3: layers whose attention has no rotary embedding

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def softmax_scale(self) -> float:
        return 1.0 / math.sqrt(self.head_dim) if self.attn_scale is None else self.attn_scale

    def window(self, layer: int) -> int | None:
        """Keys layer `layer` attends to (its own position included), None for full causal attention."""
        return self.sliding_window if layer in self.sliding_layers else None

    def inv_freq(self, layer: int = 0) -> np.ndarray:
        """Rotary inverse frequencies (head_dim/2,) float32 of layer `layer`, with the checkpoint's rope scaling
        applied, computed as transformers' rope init functions do (sliding layers: local base, no scaling)."""
        hd = self.rotary_dim
        local = self.local_rope_theta is not None and layer in self.sliding_layers
        theta = self.local_rope_theta if local else self.rope_theta
        base = (theta ** (np.arange(0, hd, 2, dtype=np.int64).astype(np.float32) / hd)).astype(np.float32)
        inv = (1.0 / base).astype(np.float32)
        rs = RopeScaling() if local else self.rope_scaling
        if rs.type == "linear":
            return (inv / np.float32(rs.factor)).astype(np.float32)
        if rs.type == "longrope":
            return (np.float32(1.0) / (np.asarray(rs.factors, np.float32) * base)).astype(np.float32)
        if rs.type == "llama3":
            old = rs.original_max_position_embeddings
            low_wavelen, high_wavelen = old / rs.low_freq_factor, old / rs.high_freq_factor
            wavelen = 2 * math.pi / inv
            scaled = np.where(wavelen > low_wavelen, inv / rs.factor, inv)
            smooth = (old / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor)
            smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled
            medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
            return np.where(medium, smoothed, scaled).astype(np.float32)
        return inv

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor the checkpoint must hold, with its Hugging Face name and shape."""
        d, qd, kvd, ff, hd = self.hidden_size, self.q_dim, self.kv_dim, self.intermediate_size, self.head_dim
        shapes = {"model.embed_tokens.weight": (self.vocab_size, d), "model.norm.weight": (d,)}
        for i in range(self.num_layers):
            p = f"model.layers.{i}"
            shapes |= {
                f"{p}.input_layernorm.weight": (d,),
                f"{p}.self_attn.q_proj.weight": (qd, d),
                f"{p}.self_attn.k_proj.weight": (kvd, d),
                f"{p}.self_attn.v_proj.weight": (kvd, d),
                f"{p}.self_attn.o_proj.weight": (d, qd),
                f"{p}.post_attention_layernorm.weight": (d,),
                f"{p}.mlp.gate_proj.weight": (ff, d),
                f"{p}.mlp.up_proj.weight": (ff, d),
                f"{p}.mlp.down_proj.weight": (d, ff),
            }
            if self.attention_bias:
                shapes |= {f"{p}.self_attn.q_proj.bias": (qd,), f"{p}.self_attn.k_proj.bias": (kvd,),
                           f"{p}.self_attn.v_proj.bias": (kvd,)}
            if self.qk_norm:
                shapes |= {f"{p}.self_attn.q_norm.weight": (hd,), f"{p}.self_attn.k_norm.weight": (hd,)}
            if self.branch_norms:
                shapes |= {f"{p}.attn_out_norm.weight": (d,), f"{p}.mlp_out_norm.weight": (d,)}
        if not self.tie_word_embeddings:
            shapes["lm_head.weight"] = (self.vocab_size, d)
        return shapes

    def details(self) -> dict:
        """Family extras recorded in the manifest (informative; the runtime does not read them)."""
        rs = {k: v for k, v in self.rope_scaling.__dict__.items()       # longrope's fields only where set
              if k not in ("factors", "attention_factor") or self.rope_scaling.type == "longrope"}
        return {"rope_theta": self.rope_theta, "rope_scaling": rs,
                "rms_norm_eps": self.rms_norm_eps, "embedding_scale": self.embedding_scale,
                "residual_scale": self.residual_scale, "logit_divisor": self.logit_divisor,
                "attention_bias": self.attention_bias, "qk_norm": self.qk_norm,
                "tie_word_embeddings": self.tie_word_embeddings} | self._later_hooks()

    def _later_hooks(self) -> dict:
        """Hooks added after format 2's first packages, recorded only where set (older manifests unchanged)."""
        later = {"hidden_act": (self.hidden_act, "silu"), "partial_rotary_factor": (self.partial_rotary_factor, 1.0),
                 "nope_layers": (list(self.nope_layers), []), "attn_scale": (self.attn_scale, None),
                 "branch_norms": (self.branch_norms, False), "sliding_window": (self.sliding_window, None),
                 "sliding_layers": (list(self.sliding_layers), []), "local_rope_theta": (self.local_rope_theta, None)}
        return {k: v for k, (v, neutral) in later.items() if v != neutral}


@dataclass(frozen=True)
class ChatDefaults:
    """How a family's chat prompts are tokenized, where its checkpoint folder does not say."""
    builtin_template: str | None = None   # used when the folder ships no chat template
    add_bos: bool = False                 # prepend BOS to the rendered conversation (transformers: no,
                                          # the template writes it; MiniCPM's own chat(): yes)
    stop_strings: tuple[str, ...] = ()


@dataclass(frozen=True)
class TensorSource:
    """Where a canonical (Llama-named) tensor comes from in a family's checkpoint: mlx-lm's sanitize() and
    llama.cpp's modify_tensors as data. `rows` slices a fused tensor along dim 0 (Phi-3 qkv_proj);
    `offset` is added to every value (Gemma stores RMSNorm weights as w for a (1 + w) scale)."""
    name: str
    rows: tuple[int, int] | None = None
    offset: float = 0.0


# (config) -> {canonical name: source} for the tensors whose name or layout differs; the rest pass through
TensorMap = Callable[[DecoderConfig], dict[str, TensorSource]]


@dataclass(frozen=True)
class Family:
    """One registry entry: how to read config.json, what onnxruntime-genai calls the model, and how its
    tensors map onto the canonical names the builder, reference and calibrator read."""
    name: str
    config_from_dict: Callable[[dict, str, str], DecoderConfig]   # (config dict, architecture, source)
    genai_type: str
    chat: ChatDefaults = ChatDefaults()
    tensors: TensorMap | None = None      # None: the checkpoint already uses the canonical names


class ConfigReader:
    """config.json access with one-line errors naming the file and key."""

    def __init__(self, cfg: dict, source: str):
        self.cfg, self.source = cfg, source

    def need(self, key: str) -> Any:
        if key not in self.cfg or self.cfg[key] is None:
            raise CheckpointError(f"{self.source}: missing required key '{key}'")
        return self.cfg[key]

    def get(self, key: str, default: Any) -> Any:
        v = self.cfg.get(key)
        return default if v is None else v

    def fail(self, msg: str) -> CheckpointError:
        return CheckpointError(f"{self.source}: {msg}")


def llama_like(cfg: dict, *, architecture: str, family: str, source: str, **hooks) -> DecoderConfig:
    """The fields every family here shares with Llama's config.json; `hooks` set the family's differences."""
    r = ConfigReader(cfg, source)
    act = r.get("hidden_act", "silu")
    if act not in ACTIVATIONS:
        raise r.fail(f"hidden_act '{act}' is not supported ({', '.join(ACTIVATIONS)})")
    if r.get("pretraining_tp", 1) != 1:
        raise r.fail(f"pretraining_tp {cfg['pretraining_tp']} is not supported")
    if r.get("mlp_bias", False):
        raise r.fail("mlp_bias true is not supported")
    hidden, heads = int(r.need("hidden_size")), int(r.need("num_attention_heads"))
    head_dim = int(r.get("head_dim", 0)) or (hidden // heads)
    if "head_dim" not in cfg and hidden % heads:
        raise r.fail(f"hidden_size {hidden} is not divisible by num_attention_heads {heads}")
    kv = int(r.get("num_key_value_heads", heads))
    if kv <= 0 or heads % kv:
        raise r.fail(f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}")
    # transformers 5 writes rope settings as one `rope_parameters` object (theta inside); 4.x as two keys
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling")
    theta = (cfg.get("rope_parameters") or {}).get("rope_theta", r.get("rope_theta", 10000.0))
    eos = r.get("eos_token_id", [])
    eos = tuple(int(e) for e in eos) if isinstance(eos, list) else (int(eos),)
    bos = cfg.get("bos_token_id")
    fields = dict(
        architecture=architecture, family=family, hidden_size=hidden, num_layers=int(r.need("num_hidden_layers")),
        num_heads=heads, num_kv_heads=kv, head_dim=head_dim, intermediate_size=int(r.need("intermediate_size")),
        vocab_size=int(r.need("vocab_size")), max_position_embeddings=int(r.get("max_position_embeddings", 2048)),
        rms_norm_eps=float(r.get("rms_norm_eps", 1e-6)), rope_theta=float(theta),
        tie_word_embeddings=bool(r.get("tie_word_embeddings", False)),
        bos_token_id=None if bos is None else int(bos), eos_token_ids=eos,
        rope_scaling=RopeScaling.from_dict(rope, source=source), hidden_act=ACTIVATIONS[act],
    )
    fields.update(hooks)
    return DecoderConfig(**fields)


def longrope(rope: dict, cfg: dict, r: ConfigReader, rotary_dim: int) -> RopeScaling:
    """Phi-3 / MiniCPM4 longrope: the short factors (exact up to original_max_position_embeddings, where the
    exporter caps the context) and the attention factor sqrt(1 + ln(max/orig) / ln(orig))."""
    orig = int(rope.get("original_max_position_embeddings") or r.need("original_max_position_embeddings"))
    short = rope.get("short_factor")
    if not isinstance(short, list) or len(short) != rotary_dim // 2 or not isinstance(rope.get("long_factor"), list):
        raise r.fail(f"longrope needs short_factor and long_factor lists of {rotary_dim // 2} values")
    factor = int(r.get("max_position_embeddings", orig)) / orig
    attention = rope.get("attention_factor")
    if attention is None:
        attention = 1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(orig))
    return RopeScaling(type="longrope", factor=factor, original_max_position_embeddings=orig,
                       factors=tuple(float(f) for f in short), attention_factor=float(attention))
