"""Known answers for the numbers users read: the bench arithmetic (tokens/s, TTFT, J/token, decode
efficiency with KV bytes, cost) driven through `run_bench` by a fake model whose clock and energy
counter advance by known amounts; GPTQ against round-to-nearest on a seeded layer; the calibrator's
Hessians against the reference forward's own linear inputs. Each test fails if its feature breaks
(checked by breaking the code on purpose; see benchmarks/results/mutation-report.md)."""
from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest

from edge_llm.bench import runner
from edge_llm.bench.report import render_markdown

# ---- the bench, end to end on a fake model ------------------------------------------------------

PP, TG, DEPTHS, REPS = 16, 8, (0, 100), 2
PREFILL_S_PER_TOKEN = 1 / 64          # pp16 takes 0.25 s: 64 tok/s, TTFT 250 ms
STEP_S = (0.04, 0.06)                 # decode steps alternate: mean 50 ms, 20 tok/s
PREFILL_UJ_PER_TOKEN = 2_000_000      # 2 J per prefilled token
DECODE_UJ_PER_TOKEN = 500_000         # 0.5 J per decoded token
WEIGHTS_BYTES = 1_000_000
KV = {"dtype": "float32", "num_layers": 4, "num_kv_heads": 4, "head_dim": 64}
KV_PER_POSITION = 2 * 4 * 4 * 64 * 4  # keys and values, float32: 8192 bytes
BANDWIDTH = 40e6                      # bytes/s
PRICE_KWH, DEVICE_PRICE, YEARS, DUTY = 0.15, 500.0, 5.0, 0.5


class _Spec(dict):
    """A manifest section readable both as a mapping and through attributes."""
    __getattr__ = dict.__getitem__


class _FakeModel:
    """Yields records whose `seconds` are known and, before each, adds known microjoules to a RAPL file."""

    def __init__(self, counter):
        self.counter, self.uj = counter, 1_000_000
        self.session = SimpleNamespace(threads=1)
        self.tokenizer = SimpleNamespace(vocab_size=64)

    def _spend(self, uj):
        self.uj += uj
        self.counter.write_text(f"{self.uj}\n")

    def cache(self):
        return SimpleNamespace(nbytes=12345)

    def stream(self, ids, *, params, max_new_tokens, ignore_eos):
        assert params.temperature == 0 and ignore_eos
        self._spend(PREFILL_UJ_PER_TOKEN * len(ids))
        yield SimpleNamespace(index=0, seconds=len(ids) * PREFILL_S_PER_TOKEN)
        for i in range(1, max_new_tokens):
            self._spend(DECODE_UJ_PER_TOKEN)
            yield SimpleNamespace(index=i, seconds=STEP_S[i % 2])


def _fake_package(manifest) -> dict:
    return {"path": "fake", "name": "fake", "format_version": 2, "exporter": None,
            "shape": {"architecture": "Fake", "num_layers": 4, "hidden_size": 256}, "parameters": None,
            "quantization": {"precision": "int4", "block_size": 128, "symmetric": False},
            "kv_cache": {**KV, "bytes_per_position": KV_PER_POSITION},
            "source": {}, "package_bytes": 2 * WEIGHTS_BYTES, "weights_file_bytes": WEIGHTS_BYTES,
            "source_weights_bytes": None, "compression": None}


@pytest.fixture()
def bench_report(tmp_path):
    """Function-scoped on purpose: each test re-runs the (fast, fake) bench, so a mutation tool sees
    which test reads which figure."""
    root = tmp_path
    rapl = root / "sys/class/powercap/intel-rapl:0"
    rapl.mkdir(parents=True)
    (rapl / "name").write_text("package-0\n")
    (rapl / "max_energy_range_uj").write_text("262143328850\n")
    counter = rapl / "energy_uj"
    counter.write_text("1000000\n")
    manifest = SimpleNamespace(model=_Spec(context_length=256, vocab_size=64),
                               kv=_Spec({**KV, "bytes_per_position": KV_PER_POSITION}), data={})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "load_manifest", lambda path: manifest)
        mp.setattr(runner, "package_summary", lambda path, m: _fake_package(m))
        mp.setattr(runner, "measure_read_bandwidth", lambda mib, threads: {
            "best_bytes_per_s": BANDWIDTH, "array_bytes": mib << 20, "method": "fake",
            "threads_1": {"threads": 1, "best_bytes_per_s": BANDWIDTH}})
        fake_api = SimpleNamespace(Model=SimpleNamespace(load=lambda path, threads=None: _FakeModel(counter)))
        mp.setitem(sys.modules, "edge_llm.api", fake_api)       # what `from ..api import Model` finds
        return runner.run_bench(root, threads_list=[1], pp=[PP], tg=TG, depths=DEPTHS, reps=REPS, warmup=1,
                                bandwidth_mib=8, idle_seconds=0.0, energy_root=root, price_per_kwh=PRICE_KWH,
                                device_price=DEVICE_PRICE, lifetime_years=YEARS, duty_cycle=DUTY,
                                command=["test"])


def _tests(report) -> dict:
    return {t["test"]: t for t in report["runs"][0]["tests"]}


