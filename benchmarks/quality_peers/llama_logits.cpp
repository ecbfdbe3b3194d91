// llama-logits: llama.cpp logits for token ids given on stdin, every position, each window from an
// empty KV cache. The quality harness (score.py) feeds the SAME ids it feeds edge-llm, so both sides
// score identical windows; llama.cpp's own tokenizer is never used.
//
//   llama-logits MODEL.gguf [--threads N] [--ctx N] [--kv f32|f16]
//
// Protocol (little-endian, binary): the harness writes int32 n, then n int32 token ids; the tool
// replies int32 n_vocab, then n * n_vocab float32 logits (row = position) and waits for the next
// window. n == 0 or EOF ends it. Diagnostics go to stderr only.
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

static bool read_all(void * buf, size_t n) { return fread(buf, 1, n, stdin) == n; }
static bool write_all(const void * buf, size_t n) { return fwrite(buf, 1, n, stdout) == n; }

int main(int argc, char ** argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [--threads N] [--ctx N] [--kv f32|f16]\n", argv[0]);
        return 2;
    }
    int threads = 1, n_ctx = 512;
    ggml_type kv = GGML_TYPE_F32;   // edge-llm keeps its KV cache in fp32: compare weights, not caches
    for (int i = 2; i + 1 < argc; i += 2) {
        std::string a = argv[i];
        if (a == "--threads") threads = atoi(argv[i + 1]);
        else if (a == "--ctx") n_ctx = atoi(argv[i + 1]);
        else if (a == "--kv") kv = std::string(argv[i + 1]) == "f16" ? GGML_TYPE_F16 : GGML_TYPE_F32;
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "%s: cannot load\n", argv[1]); return 1; }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx; cp.n_batch = n_ctx; cp.n_ubatch = n_ctx; cp.n_seq_max = 1;
    cp.n_threads = threads; cp.n_threads_batch = threads;
    cp.type_k = kv; cp.type_v = kv;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "cannot create a context\n"); return 1; }
    const int32_t n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    llama_batch batch = llama_batch_init(n_ctx, 0, 1);
    std::vector<int32_t> ids;
    for (;;) {
        int32_t n = 0;
        if (!read_all(&n, sizeof n) || n == 0) break;
        if (n < 0 || n > n_ctx) { fprintf(stderr, "window of %d tokens: outside 1..%d\n", n, n_ctx); return 1; }
        ids.resize(n);
        if (!read_all(ids.data(), sizeof(int32_t) * n)) { fprintf(stderr, "short read\n"); return 1; }
        llama_memory_clear(llama_get_memory(ctx), true);    // every window starts fresh
        batch.n_tokens = n;
        for (int32_t i = 0; i < n; i++) {
            if (ids[i] < 0 || ids[i] >= n_vocab) { fprintf(stderr, "token id %d outside the vocabulary\n", ids[i]); return 1; }
            batch.token[i] = ids[i]; batch.pos[i] = i; batch.n_seq_id[i] = 1; batch.seq_id[i][0] = 0; batch.logits[i] = 1;
        }
        if (llama_decode(ctx, batch) != 0) { fprintf(stderr, "llama_decode failed\n"); return 1; }
        if (!write_all(&n_vocab, sizeof n_vocab)) return 1;
        for (int32_t i = 0; i < n; i++)
            if (!write_all(llama_get_logits_ith(ctx, i), sizeof(float) * n_vocab)) return 1;
        fflush(stdout);
    }
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
