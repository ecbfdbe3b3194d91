"""checkpoint folder -> package folder. The package's manifest.json is the only contract with the runtime."""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from edge_llm import __version__
from edge_llm.errors import CheckpointError, ExportError
from edge_llm.manifest import (
    FORMAT,
    FORMAT_VERSION,
    KV_DTYPES,
    MANIFEST_NAME,
    IOSpec,
    KVSpec,
    ModelSpec,
    file_entry,
    to_json,
)

from .checkpoint import Checkpoint, open_checkpoint
from .decoder import IO, DecoderGraph
from .families import DecoderConfig, Family, family_for
from .families.tensors import CanonicalTensors
from .onnx_writer import ExternalDataWriter, GraphBuilder
from .package import atomic_folder, folder_bytes
from .recipe import Recipe
from .tokenizer_meta import chat_spec, tokenizer_spec

MODEL_FILE, DATA_FILE = "model.onnx", "model.onnx.data"
COPIED = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
          "generation_config.json", "chat_template.jinja")
SENSITIVITY_SEQS, SENSITIVITY_LEN = 2, 128   # calibration tokens on which --bpw measures each tensor's effect
MAX_DEFAULT_CONTEXT = 32768   # the rotary table and attention mask are sized by it; --context-length raises it


@dataclass
class ExportResult:
    package: Path
    source_bytes: int
    package_bytes: int
    seconds: float
    worst_tensor: dict | None
    manifest: dict

    @property
    def compression(self) -> float:
        return 1.0 - self.package_bytes / self.source_bytes


def parameter_count(cfg: DecoderConfig) -> int:
    """Parameters as the manifest counts them (a tied table once): the --bpw budget's denominator."""
    return int(sum(int(np.prod(s)) for s in cfg.expected_shapes().values()))


def check_tensors(ckpt, cfg: DecoderConfig) -> None:
    for name, shape in cfg.expected_shapes().items():
        if name not in ckpt:
            raise CheckpointError(f"{ckpt.path}: tensor '{name}' is missing from the weights")
        if tuple(ckpt.shape(name)) != shape:
            raise CheckpointError(f"{ckpt.path}: tensor '{name}' has shape {tuple(ckpt.shape(name))}, "
                                  f"config.json implies {shape}")


def _open_source(src: Path):
    """A Hugging Face folder, or a GGUF file (export/gguf_import.py) read through the same interface."""
    if src.is_dir():
        return open_checkpoint(src)
    if src.is_file():
        from .gguf_import import open_gguf
        return open_gguf(src)
    raise CheckpointError(f"{src}: checkpoint folder or .gguf file not found")


def export_checkpoint(src: Path, out: Path, *, recipe: Recipe = Recipe(), force: bool = False,
                      validate: bool = True, context_length: int | None = None, kv_dtype: str = "float32",
                      progress: Callable[[str, int, int], None] | None = None,
                      bpw: float | None = None) -> ExportResult:
    """`bpw`: a bits-per-weight budget on top of `recipe` (Recipe.with_budget): weight bytes <= bpw x parameters / 8."""
    src, out = Path(src), Path(out)
    if bpw is not None:
        recipe = recipe.with_budget(bpw)
    t0 = time.perf_counter()
    with _open_source(src) as ckpt:
        meta = ckpt.meta_dir          # tokenizer and generation files: the folder, or rebuilt from a GGUF
        gguf = None
        if not isinstance(ckpt, Checkpoint):
            from .gguf_import import carriage_report, carried_recipe, requantized_note
            recipe = carried_recipe(ckpt, recipe)
            gguf = {**carriage_report(ckpt, recipe), "note": requantized_note(ckpt, recipe)}
        family, cfg = family_for(ckpt.config, source=str(src if gguf else src / "config.json"))
        ckpt = CanonicalTensors(ckpt, family, cfg)      # every reader below sees the canonical names
        check_tensors(ckpt, cfg)
        ctx = context_length or min(cfg.max_position_embeddings, MAX_DEFAULT_CONTEXT)
        if kv_dtype not in KV_DTYPES:
            raise ExportError(f"kv dtype '{kv_dtype}' is not supported ({' or '.join(KV_DTYPES)})")
        if not 1 <= ctx <= cfg.max_position_embeddings:
            raise ExportError(f"context length {ctx} is outside 1..{cfg.max_position_embeddings} (the model's maximum)")
        # progress counts the 2-D weights (linear layers and tables), the tensors that take the time
        n_tensors, done = sum(len(s) == 2 for s in cfg.expected_shapes().values()), [0]

        def on_tensor(name):
            done[0] += 1
            if progress:
                progress(name, min(done[0], n_tensors), n_tensors)

        tok, tokenizer = tokenizer_spec(meta, cfg)
        chat = chat_spec(meta, family, tokenizer, tok)
        with atomic_folder(out, force=force, source=src) as tmp:
            calibrator, importance = None, {}
            if recipe.needs_calibration:
                from .calibrate import Calibrator, calibration_ids, collect_importance
                ids = calibration_ids(tokenizer.encode, tok["bos_id"], recipe.calibration,
                                      n_seq=recipe.calibration_seqs,
                                      seq_len=recipe.calibration_len)
                if "gptq" in (recipe.method, recipe.head_method):
                    calibrator = Calibrator(cfg, ckpt.load, ids)
                if recipe.importance:
                    importance = collect_importance(cfg, ckpt.load, ids)
            if recipe.planned:
                from .budget import plan_budget
                probe = None if not recipe.needs_calibration else ids[:SENSITIVITY_SEQS, :SENSITIVITY_LEN]
                plan = plan_budget(cfg, ckpt.load, recipe, recipe.bpw, importance, parameter_count(cfg), ids=probe)
                recipe = replace(recipe, tensors=plan.tensors(),
                                 bpw=recipe.bpw or round(plan.budget_bytes * 8 / plan.parameters, 4))
            writer = ExternalDataWriter(tmp, DATA_FILE)
            try:
                graph = DecoderGraph(cfg, recipe, GraphBuilder(writer), get=ckpt.load, context_length=ctx,
                                     kv_dtype=kv_dtype,
                                     calibrator=calibrator, importance=importance, progress=on_tensor,
                                     carried=ckpt.carried)
                model = graph.build()
            finally:
                writer.close()
            onnx.save_model(model, str(tmp / MODEL_FILE))
            for name in COPIED:
                if (meta / name).is_file():
                    shutil.copyfile(meta / name, tmp / name)
            manifest = build_manifest(cfg, family, recipe, tok, chat, src=src, ckpt=ckpt, report=graph.report,
                                      context_length=ctx, kv_dtype=kv_dtype, folder=tmp)
            if gguf:
                gguf["package_bits_per_weight"] = round(writer.nbytes * 8 / parameter_count(cfg), 4)
                manifest["quantization"]["gguf"] = gguf
            (tmp / "genai_config.json").write_text(json.dumps(genai_config(cfg, family, tok, ctx), indent=2))
            _write_manifest(tmp, manifest)
            if validate:
                from .validate import validate_package
                manifest["validation"] = validate_package(tmp, ckpt=ckpt, cfg=cfg)
            manifest["sizes"] = {"package_bytes": 0, "weights_bytes": writer.nbytes,
                                 "source_weights_bytes": ckpt.weights_bytes}
            # the manifest's own size is part of the package: rewrite until the figure is exact
            for _ in range(3):
                _write_manifest(tmp, manifest)
                manifest["sizes"]["package_bytes"] = folder_bytes(tmp)
            _write_manifest(tmp, manifest)
        return ExportResult(out, ckpt.weights_bytes, manifest["sizes"]["package_bytes"],
                            time.perf_counter() - t0, graph.report.worst(), manifest)