def test_bench_prefill_tokens_per_s_and_ttft(bench_report):
    pp = _tests(bench_report)[f"pp{PP}"]
    assert [r["tokens_per_s"] for r in pp["reps"]] == [64.0] * REPS
    assert pp["tokens_per_s"]["mean"] == 64.0 and pp["tokens_per_s"]["n"] == REPS
    assert pp["ttft_ms"]["mean"] == pytest.approx(250.0)
    assert len(pp["warmup_reps"]) == 1


def test_bench_decode_tokens_per_s_and_latency_percentiles(bench_report):
    for name in (f"tg{TG}", f"tg{TG} @ d100"):
        tg = _tests(bench_report)[name]
        assert tg["tokens_per_s"]["mean"] == pytest.approx(TG / (TG * 0.05))          # 20 tok/s
        assert all(len(r["step_seconds"]) == TG for r in tg["reps"])
        assert tg["itl_ms"]["p50"] == pytest.approx(50.0) and tg["itl_ms"]["p99"] == pytest.approx(60.0)
        assert tg["itl_ms"]["mean"] == pytest.approx(50.0) and tg["itl_ms"]["n"] == TG * REPS


def test_bench_joules_per_token_measured(bench_report):
    t = _tests(bench_report)
    assert bench_report["energy"]["measured"] is True
    pp, tg = t[f"pp{PP}"]["energy_per_token"], t[f"tg{TG}"]["energy_per_token"]
    assert pp["joules"]["mean"] == pytest.approx(2.0) and pp["label"] == "measured"
    assert tg["joules"]["mean"] == pytest.approx(0.5) and tg["measured"] is True
    assert t[f"pp{PP}"]["reps"][0]["energy"]["joules"] == pytest.approx(2.0 * PP)


@pytest.mark.parametrize("depth", DEPTHS)
def test_bench_decode_efficiency_counts_weights_and_kv(bench_report, depth):
    tg = _tests(bench_report)[f"tg{TG}" + (f" @ d{depth}" if depth else "")]
    mean_context = max(depth, 1) + (TG + 1) / 2          # the context grows by one each timed step
    per_token = WEIGHTS_BYTES + KV_PER_POSITION * mean_context
    e = tg["efficiency"]
    assert e["mean_context"] == mean_context
    assert e["bytes_per_token"] == pytest.approx(per_token, rel=1e-12)
    assert e["bytes_per_s"] == pytest.approx(20.0 * per_token, rel=1e-12)
    assert e["fraction"] == pytest.approx(20.0 * per_token / BANDWIDTH, rel=1e-12)


def test_bench_run_cost_includes_energy_and_hardware(bench_report):
    c = bench_report["runs"][0]["cost"]
    assert c["test"] == f"tg{TG}"                       # the shallowest decode test
    electricity = 0.5 * 1e6 / 3.6e6 * PRICE_KWH          # J/token x 1e6 tokens / (J per kWh) x price
    tokens = 20.0 * 86_400 * 365 * YEARS * DUTY
    hardware = DEVICE_PRICE / tokens * 1e6
    assert c["electricity_per_mtok"] == pytest.approx(electricity, rel=1e-12)
    assert c["hardware_per_mtok"] == pytest.approx(hardware, rel=1e-12)
    assert c["total_per_mtok"] == pytest.approx(electricity + hardware, rel=1e-12)
    assert c["tokens_per_currency"] == pytest.approx(1e6 / (electricity + hardware), rel=1e-12)
    assert c["lifetime_tokens"] == pytest.approx(tokens)
    assert c["assumptions"]["energy_measured"] is True


def test_bench_markdown_shows_the_known_figures(bench_report):
    md = render_markdown(bench_report)
    assert f"| pp{PP} | 1 | 64.00 ± 0.00 |" in md
    assert f"| tg{TG} | 1 | 20.00 ± 0.00 |" in md
    assert f"| pp{PP} | 1 | 250.00 ± 0.00 | — | — | — |" in md
    assert f"| tg{TG} | 1 | 0.5 | " in md and f"| pp{PP} | 1 | 2 | " in md      # J/token (W is wall-clock)
    deep = WEIGHTS_BYTES + KV_PER_POSITION * (100 + 4.5)                   # 1,856,064 bytes per token
    assert f"| tg{TG} @ d100 | 1 | 20.00 | {deep / 2**20:.1f} | 0.04 | {20 * deep / BANDWIDTH:.0%} |" in md


# ---- GPTQ against round to nearest ---------------------------------------------------------------

