"""`--bpw B`: per-tensor bits and blocks chosen by measured error within a byte budget (ExLlamaV2's way).

For every quantized tensor, each option (bits 4 / 6 / 8 × block 32 / 64 / 128) is tried on a sample of its
rows and scored by the relative output error it causes on calibration activations,

    e = Σ_k imp_k Σ_i (Ŵ_ik − W_ik)² / Σ_k imp_k Σ_i W_ik²     (imp_k = mean x_k² over calibration tokens)

— the expected ‖ΔW·x‖² / ‖W·x‖² under a diagonal input covariance, so no tensor is favoured by its name or
its scale. The plan then minimises Σ e over all tensors with the weight file at most B × parameters / 8
bytes: starting from every tensor's cheapest option, it takes the upgrade with the most error removed per
byte until the next one no longer fits (greedy on each tensor's lower convex hull, optimal for the convex
relaxation). Bytes are counted exactly as the exporter stores them (quant.stored_bytes), with each stored
array's alignment padding as an upper bound; a test checks the sum against real packages.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edge_llm.errors import ExportError

from .families import DecoderConfig
from .onnx_writer import ALIGN, SMALL, SMALL_ALIGN
from .quant import dequantize, quantize, stored_bytes
from .recipe import Recipe

OPTIONS = ((4, 128), (4, 64), (4, 32), (6, 128), (6, 64), (6, 32), (8, 128), (8, 64), (8, 32))
SAMPLE_ROWS = 256
FIXED_MARGIN = 16384           # the rotary inv_freq, logits_to_keep and other small constants, generously
CACHE_BYTES = 2 << 30          # float32 weights kept in memory during the sensitivity pass, at most
KL_POSITIONS = 64              # positions per calibration sequence where the sensitivity pass compares logits
SENSITIVITY_PARAMS = 400_000_000   # layer parameters up to which every layer's tensors are measured end to end


@dataclass(frozen=True)
class Option:
    bits: int
    block: int
    nbytes: int
    error: float


@dataclass
class BudgetPlan:
    budget_bytes: int
    parameters: int
    fixed_bytes: int
    choice: dict[str, Option] = field(default_factory=dict)

    @property
    def weight_bytes(self) -> int:
        return self.fixed_bytes + sum(o.nbytes for o in self.choice.values())

    @property
    def bpw(self) -> float:
        return self.weight_bytes * 8 / self.parameters

    def tensors(self) -> dict[str, dict]:
        return {name: {"bits": o.bits, "block_size": o.block} for name, o in self.choice.items()}


def _padding(nbytes: int) -> int:
    return ALIGN if nbytes >= SMALL else SMALL_ALIGN


def tensor_bytes(n: int, k: int, *, bits: int, block: int, recipe: Recipe, gather: bool) -> int:
    """Bytes (with alignment padding as an upper bound) of one (N, K) tensor stored with these settings;
    a table read by GatherBlockQuantized also stores its zero points again in that kernel's layout."""
    sym = recipe.symmetric or bits == 8
    scale_bytes = 2 if recipe.scale_dtype == "float16" else 4
    total = stored_bytes(n, k, bits=bits, block=block, symmetric=sym, scale_bytes=scale_bytes)
    nb = -(-k // block)
    parts = [(4, not sym), (2, True)] if bits == 6 else [(bits, not sym)]
    arrays = []
    for b, has_zp in parts:
        arrays += [n * nb * block * b // 8, n * nb * scale_bytes] + ([n * -(-nb * b // 8)] if has_zp else [])
        if gather and has_zp:
            arrays.append(n * nb)
            total += n * nb
    return total + sum(_padding(a) for a in arrays)


def _as_stored(cfg: DecoderConfig, name: str, w: np.ndarray) -> tuple[np.ndarray, float]:
    """The matrix the exporter quantizes (o_proj/down_proj carry the residual scale, decoder.linear) and that scale."""
    r = cfg.residual_scale if name.endswith(("o_proj.weight", "down_proj.weight")) else 1.0
    return (w if r == 1.0 else w * np.float32(r)), r


def _quantize(w: np.ndarray, recipe: Recipe, bits: int, block: int, imp: np.ndarray | None):
    """As DecoderGraph._quantize does for round-to-nearest recipes: 8-bit symmetric without clip search."""
    return quantize(w, bits=bits, block_size=block, symmetric=recipe.symmetric or bits == 8,
                    clip_search=recipe.clip_search and bits != 8, importance=imp if recipe.importance else None,
                    refine=recipe.refine_scale)


def _relative_error(w: np.ndarray, q, imp: np.ndarray | None) -> float:
    d = (dequantize(q) - w).astype(np.float64) ** 2
    w2 = w.astype(np.float64) ** 2
    if imp is None:
        return float(d.sum() / max(w2.sum(), 1e-30))
    return float((d @ imp).sum() / max(float((w2 @ imp).sum()), 1e-30))


def measure(name: str, w: np.ndarray, recipe: Recipe, imp: np.ndarray | None, *, gather: bool,
            rng: np.random.Generator) -> list[Option]:
    n, k = w.shape
    rows = w if n <= SAMPLE_ROWS else w[np.sort(rng.choice(n, SAMPLE_ROWS, replace=False))]
    opts, seen = [], set()
    for bits, block in OPTIONS:
        bs = recipe.block_for_target(block, k)
        if (bits, bs) in seen:
            continue
        seen.add((bits, bs))
        q = _quantize(rows, recipe, bits, bs, imp)
        opts.append(Option(bits, bs, tensor_bytes(n, k, bits=bits, block=bs, recipe=recipe, gather=gather),
                           _relative_error(rows, q, None if imp is None else imp.astype(np.float64))))
    return opts


def _hull(opts: list[Option]) -> list[Option]:
    """Options on the lower convex hull of (bytes, error), cheapest first: the only ones worth taking."""
    pts = sorted(opts, key=lambda o: (o.nbytes, o.error))
    front = []
    for o in pts:                                  # drop dominated options (more bytes, no less error)
        if not front or o.error < front[-1].error:
            front.append(o)
    hull: list[Option] = []
    for o in front:
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b is above the segment a-o: never the best rate
            if (b.error - a.error) * (o.nbytes - a.nbytes) >= (o.error - a.error) * (b.nbytes - a.nbytes):
                hull.pop()
            else:
                break
        hull.append(o)
    return hull


def solve(options: dict[str, list[Option]], budget: int, fixed: int) -> dict[str, Option]:
    hulls = {name: _hull(opts) for name, opts in options.items()}
    level = {name: 0 for name in hulls}
    used = fixed + sum(h[0].nbytes for h in hulls.values())
    if used > budget:
        return {}
    heap = []

    def push(name):
        h, i = hulls[name], level[name]
        if i + 1 < len(h):
            gain = (h[i].error - h[i + 1].error) / max(h[i + 1].nbytes - h[i].nbytes, 1)
            heapq.heappush(heap, (-gain, name))
    for name in hulls:
        push(name)
    while heap:
        _, name = heapq.heappop(heap)
        h, i = hulls[name], level[name]
        extra = h[i + 1].nbytes - h[i].nbytes
        if used + extra > budget:
            continue                                # too big now; smaller upgrades elsewhere may still fit
        used += extra
        level[name] = i + 1
        push(name)
    return {name: hulls[name][level[name]] for name in hulls}


def quantized_tensors(cfg: DecoderConfig) -> dict[str, tuple[tuple[int, int], bool]]:
    """name -> (shape, read by GatherBlockQuantized) for every tensor the exporter quantizes."""
    out = {}
    for name, shape in cfg.expected_shapes().items():
        if len(shape) == 2:
            out[name] = (shape, name == "model.embed_tokens.weight")
    return out


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def measure_gains(cfg: DecoderConfig, get: Callable[[str], np.ndarray], recipe: Recipe, ids: np.ndarray,
                  importance: dict[str, np.ndarray], probe: dict[str, Option],
                  progress: Callable[[str], None] = lambda name: None) -> dict[str, float]:
    """How much each tensor's relative error costs at the output: quantize that tensor alone with its probe
    option, run the reference forward from its layer on, and divide the mean KL(reference ‖ perturbed) over
    the calibration tokens by the tensor's relative error e. For small errors KL ≈ ½ δᵀFδ is linear in e,
    so gain × e(option) predicts each option's KL; the plan minimises the predicted sum."""
    from .reference import decoder_layer, embed, final_hidden, head_weight_name
    head = head_weight_name(cfg)
    hs = [embed(cfg, get, ids)]
    for i in range(cfg.num_layers):
        hs.append(decoder_layer(cfg, get, i, hs[-1]))
    keep = slice(-KL_POSITIONS, None)      # the head runs on each sequence's last positions only (most context)
    final = final_hidden(cfg, get, hs[-1])[:, keep]
    ref = _log_softmax(final @ get(head).T)
    p_ref = np.exp(ref)

    def kl(logits):
        return float((p_ref * (ref - _log_softmax(logits))).sum(-1).mean())

    measured = _measured_layers(cfg)

    gains = {}
    for name, opt in probe.items():
        if name.startswith("model.layers.") and int(name.split(".")[2]) not in measured:
            continue
        progress(name)
        w, r = _as_stored(cfg, name, get(name))
        wq = dequantize(_quantize(w, recipe, opt.bits, opt.block, importance.get(name))) / np.float32(r)
        local = lambda n, _name=name, _wq=wq: _wq if n == _name else get(n)
        if name == head and not cfg.tie_word_embeddings:         # an untied head: only the last matmul changes
            d = kl(final @ wq.T)
        elif name.startswith("model.layers."):
            layer = int(name.split(".")[2])
            h = hs[layer]
            for i in range(layer, cfg.num_layers):
                h = decoder_layer(cfg, local if i == layer else get, i, h)
            d = kl(final_hidden(cfg, get, h[:, keep]) @ get(head).T)
        else:                     # the embedding table (tied: also the head): a whole forward
            h = embed(cfg, local, ids)
            for i in range(cfg.num_layers):
                h = decoder_layer(cfg, get, i, h)
            d = kl(final_hidden(cfg, get, h[:, keep]) @ local(head).T)
        gains[name] = d / max(opt.error, 1e-12)
    for name in probe:           # layers not measured take the nearest measured layer's gain, tensor by tensor
        if name not in gains:
            i = int(name.split(".")[2])
            j = min(measured, key=lambda m: (abs(m - i), m))
            gains[name] = gains[name.replace(f"model.layers.{i}.", f"model.layers.{j}.", 1)]
    return gains


def _cached(get: Callable[[str], np.ndarray]) -> Callable[[str], np.ndarray]:
    store: dict[str, np.ndarray] = {}

    def cached(name: str) -> np.ndarray:
        if name not in store:
            store[name] = get(name)
        return store[name]
    return cached


def _measured_layers(cfg: DecoderConfig) -> list[int]:
    """Every layer of a small model; a big one (each forward costs seconds in numpy) every k-th layer, the
    first and the last included, so the pass stays within minutes."""
    layer_params = sum(int(np.prod(s)) for n, s in cfg.expected_shapes().items() if n.startswith("model.layers."))
    k = max(1, -(-layer_params // SENSITIVITY_PARAMS))
    return sorted(set(range(0, cfg.num_layers, k)) | {cfg.num_layers - 1})


def plan_budget(cfg: DecoderConfig, get: Callable[[str], np.ndarray], recipe: Recipe, bpw: float | None,
                importance: dict[str, np.ndarray], parameters: int, ids: np.ndarray | None = None,
                progress: Callable[[str], None] = lambda name: None) -> BudgetPlan:
    shapes = cfg.expected_shapes()
    fixed = FIXED_MARGIN + sum(4 * int(np.prod(s)) + SMALL_ALIGN for s in shapes.values() if len(s) != 2)
    rng = np.random.default_rng(0)
    if 4 * sum(int(np.prod(s)) for s in shapes.values()) <= CACHE_BYTES:
        get = _cached(get)    # both passes read every weight, and each measured tensor re-runs the layers after it
    options = {}
    for name, (shape, gather) in quantized_tensors(cfg).items():
        progress(name)
        w, _ = _as_stored(cfg, name, get(name))
        options[name] = measure(name, w, recipe, importance.get(name), gather=gather, rng=rng)
    if ids is not None:        # measured sensitivity: each tensor's error weighted by its effect on the logits
        probe = {name: min(opts, key=lambda o: o.nbytes) for name, opts in options.items()}
        gains = measure_gains(cfg, get, recipe, ids, importance, probe, progress)
        options = {name: [Option(o.bits, o.block, o.nbytes, o.error * gains[name]) for o in opts]
                   for name, opts in options.items()}
    smallest = {name: min(opts, key=lambda o: (o.nbytes, o.error)) for name, opts in options.items()}
    least = fixed + sum(o.nbytes for o in smallest.values())
    if recipe.bpw_margin is not None:       # the default: the smallest package plus a margin
        budget = least + int(recipe.bpw_margin * parameters / 8)
    else:
        budget = int(bpw * parameters / 8)
    plan = BudgetPlan(budget, parameters, fixed, solve(options, budget, fixed))
    if not plan.choice and not recipe.strict_budget:       # a preset on a model too small for it: its smallest
        plan.choice = smallest
    if not plan.choice:
        raise ExportError(f"--bpw {bpw:g} is below the smallest package this model can take "
                          f"({least * 8 / parameters:.2f} bits per weight)")
    return plan
