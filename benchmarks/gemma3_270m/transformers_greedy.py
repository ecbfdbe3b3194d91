"""transformers' greedy tokens for the Gemma 3 270M folder (run in the reference venv, never edge-llm's):
    CACHE=$WORK/cache $WORK/refvenv/bin/python benchmarks/gemma3_270m/transformers_greedy.py
reads $CACHE/g270_prompts.json (written by greedy.py), writes $CACHE/g270_tf_greedy.json. The bf16 folder is
loaded in bf16 and upcast, so the embedding scale is bf16(sqrt(640)) = 25.25 as when the model runs in bf16."""
import os
C = os.environ.get('CACHE', os.path.expandvars('$WORK/cache'))
import json, torch
from transformers import AutoModelForCausalLM
torch.set_num_threads(1)
m = AutoModelForCausalLM.from_pretrained(C + "/gemma-3-270m", dtype=torch.bfloat16, attn_implementation="eager").float().eval()
print(type(m).__name__, float(m.model.embed_tokens.embed_scale))
out = {}
for p, ids in json.load(open(C + '/g270_prompts.json')).items():
    with torch.no_grad():
        g = m.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), do_sample=False,
                       max_new_tokens=24, min_new_tokens=24, eos_token_id=None, pad_token_id=0)
    out[p] = g[0, len(ids):].tolist()
    print(p, out[p])
json.dump(out, open(C + '/g270_tf_greedy.json', 'w'))