def _layer(seed: int = 0, n: int = 32, k: int = 256, rows: int = 1024):
    """A seeded weight and calibration inputs with correlated features (what GPTQ exploits)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k)).astype(np.float32)
    mix = rng.standard_normal((k, k)).astype(np.float32) / np.sqrt(k)
    x = (rng.standard_normal((rows, k)).astype(np.float32) @ (np.eye(k, dtype=np.float32) + 2 * mix))
    h = (x.T.astype(np.float64) @ x) / rows
    return w, x, h


def _output_error(x, w, wq) -> float:
    return float(np.square(x @ w.T - x @ wq.T).sum())


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("block", [32, 128])
def test_gptq_output_error_below_rtn(symmetric, block):
    from edge_llm.export.gptq import gptq_quantize
    from edge_llm.export.quant import dequantize_int4, quantize_int4

    w, x, h = _layer()
    rtn = dequantize_int4(quantize_int4(w, block_size=block, symmetric=symmetric))
    clip = dequantize_int4(quantize_int4(w, block_size=block, symmetric=symmetric, clip_search=True))
    g = gptq_quantize(w, h, block_size=block, symmetric=symmetric, clip_search=False)
    gc = gptq_quantize(w, h, block_size=block, symmetric=symmetric, clip_search=True)
    assert g.shape == w.shape and g.codes.shape == (32, 256 // block, block // 2)
    e_rtn, e_gptq = _output_error(x, w, rtn), _output_error(x, w, dequantize_int4(g))
    e_clip, e_gptq_clip = _output_error(x, w, clip), _output_error(x, w, dequantize_int4(gc))
    # measured at seed 0: GPTQ's output error is 0.46-0.51x round-to-nearest's
    assert e_gptq < 0.7 * e_rtn, (e_gptq, e_rtn)
    assert e_gptq_clip < 0.7 * e_clip, (e_gptq_clip, e_clip)


@pytest.mark.parametrize("symmetric", [True, False])
def test_gptq_with_identity_hessian_is_round_to_nearest(symmetric):
    """No correlation between inputs: nothing to compensate, so GPTQ must give RTN's codes exactly."""
    from edge_llm.export.gptq import gptq_quantize
    from edge_llm.export.quant import quantize_int4

    w = np.random.default_rng(3).standard_normal((16, 100)).astype(np.float32)   # K padded to 128
    for clip in (False, True):
        a = quantize_int4(w, block_size=64, symmetric=symmetric, clip_search=clip)
        b = gptq_quantize(w, np.eye(100), block_size=64, symmetric=symmetric, clip_search=clip)
        np.testing.assert_array_equal(b.codes, a.codes)
        np.testing.assert_array_equal(b.scales, a.scales)
        if symmetric:
            assert b.zero_points is None
        else:
            np.testing.assert_array_equal(b.zero_points, a.zero_points)


def test_gptq_dead_inputs_are_zeroed_and_stay_exact():
    """An input feature that never fires (zero Hessian row) gets weight 0; the rest is still quantized."""
    from edge_llm.export.gptq import gptq_quantize
    from edge_llm.export.quant import dequantize_int4

    w, x, h = _layer(seed=1, k=64)
    x[:, 5] = 0.0
    h = (x.T.astype(np.float64) @ x) / len(x)
    d = dequantize_int4(gptq_quantize(w, h, block_size=32, symmetric=False))
    assert not d[:, 5].any()
    assert np.isfinite(d).all() and _output_error(x, w, d) < 0.05 * np.square(x @ w.T).sum()


# ---- the calibrator against the reference forward -----------------------------------------------

TINY_CFG = {"architectures": ["MiniCPMForCausalLM"], "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48, "vocab_size": 96,
            "scale_emb": 12.0, "scale_depth": 1.4, "dim_model_base": 16, "rms_norm_eps": 1e-5,
            "max_position_embeddings": 64, "rope_theta": 10000.0}
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class _Recorded(np.ndarray):
    """A weight that records the left operand of every `x @ w.T` the forward makes with it."""

    def __array_finalize__(self, obj):
        self.log = getattr(obj, "log", None)

    def __array_ufunc__(self, ufunc, method, *inputs, **kw):
        plain = [np.asarray(i) if isinstance(i, _Recorded) else i for i in inputs]
        if ufunc is np.matmul and isinstance(inputs[1], _Recorded):
            inputs[1].log.append(np.array(plain[0], np.float64))
        return getattr(ufunc, method)(*plain, **kw)


