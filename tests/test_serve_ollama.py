"""Ollama's API (/api/chat, /api/generate, /api/tags) on the same engine: the official `ollama` Python
client against it, and the wire shapes Ollama sends (NDJSON lines with "done": false, then one
"done": true object with counts and nanosecond durations; errors as {"error": "..."})."""
import json

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serve_helpers import ServerThread  # noqa: E402

from edge_llm.sampling import SamplingParams  # noqa: E402

ASK = [{"role": "user", "content": "Quote John 3:16."}]
GREEDY = {"temperature": 0, "num_predict": 12}
# the fields of Ollama's final streamed object (docs/api.md "Generate a chat completion", response)
FINAL = {"model", "created_at", "done", "done_reason", "total_duration", "load_duration", "prompt_eval_count",
         "prompt_eval_duration", "eval_count", "eval_duration"}


@pytest.fixture(scope="module")
def server():
    with ServerThread(slots=2) as s:
        yield s


def lone(server, messages, n=12):
    return "".join(r.text for r in server.model.chat(messages, params=SamplingParams(), max_new_tokens=n))


def test_chat_streams_ndjson_as_ollama_does(server):
    with httpx.stream("POST", server.url + "/api/chat", json={"model": "tiny", "messages": ASK, "options": GREEDY}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(x) for x in r.iter_lines() if x]
    *pieces, last = lines
    assert pieces and all(p["done"] is False and p["message"]["role"] == "assistant" for p in pieces)
    assert "".join(p["message"]["content"] for p in pieces) == lone(server, ASK)
    assert FINAL <= set(last) and last["done"] is True and last["message"]["content"] == ""
    assert last["eval_count"] == 12 and last["done_reason"] == "length" and last["prompt_eval_count"] > 0
    assert isinstance(last["eval_duration"], int) and last["eval_duration"] > 0      # nanoseconds


def test_generate_templates_the_prompt_unless_raw(server):
    def gen(**extra):
        r = httpx.post(server.url + "/api/generate", json={"prompt": "Quote John 3:16.", "stream": False,
                                                            "options": GREEDY, **extra}, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()
    templated = gen()
    assert templated["done"] is True and templated["response"] == lone(server, ASK)
    raw = gen(raw=True)
    want = "".join(x.text for x in server.model.stream("Quote John 3:16.", params=SamplingParams(), max_new_tokens=12))
    assert raw["response"] == want
    system = gen(system="You are a dictionary.")
    assert system["response"] == lone(server, [{"role": "system", "content": "You are a dictionary."}, *ASK])


def test_tags_and_errors(server):
    tags = httpx.get(server.url + "/api/tags").json()["models"]
    assert tags[0]["name"] == "tiny" and tags[0]["details"]["quantization_level"] == "int4" and tags[0]["size"] > 0
    r = httpx.post(server.url + "/api/chat", json={"messages": ASK, "options": {"temperature": -1}})
    assert r.status_code == 400 and set(r.json()) == {"error"} and "temperature" in r.json()["error"]
    r = httpx.post(server.url + "/api/generate", json={"prompt": ""})
    assert r.status_code == 400 and "prompt" in r.json()["error"]


def test_the_official_ollama_client(server):
    ollama = pytest.importorskip("ollama")
    c = ollama.Client(host=server.url)
    assert [m.model for m in c.list().models] == ["tiny"]
    whole = c.chat(model="tiny", messages=ASK, options=GREEDY)
    parts = list(c.chat(model="tiny", messages=ASK, options=GREEDY, stream=True))
    assert whole.message.content == "".join(p.message.content for p in parts) == lone(server, ASK)
    assert parts[-1].done and parts[-1].eval_count == 12
    with pytest.raises(ollama.ResponseError) as e:
        c.generate(model="tiny", prompt="hi", options={"top_p": 5})
    assert e.value.status_code == 400 and "top_p" in e.value.error
