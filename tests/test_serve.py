"""`edge-llm serve` through real HTTP on loopback: the official openai client, streaming and not, the
prompt cache, /metrics, bad input, the API key, the queue (429) and client disconnects."""
import asyncio
import json
import re
import threading

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

from serve_helpers import GREEDY, NO_EOS, ServerThread  # noqa: E402

from edge_llm.sampling import SamplingParams  # noqa: E402

QUESTIONS = ["Quote John 3:16.", 'What does "lantern" mean?', "请背诵李白的《静夜思》。", "Who was Moses?"]


@pytest.fixture(scope="module")
def server():
    with ServerThread(slots=2, max_queue=8) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def lone(server, messages, max_tokens=40):
    """The reply the library gives for `messages` on its own (greedy)."""
    recs = server.model.chat(messages, params=SamplingParams(), max_new_tokens=max_tokens)
    return "".join(r.text for r in recs)


def _messages(q):
    return [{"role": "user", "content": q}]


# ------------------------------------------------------------------------------------------- the API


def test_openai_client_chat_non_streaming(server, client):
    r = client.chat.completions.create(model="tiny", messages=_messages(QUESTIONS[0]), max_tokens=40, **GREEDY)
    assert r.choices[0].message.content == lone(server, _messages(QUESTIONS[0]))
    assert r.choices[0].finish_reason in ("stop", "length") and r.model == "tiny"
    u = r.usage
    assert u.prompt_tokens > 0 and u.completion_tokens > 0 and u.total_tokens == u.prompt_tokens + u.completion_tokens
    extra = u.model_extra["edge_llm"]
    assert extra["ttft_s"] > 0 and extra["decode_tokens_per_s"] > 0
    assert extra["energy"] in ("estimated", "measured") and extra["joules"] > 0 and extra["cost"] > 0


def test_openai_client_chat_streaming_with_usage(server, client):
    stream = client.chat.completions.create(model="tiny", messages=_messages(QUESTIONS[1]), max_tokens=40, stream=True,
                                            stream_options={"include_usage": True}, **GREEDY)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == lone(server, _messages(QUESTIONS[1]))
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_openai_client_completions(server, client):
    expected = server.model.generate("In the beginning", max_new_tokens=20)
    r = client.completions.create(model="tiny", prompt="In the beginning", max_tokens=20, **GREEDY)
    assert r.choices[0].text == expected
    s = client.completions.create(model="tiny", prompt="In the beginning", max_tokens=20, stream=True, **GREEDY)
    assert "".join(c.choices[0].text for c in s if c.choices) == expected


# Concurrent requests decode together (batched): on this int8-activation package a batched row rounds
# differently from a lone one, so a reply may leave its lone text at a near-tie (docs/serve.md,
# "Batched decoding"). Equality with the lone text is tested on float32-activation packages, where it
# holds token for token: tests/test_batch.py.


def test_stop_seed_and_logit_bias_reach_the_generator(server, client):
    plain = client.chat.completions.create(model="tiny", messages=_messages(QUESTIONS[0]), max_tokens=40, **GREEDY)
    text = plain.choices[0].message.content
    word = text.split()[3]
    cut = client.chat.completions.create(model="tiny", messages=_messages(QUESTIONS[0]), max_tokens=40, stop=[word],
                                         **GREEDY)
    assert cut.choices[0].finish_reason == "stop" and cut.choices[0].message.content == text[:text.index(word)]
    first = server.model.tokenizer.encode(text, bos=False)[0]
    biased = client.chat.completions.create(model="tiny", messages=_messages(QUESTIONS[0]), max_tokens=40,
                                            logit_bias={str(first): -100}, **GREEDY)
    assert biased.choices[0].message.content != text
    sampled = [client.chat.completions.create(model="tiny", messages=_messages(QUESTIONS[3]), max_tokens=30,
                                              temperature=1.0, seed=7, extra_body={"cache_prompt": False})
               .choices[0].message.content for _ in range(2)]
    assert sampled[0] == sampled[1]