def _tiny_weights(cfg, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in cfg.expected_shapes().items():
        scale = 1.0 if name.endswith("norm.weight") else 0.2
        base = 1.0 if name.endswith("norm.weight") else 0.0
        out[name] = (base + scale * rng.standard_normal(shape)).astype(np.float32)
    return out


def test_calibrator_hessians_equal_the_reference_forwards_inputs():
    from edge_llm.export.calibrate import Calibrator
    from edge_llm.export.config import config_for
    from edge_llm.export.reference import forward

    cfg = config_for(TINY_CFG)
    weights = _tiny_weights(cfg)
    ids = np.random.default_rng(1).integers(3, cfg.vocab_size, size=(3, 10))
    logs = {name: [] for name in weights if name.split(".")[-2] in LINEARS}

    def recorded_get(name):
        if name in logs:
            w = weights[name].view(_Recorded)
            w.log = logs[name]
            return w
        return weights[name]

    logits = np.concatenate([forward(cfg, recorded_get, seq) for seq in ids])       # (n_seq * T, vocab)
    cal = Calibrator(cfg, weights.__getitem__, ids)
    for i in range(cfg.num_layers):
        for lin in LINEARS:
            part = "self_attn" if lin.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
            name = f"model.layers.{i}.{part}.{lin}.weight"
            x = np.concatenate(logs[name])                                           # the reference's inputs
            assert x.shape[0] == ids.size, name
            np.testing.assert_allclose(cal.hessian(name), x.T @ x / len(x), rtol=2e-4, atol=1e-4,
                                       err_msg=name)
    # the tied head: logits = x Eᵀ, so E H Eᵀ must be the logits' own Gram matrix
    emb = weights["model.embed_tokens.weight"].astype(np.float64)
    head = cal.hessian("model.embed_tokens.weight")
    np.testing.assert_allclose(emb @ head @ emb.T, logits.T.astype(np.float64) @ logits / len(logits),
                               rtol=2e-4, atol=2e-3)


# ---- sampler boundaries ----------------------------------------------------------------------------
# Logits of 0 and -ln 2 give probabilities that are exact binary fractions (0.5, 0.25, 0.25), so a
# cumulative sum can land exactly on top_p and a probability exactly on min_p x p_max.
LN2 = float(np.log(2.0))
HALF_QUARTER_QUARTER = np.array([0.0, -LN2, -LN2])


def _kept(logits, **params):
    from edge_llm.sampling import SamplingParams, _filtered_probs
    ids, probs = _filtered_probs(np.asarray(logits), SamplingParams(**{"temperature": 1.0, **params}))
    assert probs.sum() == pytest.approx(1.0)
    return ids.tolist(), probs.tolist()


@pytest.mark.parametrize("top_p, kept", [(0.5, [0]), (0.5000001, [0, 1]), (0.75, [0, 1]),
                                         (0.7500001, [0, 1, 2]), (1.0, [0, 1, 2])])
def test_top_p_stops_at_the_smallest_prefix_reaching_it(top_p, kept):
    ids, probs = _kept(HALF_QUARTER_QUARTER, top_p=top_p)
    assert ids == kept
    full = np.array([0.5, 0.25, 0.25])[kept]
    np.testing.assert_allclose(probs, full / full.sum())            # renormalised over the nucleus


def test_top_p_boundary_past_the_candidate_window():
    """2048 equal logits: the first 1024 candidates hold exactly half the mass."""
    from edge_llm.sampling import NUCLEUS_CANDIDATES
    x = np.zeros(2 * NUCLEUS_CANDIDATES)
    assert len(_kept(x, top_p=0.5)[0]) == NUCLEUS_CANDIDATES
    assert len(_kept(x, top_p=0.5 + 1e-6)[0]) == NUCLEUS_CANDIDATES + 1       # needs the full sort
    assert len(_kept(x, top_p=0.25)[0]) == NUCLEUS_CANDIDATES // 2


@pytest.mark.parametrize("min_p, kept", [(0.5, [0, 1, 2]), (0.5000001, [0]), (0.0, [0, 1, 2]), (0.99, [0])])
def test_min_p_keeps_tokens_at_exactly_the_threshold(min_p, kept):
    assert _kept(HALF_QUARTER_QUARTER, min_p=min_p)[0] == kept


def test_min_p_applies_in_the_wide_nucleus_fallback_too():
    x = np.concatenate([np.zeros(1500), np.full(1500, -LN2)])         # two levels, 3000 tokens
    ids, _ = _kept(x, top_p=0.999, min_p=0.6)
    assert sorted(ids) == list(range(1500))


def test_temperature_scales_logits_before_softmax():
    # logits 0 and -2 ln 2 at temperature 2 are 0 and -ln 2: probabilities 2/3 and 1/3
    ids, probs = _kept([0.0, -2 * LN2], temperature=2.0)
    assert ids == [0, 1]
    np.testing.assert_allclose(probs, [2 / 3, 1 / 3])
    ids, probs = _kept([0.0, -2 * LN2], temperature=0.5)               # sharper: 16/17 and 1/17
    np.testing.assert_allclose(probs, [16 / 17, 1 / 17])


def test_top_k_keeps_exactly_k_and_top_k_1_is_greedy():
    from edge_llm.sampling import SamplingParams, make_sampler
    x = np.random.default_rng(2).standard_normal(3000).astype(np.float32)
    assert sorted(_kept(x, top_k=5)[0]) == sorted(np.argsort(-x)[:5].tolist())
    for seed in range(20):
        for params in ({"top_k": 1}, {"top_p": 1e-9}, {"min_p": 0.999}):
            s = make_sampler(SamplingParams(temperature=1.5, seed=seed, **params))
            assert s(x) == int(np.argmax(x)), (seed, params)


def test_temperature_zero_is_argmax_whatever_the_filters():
    from edge_llm.sampling import SamplingParams, make_sampler
    x = np.random.default_rng(4).standard_normal(500).astype(np.float32)
    for params in ({}, {"top_k": 3}, {"top_p": 0.1}, {"min_p": 0.5}, {"seed": 9}):
        assert make_sampler(SamplingParams(temperature=0.0, **params))(x) == int(np.argmax(x))


@pytest.mark.parametrize("logits, history, penalty, greedy", [
    ([2.0, 1.9], [0], 1.2, 1),            # positive logit divided: 2.0 / 1.2 = 1.67 < 1.9
    ([2.0, 1.9], [0], 1.0, 0),            # penalty 1 is off
    ([2.0, 1.9], [0], 1.05, 0),           # 2.0 / 1.05 = 1.905 > 1.9
    ([-1.0, -1.1], [0], 1.2, 1),          # negative logit multiplied: -1.2 < -1.1
    ([-1.0, -1.1], [0, 1, 1], 1.2, 0),    # both seen (repeats count once): -1.2 vs -1.32
    ([2.0, 1.9], [], 5.0, 0),             # nothing seen yet
])
def test_repetition_penalty_moves_the_greedy_choice(logits, history, penalty, greedy):
    from edge_llm.sampling import SamplingParams, apply_repetition_penalty, make_sampler
    x = np.asarray(logits, np.float32)
    assert make_sampler(SamplingParams(repetition_penalty=penalty))(x, history) == greedy
    before = x.copy()
    apply_repetition_penalty(x, history, penalty)
    np.testing.assert_array_equal(x, before)                         # the caller's logits are untouched


def test_repetition_penalty_values():
    from edge_llm.sampling import apply_repetition_penalty
    y = apply_repetition_penalty(np.array([3.0, -3.0, 0.0, 1.0], np.float32), [0, 1, 2, 0], 1.5)
    np.testing.assert_allclose(y, [2.0, -4.5, 0.0, 1.0])


@pytest.mark.parametrize("bad", [{"temperature": -0.1}, {"top_k": -1}, {"top_p": 0.0}, {"top_p": 1.01},
                                 {"min_p": -0.1}, {"min_p": 1.0}, {"repetition_penalty": 0.0}])
def test_sampling_params_refuse_out_of_range_values(bad):
    from edge_llm.sampling import SamplingParams
    with pytest.raises(ValueError, match=next(iter(bad))):
        SamplingParams(**bad)


@pytest.mark.xfail(reason="sampling.py caps top_k at NUCLEUS_CANDIDATES (1024) candidates: top_k=2000 keeps "
                          "1024 tokens; reported to the sampling owner", strict=False)
def test_top_k_above_the_candidate_window_keeps_k_tokens():
    assert len(_kept(np.zeros(5000), top_k=2000)[0]) == 2000


# ---- cost: the whole report, so no field, note or default can drift unseen -------------------------

def test_cost_report_every_field():
    from edge_llm.bench.cost import cost_report
    r = cost_report(tokens_per_s=10.0, device_price=1000.0, lifetime_years=2.0, duty_cycle=0.5,
                    joules_per_token=3.6, price_per_kwh=0.6, energy_measured=True, days_per_year=360.0)
    tokens = 10.0 * 86_400 * 360 * 2 * 0.5                                # 311,040,000
    assert r == {
        "currency": "USD", "tokens_per_s": 10.0, "lifetime_tokens": pytest.approx(tokens),
        "hardware_per_mtok": pytest.approx(1000.0 / tokens * 1e6), "electricity_per_mtok": pytest.approx(0.6),
        "total_per_mtok": pytest.approx(1000.0 / tokens * 1e6 + 0.6),
        "tokens_per_currency": pytest.approx(1e6 / (1000.0 / tokens * 1e6 + 0.6)), "kwh_per_mtok": pytest.approx(1.0),
        "assumptions": {"device_price": 1000.0, "lifetime_years": 2.0, "duty_cycle": 0.5, "days_per_year": 360.0,
                        "joules_per_token": 3.6, "price_per_kwh": 0.6, "energy_measured": True},
        "notes": []}


def test_cost_report_says_what_it_left_out():
    from edge_llm.bench.cost import cost_report
    r = cost_report(tokens_per_s=7.5, device_price=600.0)                 # no lifetime, no energy
    assert r["hardware_per_mtok"] is None and r["lifetime_tokens"] is None and r["total_per_mtok"] is None
    assert r["assumptions"]["duty_cycle"] == 1.0 and r["currency"] == "USD"
    assert r["notes"] == ["hardware cost left out: needs device_price and lifetime_years",
                          "electricity left out: needs joules_per_token and price_per_kwh"]
    r = cost_report(tokens_per_s=7.5, lifetime_years=5.0, joules_per_token=1.0, energy_measured=False)
    assert r["hardware_per_mtok"] is None and r["electricity_per_mtok"] is None
    assert r["kwh_per_mtok"] == pytest.approx(1e6 / 3.6e6)
    assert r["notes"] == ["hardware cost left out: needs device_price and lifetime_years",
                          "energy per token is an estimate from a power model, not a measurement",
                          "electricity left out: needs joules_per_token and price_per_kwh"]
    full = cost_report(tokens_per_s=7.5, device_price=600.0, lifetime_years=5.0)   # duty cycle defaults to 1
    assert full["lifetime_tokens"] == pytest.approx(7.5 * 86_400 * 365 * 5)
    assert full["notes"] == ["electricity left out: needs joules_per_token and price_per_kwh"]


def test_cost_days_per_year_reaches_every_figure():
    from edge_llm.bench.cost import hardware_cost_per_mtok, lifetime_tokens, tokens_per_currency
    assert lifetime_tokens(tokens_per_s=1.0, lifetime_years=1.0, days_per_year=100.0) == 8_640_000
    hw = hardware_cost_per_mtok(device_price=86.4, lifetime_years=1.0, duty_cycle=1.0, tokens_per_s=1.0,
                                days_per_year=100.0)
    assert hw == pytest.approx(10.0)
    assert tokens_per_currency(device_price=86.4, lifetime_years=1.0, duty_cycle=1.0, tokens_per_s=1.0,
                               days_per_year=100.0) == pytest.approx(1e5)
    # energy counts only when both its inputs are given
    assert tokens_per_currency(device_price=86.4, lifetime_years=1.0, duty_cycle=1.0, tokens_per_s=1.0,
                               days_per_year=100.0, joules_per_token=3.6) == pytest.approx(1e5)
    assert tokens_per_currency(device_price=86.4, lifetime_years=1.0, duty_cycle=1.0, tokens_per_s=1.0,
                               days_per_year=100.0, price_per_kwh=1.0) == pytest.approx(1e5)


@pytest.mark.parametrize("call, message", [
    (lambda c: c.electricity_cost_per_mtok(-1.0, 0.1), "joules_per_token must be >= 0, got -1.0"),
    (lambda c: c.electricity_cost_per_mtok(1.0, -0.1), "price_per_kwh must be >= 0, got -0.1"),
    (lambda c: c.lifetime_tokens(tokens_per_s=0.0, lifetime_years=1.0), "tokens_per_s must be > 0, got 0.0"),
    (lambda c: c.lifetime_tokens(tokens_per_s=1.0, lifetime_years=1.0, days_per_year=0.0),
     "days_per_year must be > 0, got 0.0"),
    (lambda c: c.lifetime_tokens(tokens_per_s=1.0, lifetime_years=1.0, duty_cycle=1.5),
     r"duty_cycle must be in \(0, 1\], got 1.5"),
    (lambda c: c.hardware_cost_per_mtok(device_price=-1.0, lifetime_years=1.0, duty_cycle=1.0, tokens_per_s=1.0),
     "device_price must be >= 0, got -1.0"),
    (lambda c: c.tokens_per_currency(device_price=0.0, lifetime_years=1.0, duty_cycle=1.0, tokens_per_s=1.0),
     "total cost is zero; tokens per currency unit is unbounded"),
])
def test_cost_input_errors_name_the_value(call, message):
    from edge_llm.bench import cost
    with pytest.raises(cost.CostInputError, match=f"^{message}$"):
        call(cost)


def test_cost_zero_prices_are_allowed_where_meaningful():
    from edge_llm.bench import cost
    assert cost.hardware_cost_per_mtok(device_price=0.0, lifetime_years=1.0, duty_cycle=1.0, tokens_per_s=1.0) == 0
    # a total below one currency unit per Mtok is still a number, not "unbounded"
    assert cost.tokens_per_currency(device_price=0.0, lifetime_years=1.0, duty_cycle=1.0, tokens_per_s=1.0,
                                    joules_per_token=1.8, price_per_kwh=1.0) == pytest.approx(2e6)


def test_minicpm_phone_example_labels():
    from edge_llm.bench.cost import minicpm_phone_example
    ex = minicpm_phone_example()
    assert ex["device"] == "Snapdragon 855 phone (MiniCPM-2B, int4)"
    assert ex["claimed_tokens_per_currency"] == 1.7e6
    assert ex["assumptions"]["duty_cycle"] == 1.0 and ex["hardware_per_mtok"] == pytest.approx(1e6 / 1_971_000)


# ---- sampler: the candidate window, the wide-nucleus fallback, parameters from generation_config ----

def test_no_filter_keeps_the_whole_vocabulary():
    """Without top-k/top-p every token stays a candidate, however large the vocabulary."""
    assert len(_kept(np.zeros(3000))[0]) == 3000
    assert len(_kept(np.zeros(3000), min_p=0.5)[0]) == 3000


@pytest.mark.parametrize("k", [1, 2, 5, 10])
def test_top_k_is_exactly_the_k_best_on_many_draws(k):
    for seed in range(40):
        x = np.random.default_rng(seed).standard_normal(2000).astype(np.float32)
        assert sorted(_kept(x, top_k=k)[0]) == sorted(np.argsort(-x)[:k].tolist()), seed


def test_top_k_near_the_vocabulary_size_and_at_the_window():
    x = np.random.default_rng(8).standard_normal(50).astype(np.float32)
    assert sorted(_kept(x, top_k=49)[0]) == sorted(np.argsort(-x)[:49].tolist())
    x = np.random.default_rng(9).standard_normal(2000).astype(np.float32)
    assert sorted(_kept(x, top_k=1000)[0]) == sorted(np.argsort(-x)[:1000].tolist())


def test_top_k_still_applies_with_top_p():
    x = np.random.default_rng(7).standard_normal(2000).astype(np.float32) * 0.01   # flat: top-p wants many
    ids, _ = _kept(x, top_k=3, top_p=0.99)
    assert sorted(ids) == sorted(np.argsort(-x)[:3].tolist())


def test_min_p_and_top_p_together_keep_the_intersection():
    assert _kept(HALF_QUARTER_QUARTER, min_p=0.6, top_p=0.99)[0] == [0]        # min-p alone: [0]
    assert _kept(HALF_QUARTER_QUARTER, min_p=0.1, top_p=0.5)[0] == [0]         # top-p alone: [0]
    x = np.zeros(3000)                                                        # the wide-nucleus path
    assert len(_kept(x, top_p=0.5, min_p=0.5)[0]) == 1500


def test_wide_nucleus_fallback_exact_boundary_and_temperature():
    assert len(_kept(np.zeros(4096), top_p=0.5)[0]) == 2048                   # cumulative mass exactly 0.5
    two_levels = np.concatenate([np.zeros(1500), np.full(1500, -2 * LN2)])
    ids, probs = _kept(two_levels, top_p=0.9999, temperature=2.0)             # at T=2 the levels are 0, -ln 2
    assert len(ids) == 3000 and probs[0] / probs[-1] == pytest.approx(2.0)
    ids, probs = _kept(two_levels + 400.0, top_p=0.9999)                       # large logits must not overflow
    assert np.isfinite(probs).all() and probs[0] / probs[-1] == pytest.approx(4.0)


def test_wide_nucleus_min_p_is_relative_to_the_best_token():
    one_then_halves = np.concatenate([[0.0], np.full(2999, -LN2)])
    assert _kept(one_then_halves, top_p=0.9, min_p=0.75)[0] == [0]
    two_levels = np.concatenate([np.zeros(1500), np.full(1500, -LN2)])
    assert len(_kept(two_levels, top_p=0.9999, min_p=0.5)[0]) == 3000           # exactly at the threshold: kept


@pytest.mark.parametrize("name, lo, hi", [("presence_penalty", -2, 2), ("frequency_penalty", -2, 2)])
def test_presence_and_frequency_penalty_ranges(name, lo, hi):
    from edge_llm.sampling import SamplingParams
    SamplingParams(**{name: lo}), SamplingParams(**{name: hi})
    for bad in (lo - 1e-6, hi + 1e-6):
        with pytest.raises(ValueError, match=f"^invalid {name}: "):
            SamplingParams(**{name: bad})


def test_logit_bias_range():
    from edge_llm.sampling import SamplingParams
    SamplingParams(logit_bias={1: -100, 2: 100})
    for bad in (-100.5, 100.5):
        with pytest.raises(ValueError, match="^invalid logit_bias: "):
            SamplingParams(logit_bias={1: bad})


def test_sampling_params_from_generation_config():
    from edge_llm.sampling import SamplingParams
    gen = {"do_sample": True, "temperature": 0.7, "top_k": 40, "top_p": 0.9, "repetition_penalty": 1.1}
    assert SamplingParams.from_generation_config(gen) == SamplingParams(temperature=0.7, top_k=40, top_p=0.9,
                                                                      repetition_penalty=1.1)
    assert SamplingParams.from_generation_config({}) == SamplingParams()
    assert SamplingParams.from_generation_config({"do_sample": False, "temperature": 0.7}).temperature == 0.0
    assert SamplingParams.from_generation_config({"temperature": 0.7}).temperature == 0.0   # greedy unless do_sample
    assert SamplingParams.from_generation_config({"top_k": None}).top_k == 0
    p = SamplingParams.from_generation_config(gen, top_k=5, temperature=None)   # None overrides nothing
    assert (p.top_k, p.temperature) == (5, 0.7)


# ---- export validation: each check raises its own error, at its own tolerance ---------------------

class _FakeIOSession:
    def __init__(self, inputs, outputs):
        self.sess = SimpleNamespace(get_inputs=lambda: [SimpleNamespace(name=n) for n in inputs],
                                    get_overridable_initializers=lambda: [],
                                    get_outputs=lambda: [SimpleNamespace(name=n) for n in outputs])


def _io_manifest(layers=2):
    from edge_llm.manifest import IOSpec
    return SimpleNamespace(io=IOSpec(), kv=SimpleNamespace(num_layers=layers))


def test_validator_io_check():
    from edge_llm.export.validate import IOMismatchError, check_io
    io = _io_manifest().io
    inputs = [io.input_ids, io.attention_mask, io.logits_to_keep, *io.per_layer("past_key", 2),
              *io.per_layer("past_value", 2)]
    outputs = [io.logits, *io.per_layer("present_key", 2), *io.per_layer("present_value", 2)]
    check_io(_FakeIOSession(inputs, outputs), _io_manifest())
    with pytest.raises(IOMismatchError, match=r"inputs \['past_key_values.1.value'\], outputs \[\]"):
        check_io(_FakeIOSession(inputs[:-1], outputs), _io_manifest())
    with pytest.raises(IOMismatchError, match=r"outputs \['extra'\]"):
        check_io(_FakeIOSession(inputs, outputs + ["extra"]), _io_manifest())


@pytest.mark.parametrize("precision, kv_dtype, error, raises", [
    ("fp32", "float32", 5e-4, False), ("fp32", "float32", 2e-3, True),
    ("fp32", "float16", 5e-3, False), ("fp32", "float16", 5e-2, True),     # 1e-2 x max |ref| (= 2)
    ("int4", "float32", 0.5, False),                                      # int4: reported, not enforced
])
def test_validator_logits_tolerance(monkeypatch, precision, kv_dtype, error, raises):
    from edge_llm.export import reference
    from edge_llm.export.validate import LogitsMismatchError, check_logits
    ref = np.array([[2.0, 0.0, 1.0], [0.0, 2.0, -1.0]], np.float32)
    monkeypatch.setattr(reference, "forward", lambda cfg, get, ids: ref)
    session = SimpleNamespace(logits_all=lambda ids: ref + np.float32(error) * np.array([[1, 0, 0], [0, 0, -1]]))
    if raises:
        with pytest.raises(LogitsMismatchError, match=f"fp32 logits differ .* by {error:.2e}"):
            check_logits(session, None, None, ids=[1, 2], precision=precision, kv_dtype=kv_dtype)
    else:
        r = check_logits(session, None, None, ids=[1, 2], precision=precision, kv_dtype=kv_dtype)
        assert r["max_abs_diff"] == pytest.approx(error, rel=1e-3) and r["top1_agreement"] == 1.0
    shapes = SimpleNamespace(logits_all=lambda ids: ref[:1])
    with pytest.raises(LogitsMismatchError, match=r"logits shape \(1, 3\), reference \(2, 3\)"):
        check_logits(shapes, None, None, ids=[1, 2], precision=precision, kv_dtype=kv_dtype)


# ---- quantizer: the layout's dtypes, range edges, chunking, defaults ------------------------------

def test_quant_dtypes_and_defaults():
    from edge_llm.export.quant import dequantize_int4, quantize_int4, unpack_nibbles
    w = np.random.default_rng(5).standard_normal((4, 64)).astype(np.float32)
    q = quantize_int4(w)                                   # default: symmetric, block 32
    assert q.block_size == 32 and q.codes.shape == (4, 2, 16) and q.zero_points is None
    assert q.codes.dtype == np.uint8 and q.scales.dtype == np.float32 and unpack_nibbles(q.codes).dtype == np.uint8
    assert dequantize_int4(q).dtype == np.float32
    a = quantize_int4(w, block_size=64, symmetric=False)
    assert a.zero_points.dtype == np.uint8 and dequantize_int4(a).dtype == np.float32


@pytest.mark.parametrize("values, scale, zp", [
    ([0.5, 1.0, 3.0], 0.2, 0),          # all positive: the range still starts at 0 (zeros stay exact)
    ([-3.0, -1.0, -0.5], 0.2, 15),      # all negative: the range still ends at 0
])
def test_asymmetric_range_always_contains_zero(values, scale, zp):
    from edge_llm.export.quant import dequantize_int4, quantize_int4, unpack_nibbles
    w = np.array([values + [values[1]] * 13], np.float32)
    q = quantize_int4(w, block_size=16, symmetric=False)
    assert q.scales[0, 0] == pytest.approx(scale) and unpack_nibbles(q.zero_points)[0, 0] == zp
    w0 = w.copy()
    w0[0, 1] = 0.0
    assert dequantize_int4(quantize_int4(w0, block_size=16, symmetric=False))[0, 1] == 0.0


def test_symmetric_scale_of_exactly_one():
    from edge_llm.export.quant import dequantize_int4, quantize_int4
    w = np.array([[-8.0, 1.0, 2.0, -3.0, 7.0] + [0.0] * 11], np.float32)       # extreme -8: scale exactly 1
    q = quantize_int4(w, block_size=16)
    assert q.scales[0, 0] == 1.0
    np.testing.assert_array_equal(dequantize_int4(q), w)


def test_symmetric_clip_search_pays_on_heavy_tails():
    from edge_llm.export.quant import dequantize_int4, quantize_int4
    w = np.random.default_rng(1).standard_t(3, (64, 256)).astype(np.float32)
    plain = np.square(dequantize_int4(quantize_int4(w, block_size=64)) - w).sum()
    clip = np.square(dequantize_int4(quantize_int4(w, block_size=64, clip_search=True)) - w).sum()
    assert clip < 0.95 * plain


def test_quantize_in_row_chunks_equals_one_chunk(monkeypatch):
    from edge_llm.export import quant
    w = np.random.default_rng(2).standard_normal((10, 64)).astype(np.float32)
    whole = quant.quantize_int4(w, block_size=32, symmetric=False, clip_search=True)
    calls = []
    real = quant._blocks
    monkeypatch.setattr(quant, "_blocks", lambda x, bs: calls.append(len(x)) or real(x, bs))
    parts = quant.quantize_int4(w, block_size=32, symmetric=False, clip_search=True, chunk_rows=3)
    assert calls == [3, 3, 3, 1]                                              # each row once, in chunks
    for a, b in ((whole.codes, parts.codes), (whole.scales, parts.scales), (whole.zero_points, parts.zero_points)):
        np.testing.assert_array_equal(a, b)
