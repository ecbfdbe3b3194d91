"""edge-llm greedy tokens (24 per prompt, KV cache) for packages of Gemma 3 270M; writes the prompt ids first:
    CACHE=$WORK/cache python benchmarks/gemma3_270m/greedy.py $CACHE/g270-fp32 $CACHE/g270-int4"""
import os
C = os.environ.get('CACHE', os.path.expandvars('$WORK/cache'))
PROMPTS = ['The capital of France is', 'Water boils at a temperature of', 'def fibonacci(n):']
import json, sys
from edge_llm.api import Model
from edge_llm.sampling import SamplingParams
out = {}
m0 = Model.load(sys.argv[1], threads=1)
json.dump({p: m0.tokenizer.encode(p, bos=True) for p in PROMPTS}, open(C + '/g270_prompts.json', 'w'))
for pkg in sys.argv[1:]:
    m = Model.load(pkg, threads=1)
    for p, ids in json.load(open(C + '/g270_prompts.json')).items():
        toks = [r.token_id for r in m.stream(ids, params=SamplingParams(), max_new_tokens=24, ignore_eos=True)]
        out[f"{pkg}|{p}"] = toks
        print(pkg.split('/')[-1], repr(p), toks, repr(m.tokenizer.decode(toks)))
json.dump(out, open(C + '/g270_ours.json', 'w'))
tf = C + '/g270_tf_greedy.json'
if os.path.exists(tf):         # written by transformers_greedy.py from the same prompt ids
    for p, want in json.load(open(tf)).items():
        for pkg in sys.argv[1:]:
            print(f"{pkg.split('/')[-1]} {p!r}: equal to transformers' greedy tokens: {out[f'{pkg}|{p}'] == want}")