def _write_manifest(folder: Path, manifest: dict) -> None:
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")


def build_manifest(cfg: DecoderConfig, family: Family, recipe: Recipe, tok: dict, chat: dict | None, *, src: Path,
                   ckpt, report, context_length: int, kv_dtype: str, folder: Path) -> dict:
    gen = {}
    if (ckpt.meta_dir / "generation_config.json").is_file():
        gen = json.loads((ckpt.meta_dir / "generation_config.json").read_text(encoding="utf-8"))
    files = {"model": MODEL_FILE, "weights": DATA_FILE, "tokenizer": tok["file"]}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "exporter": {"name": "edge-llm", "version": __version__,
                     "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "model": to_json(ModelSpec(
            **{**cfg.shape(), "family": family.name}, context_length=context_length, parameters=parameter_count(cfg),
            details={**cfg.details(), "max_position_embeddings": cfg.max_position_embeddings},
        )),
        "files": {key: file_entry(folder, name) for key, name in files.items()},
        "io": to_json(IOSpec()),
        "kv_cache": to_json(KVSpec(layout="BNSH", dtype=kv_dtype, num_layers=cfg.num_layers,
                                   num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
                                   shared_past_present=True, max_length=context_length)),
        "quantization": {**recipe.to_dict(), "worst_tensor": report.worst(),
                         "mean_rel_rms_error": report.mean()},
        "tokenizer": tok,
        "chat": chat,
        "generation": {k: gen[k] for k in ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty")
                       if k in gen},
        "source": {"name": src.resolve().name, "format": ckpt.weight_files[0].name,
                   "files": [p.name for p in ckpt.weight_files], "sha256": ckpt.sha256(),
                   "weights_bytes": ckpt.weights_bytes},
    }


def genai_config(cfg: DecoderConfig, family: Family, tok: dict, context_length: int) -> dict:
    """onnxruntime-genai runs the same graph; its model type is the family's (MiniCPM runs as 'llama':
    the graph's I/O is llama's and the scales are inside the graph)."""
    eos = tok["eos_ids"]
    pad = eos[0]
    return {
        "model": {
            "bos_token_id": tok["bos_id"] if tok["bos_id"] is not None else pad, "context_length": context_length,
            "eos_token_id": list(eos) if len(eos) > 1 else eos[0],
            "pad_token_id": pad, "type": family.genai_type, "vocab_size": cfg.vocab_size,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": MODEL_FILE, "head_size": cfg.head_dim, "hidden_size": cfg.hidden_size,
                "num_attention_heads": cfg.num_heads, "num_hidden_layers": cfg.num_layers,
                "num_key_value_heads": cfg.num_kv_heads,
                "inputs": {"input_ids": IO["input_ids"], "attention_mask": IO["attention_mask"],
                           "past_key_names": IO["past_key"].replace("{i}", "%d"),
                           "past_value_names": IO["past_value"].replace("{i}", "%d")},
                "outputs": {"logits": IO["logits"], "present_key_names": IO["present_key"].replace("{i}", "%d"),
                            "present_value_names": IO["present_value"].replace("{i}", "%d")},
            },
        },
        "search": {"diversity_penalty": 0.0, "do_sample": False, "early_stopping": True, "length_penalty": 1.0,
                   "max_length": context_length, "min_length": 0, "no_repeat_ngram_size": 0,
                   "num_beams": 1, "num_return_sequences": 1, "past_present_share_buffer": True,
                   "repetition_penalty": 1.0, "temperature": 1.0, "top_k": 1, "top_p": 1.0},
    }