def test_resent_history_prefills_only_the_new_turn(server, client):
    history = _messages("Tell me about the lantern.")
    r1 = client.chat.completions.create(model="tiny", messages=history, max_tokens=30, **GREEDY)
    reply = r1.choices[0].message.content
    history += [{"role": "assistant", "content": reply}, {"role": "user", "content": "And the candle?"}]
    r2 = client.chat.completions.create(model="tiny", messages=history, max_tokens=30, **GREEDY)
    u1, u2 = r1.usage, r2.usage
    cached, prefilled = u2.prompt_tokens_details.cached_tokens, u2.model_extra["edge_llm"]["prefill_tokens"]
    first_turn = u1.prompt_tokens + u1.completion_tokens - 1       # what the first request left in its cache
    assert cached >= first_turn - 2                                 # (the reply's last token or two may re-tokenize)
    new_turn = u2.prompt_tokens - first_turn
    assert prefilled == u2.prompt_tokens - cached and prefilled <= new_turn + 2
    # without the cache the whole conversation is computed
    r3 = client.chat.completions.create(model="tiny", messages=history, max_tokens=30, extra_body={"cache_prompt": False},
                                        **GREEDY)
    assert r3.usage.prompt_tokens_details.cached_tokens == 0
    assert r3.usage.model_extra["edge_llm"]["prefill_tokens"] == u2.prompt_tokens


def test_an_identical_prompt_is_served_from_the_cache_exactly(server, client):
    msgs = _messages("What is a candle?")
    r1 = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=30, **GREEDY)
    r2 = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=30, **GREEDY)
    assert r2.usage.prompt_tokens_details.cached_tokens == r2.usage.prompt_tokens     # no prefill at all
    assert r2.usage.model_extra["edge_llm"]["prefill_tokens"] == 0
    assert r1.choices[0].message.content == r2.choices[0].message.content == lone(server, msgs, 30)


def test_models_health_and_page(server, client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert httpx.get(server.url + "/v1/models/tiny").json()["id"] == "tiny"
    assert httpx.get(server.url + "/v1/models/other").status_code == 404
    h = httpx.get(server.url + "/health").json()
    assert h["status"] == "ok" and h["slots"] == 2
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/v1/chat/completions" in page.text and "<script>" in page.text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text), "the page must not load anything remote"
    assert "default-src 'self'" in page.headers["content-security-policy"]


METRIC_LINE = re.compile(r'^[a-z_:][a-z0-9_:]*(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [-+0-9.eInf]+$')


def test_metrics_in_prometheus_text_format(server, client):
    client.chat.completions.create(model="tiny", messages=_messages(QUESTIONS[0]), max_tokens=5, **GREEDY)
    r = httpx.get(server.url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = [x for x in r.text.splitlines() if x and not x.startswith("#")]
    bad = [x for x in lines if not METRIC_LINE.match(x)]
    assert not bad, bad[:3]
    values = {x.rsplit(" ", 1)[0]: float(x.rsplit(" ", 1)[1]) for x in lines}
    assert values['edge_llm_requests_total{endpoint="/v1/chat/completions",code="200"}'] >= 1
    assert values["edge_llm_generated_tokens_total"] >= 5
    assert values['edge_llm_energy_joules_total{energy="estimated"}'] + \
        values.get('edge_llm_energy_joules_total{energy="measured"}', 0) > 0
    assert values["edge_llm_time_to_first_token_seconds_count"] >= 1
    assert values['edge_llm_time_to_first_token_seconds_bucket{le="+Inf"}'] == \
        values["edge_llm_time_to_first_token_seconds_count"]
    for name in ("requests_running", "requests_queued", "prompt_cache_bytes", "cost_total"):
        assert any(k.startswith("edge_llm_" + name) for k in values), name


# ------------------------------------------------------------------------------------------- bad input

LONG = "word " * 3000


@pytest.mark.parametrize("body,status,needle", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', 400, "not valid JSON"),
    (b"\xff\xfe", 400, "UTF-8"),
    ({"messages": "hi"}, 400, "'messages'"),
    ({"messages": []}, 400, "'messages'"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "unknown role"),
    ({"messages": [{"role": "user", "content": 5}]}, 400, "content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "text parts"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, 400, "'temperature'"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": 2.5}, 400, "'temperature'"),
    ({"messages": [{"role": "user", "content": "hi"}], "top_p": 0}, 400, "'top_p'"),
    ({"messages": [{"role": "user", "content": "hi"}], "presence_penalty": 3}, 400, "'presence_penalty'"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1.5}, 400, "'max_tokens'"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": True}, 400, "'max_tokens'"),
    ({"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, 400, "'stream'"),
    ({"messages": [{"role": "user", "content": "hi"}], "stream_options": {"include_usage": True}}, 400, "stream"),
    ({"messages": [{"role": "user", "content": "hi"}], "stop": [1, 2]}, 400, "'stop'"),
    ({"messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]}, 400, "'stop'"),
    ({"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"x": 1}}, 400, "logit_bias"),
    ({"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"99999999": 1}}, 400, "vocabulary"),
    ({"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"5": 500}}, 400, "logit_bias"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 3}, 400, "n=1"),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, 400, "tools"),
    ({"messages": [{"role": "user", "content": "hi"}], "logprobs": True}, 400, "logprobs"),
    ({"messages": [{"role": "user", "content": LONG}]}, 400, "context"),
])
def test_bad_chat_requests_get_openai_errors(server, body, status, needle):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(server.url + "/v1/chat/completions", content=data, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err["message"] and err["type"] == "invalid_request_error"
    assert "Traceback" not in r.text


@pytest.mark.parametrize("body,needle", [
    ({"prompt": 5}, "'prompt'"),
    ({"prompt": ["a", "b"]}, "'prompt'"),
    ({"prompt": [1, 999999]}, "vocabulary"),
    ({"prompt": "x", "echo": True}, "echo"),
    ({"prompt": LONG}, "context"),
])
def test_bad_completion_requests(server, body, needle):
    r = httpx.post(server.url + "/v1/completions", json=body)
    assert r.status_code == 400 and needle in r.json()["error"]["message"], r.text


def test_props_and_the_page_start_from_the_models_sampling_defaults(server):
    """/props (llama-server's) carries the package's generation_config; the page fills its fields from
    it and sends no hard-coded temperature."""
    d = server.model.sampling()
    p = httpx.get(server.url + "/props").json()["default_generation_settings"]
    assert p["params"]["temperature"] == d.temperature and p["params"]["top_p"] == d.top_p
    assert p["n_ctx"] == server.model.context_length and p["params"]["n_predict"] == 1024
    page = httpx.get(server.url + "/").text
    assert 'fetch("/props"' in page and "p.temperature" in page
    assert not re.search(r'id="(temperature|max_tokens)"[^>]*value=', page)


def test_a_prompt_too_long_names_its_own_field(server):
    r = httpx.post(server.url + "/v1/completions", json={"prompt": LONG})
    assert r.json()["error"]["param"] == "prompt" and r.json()["error"]["code"] == "context_length_exceeded"
    r = httpx.post(server.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": LONG}]})
    assert r.json()["error"]["param"] == "messages" and r.json()["error"]["code"] == "context_length_exceeded"


def test_transport_level_errors_are_openai_shaped(server):
    r = httpx.post(server.url + "/v1/chat/completions", content=b"x" * ((1 << 20) + 1),
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = httpx.post(server.url + "/v1/chat/completions", content=b"{}", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["error"]["message"]
    r = httpx.get(server.url + "/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()
    r = httpx.get(server.url + "/v1/chat/completions")
    assert r.status_code == 405 and "error" in r.json()
    assert httpx.get(server.url + "/health").json()["status"] == "ok"


def test_max_tokens_is_capped_by_the_context():
    with ServerThread(context_length=64, slots=1) as s:
        r = httpx.post(s.url + "/v1/chat/completions", json={
            "messages": _messages("Hi"), "max_tokens": 5000, "logit_bias": NO_EOS, **GREEDY}, timeout=60).json()
        u = r["usage"]
        assert u["prompt_tokens"] + u["completion_tokens"] == 64 and r["choices"][0]["finish_reason"] == "length"


def test_server_max_tokens_is_the_default_and_the_cap():
    """serve -n N: a request without max_tokens gets N tokens, one asking more is clamped to N, one
    asking fewer gets what it asked (as llama-server's -n)."""
    with ServerThread(max_tokens=7, slots=1) as s:
        def reply(**extra):
            return httpx.post(s.url + "/v1/chat/completions", json={
                "messages": _messages("Hi"), "logit_bias": NO_EOS, **GREEDY, **extra}, timeout=60).json()
        for extra, n in (({}, 7), ({"max_tokens": 500}, 7), ({"max_completion_tokens": 500}, 7),
                         ({"max_tokens": 3}, 3)):
            r = reply(**extra)
            assert (r["usage"]["completion_tokens"], r["choices"][0]["finish_reason"]) == (n, "length"), extra
        r = httpx.post(s.url + "/v1/completions", json={"prompt": "In the", "max_tokens": 500, "logit_bias": NO_EOS},
                       timeout=60).json()
        assert r["usage"]["completion_tokens"] == 7
        assert httpx.get(s.url + "/props").json()["default_generation_settings"]["params"]["n_predict"] == 7


# ------------------------------------------------------------------------------------------- security


def test_api_key_is_required_on_the_api_only():
    with ServerThread(api_key="s3cret") as s:
        assert httpx.get(s.url + "/v1/models").status_code == 401
        r = httpx.get(s.url + "/v1/models", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert httpx.post(s.url + "/v1/chat/completions", json={"messages": _messages("hi")}).status_code == 401
        assert httpx.get(s.url + "/metrics").status_code == 401
        assert httpx.get(s.url + "/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="s3cret", max_retries=0)
        assert c.chat.completions.create(model="tiny", messages=_messages("hi"), max_tokens=3).usage
        assert httpx.get(s.url + "/health").status_code == 200 and httpx.get(s.url + "/").status_code == 200


def test_host_header_is_checked_on_loopback():
    with ServerThread(allowed_hosts=["127.0.0.1", "localhost"]) as s:
        assert httpx.get(s.url + "/health").status_code == 200
        assert httpx.get(s.url + "/health", headers={"Host": "evil.example:8080"}).status_code == 400
        assert httpx.get(s.url + "/health", headers={"Host": "localhost:1234"}).status_code == 200
    from edge_llm.serve.app import host_name
    assert [host_name(h) for h in ("[::1]:8080", "[::1]", "a.b:1", "a.b", "::1")] == ["::1", "::1", "a.b", "a.b", "::1"]


# ------------------------------------------------------------------------------------------- queue, disconnects


def _long_stream(url, started: threading.Event, stop: threading.Event):
    body = {"messages": _messages("Tell me everything."), "max_tokens": 1900, "logit_bias": NO_EOS, "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as r:
        for _ in r.iter_lines():
            started.set()
            if stop.is_set():
                break


def test_full_queue_gets_429_with_retry_after():
    with ServerThread(slots=1, max_queue=0) as s:
        started, stop = threading.Event(), threading.Event()
        t = threading.Thread(target=_long_stream, args=(s.url, started, stop))
        t.start()
        try:
            assert started.wait(30)
            r = httpx.post(s.url + "/v1/chat/completions", json={"messages": _messages("hi"), "max_tokens": 3})
            assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
            assert r.json()["error"]["type"] == "rate_limit_error"
            c = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0)
            with pytest.raises(openai.RateLimitError):
                c.chat.completions.create(model="tiny", messages=_messages("hi"), max_tokens=3)
        finally:
            stop.set()
            t.join()
        assert s.wait_idle(10)
        assert httpx.post(s.url + "/v1/chat/completions", json={"messages": _messages("hi"), "max_tokens": 3}).status_code == 200
        assert s.engine.metrics.rejected.get() == 2


def test_client_disconnect_stops_generation_and_frees_the_slot():
    with ServerThread(slots=1, max_queue=0) as s:
        started, stop = threading.Event(), threading.Event()
        stop.set()                                    # leave after the first line
        _long_stream(s.url, started, stop)
        assert s.wait_idle(5), "the slot was not freed"
        replies = s.engine.metrics.replies
        assert replies.get("cancelled") == 1
        assert s.engine.metrics.generated_tokens.get() < 1900
        # the slot serves the next request at once
        r = httpx.post(s.url + "/v1/chat/completions", json={"messages": _messages("hi"), "max_tokens": 3})
        assert r.status_code == 200


def test_non_streaming_client_disconnect_cancels_too():
    with ServerThread(slots=1, max_queue=0) as s:
        body = {"messages": _messages("Tell me everything."), "max_tokens": 1900, "logit_bias": NO_EOS}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(s.url + "/v1/chat/completions", json=body, timeout=0.3)
        assert s.wait_idle(5)
        assert s.engine.metrics.replies.get("cancelled") == 1


class CountingSession:
    """The model session with a counter on forward (and a switch to make it fail)."""

    def __init__(self, session):
        self._s, self.calls, self.fail = session, 0, False

    def forward(self, ids, cache):
        self.calls += 1
        if self.fail:
            raise RuntimeError("simulated onnxruntime failure")
        return self._s.forward(ids, cache)

    def __getattr__(self, name):
        return getattr(self._s, name)


class CountingPool:
    """The engine's slot pool (batched decoding) with a counter on its forwards and a switch to make them fail."""

    def __init__(self, pool):
        self._p, self.calls, self.fail = pool, 0, False

    def _step(self, fn, *args):
        self.calls += 1
        if self.fail:
            raise RuntimeError("simulated onnxruntime failure")
        return fn(*args)

    def prefill(self, slot, ids):
        return self._step(self._p.prefill, slot, ids)

    def decode(self, slots, tokens):
        return self._step(self._p.decode, slots, tokens)

    def __getattr__(self, name):
        return getattr(self._p, name)


def counting(engine):
    """Count (and break on demand) the model steps `engine` runs: its pool's, or its session's when it takes turns."""
    if engine.batched:
        engine.pool = CountingPool(engine.pool)
        return engine.pool
    engine.session = CountingSession(engine.session)
    return engine.session


@pytest.mark.parametrize("speculate", ["off", "lookup"])    # batched decoding; turns (speculation)
def test_cancel_runs_no_further_model_step(speculate):
    from edge_llm.api import Model
    from edge_llm.paths import BUNDLED
    from edge_llm.serve.engine import Engine
    model = Model.load(BUNDLED, threads=1, speculate=speculate)
    engine = Engine(model, name="tiny", slots=1)
    assert engine.batched == (speculate == "off")
    counter = counting(engine)
    engine.start()

    async def run():
        ids = model.chat_ids(_messages("Tell me everything."))
        job = engine.submit(ids, params=SamplingParams(logit_bias={2: -100}), max_new_tokens=1000)
        n = 0
        async for _ in job.stream():
            n += 1
            if n == 5:
                at_cancel = counter.calls
                job.cancel()
        return n, at_cancel, job.record
    try:
        n, at_cancel, rec = asyncio.run(run())
    finally:
        engine.close()
    # tokens the loop made before the cancel still arrive; no model step starts after it (one may be running)
    assert 0 < at_cancel and counter.calls <= at_cancel + 1, "a step ran after the cancel was seen"
    assert rec.finish_reason == "cancelled" and rec.generated_tokens == n < 1000


def test_a_failing_request_does_not_kill_the_server(server, client):
    real = server.engine.pool
    broken = counting(server.engine)
    broken.fail = True
    try:
        with pytest.raises(openai.InternalServerError) as e:
            client.chat.completions.create(model="tiny", messages=_messages("Who was Noah?"), max_tokens=5)
        assert "simulated onnxruntime failure" in str(e.value) and "Traceback" not in str(e.value)
    finally:
        server.engine.pool = real
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    r = client.chat.completions.create(model="tiny", messages=_messages(QUESTIONS[0]), max_tokens=40, **GREEDY)
    assert r.choices[0].message.content == lone(server, _messages(QUESTIONS[0]))


# ------------------------------------------------------------------------------------------- fuzz

def test_fuzzed_requests_get_a_reply_or_an_openai_error():
    hyp = pytest.importorskip("hypothesis")
    st = hyp.strategies
    leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=False, allow_infinity=False),
                     st.text(max_size=12))
    value = st.recursive(leaf, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids,
                                                                                          max_size=3), max_leaves=6)
    fields = ["model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
              "min_p", "stop", "seed", "presence_penalty", "frequency_penalty", "logit_bias", "stream",
              "stream_options", "n", "logprobs", "cache_prompt", "response_format", "repetition_penalty"]
    message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "wizard", 3]),
                                     "content": st.one_of(st.text(max_size=20), value)})
    body = st.dictionaries(st.sampled_from(fields), value, max_size=6).flatmap(
        lambda d: st.one_of(st.just(d), st.lists(message, max_size=3).map(lambda m: {**d, "messages": m})))

    with ServerThread(context_length=48, slots=2, max_queue=2) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        @hyp.settings(max_examples=150, deadline=None, derandomize=True)
        @hyp.given(body, st.sampled_from(["/v1/chat/completions", "/v1/completions"]))
        def check(b, path):
            r = c.post(path, json=b)
            seen.add(r.status_code)
            assert r.status_code in (200, 400), (b, r.status_code, r.text)
            if r.status_code == 400:
                err = r.json()["error"]
                assert isinstance(err["message"], str) and err["type"] == "invalid_request_error"
            elif b.get("stream") is True:
                assert r.text.rstrip().endswith("data: [DONE]")
            else:
                assert r.json()["usage"]["total_tokens"] <= 48
        seen = set()
        check()
        assert seen == {200, 400}
        assert c.get("/health").json()["status"] == "ok" and s.wait_idle(10)
