"""Loading and saving models and tokenizers: device and dtype come from config, never
hard-coded; a local path that does not exist is an error at once (no hub retries)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from posttrain.core.config import ConfigError


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"model.device={spec!r} but CUDA is not available here; set model.device=cpu")
    return dev


def torch_dtype(name: str) -> torch.dtype | str:
    return "auto" if name == "auto" else getattr(torch, name)


def looks_local(path: str) -> bool:
    """A path, not a hub id ("org/name"): absolute, relative with ./ ../ ~, more than one
    slash, or its first part is a local folder (runs/final when runs/ exists)."""
    return (path.startswith(("/", "./", "../", "~", "."))
            or path.count("/") > 1 or Path(path.split("/")[0]).is_dir() and "/" in path)


def check_model_path(path: str | Path, field: str = "model.path") -> str:
    """A model folder that exists and holds a model, or a ConfigError at once: a mistyped
    local path must not spend a minute retrying the hub, nor end in a tokenizer's
    unrelated complaint (\"install sentencepiece\")."""
    text = str(path)
    p = Path(text).expanduser()
    if p.is_file():
        raise ConfigError(f"{field}={text} is a file; it must be a model folder (with config.json), "
                          "e.g. a run's final/")
    if p.is_dir():
        if not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
            raise ConfigError(f"{field}={text} is not a model folder (no config.json in it); point it at a "
                              "Hugging Face model folder, e.g. a run's final/")
        return text
    if looks_local(text):
        raise ConfigError(f"{field}={text} does not exist; fix the path (a local model folder, e.g. "
                          "RUN_DIR/final)")
    return text  # a hub id


def load_tokenizer(path: str | Path, trust_remote_code: bool = False) -> Any:
    """The tokenizer of a HF folder (or hub id), with a pad token (EOS when it has none)."""
    check_model_path(path)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def is_image_text_model(path: str | Path) -> bool:
    """A local HF folder whose config has a vision tower (Idefics3, Qwen2.5-VL, ...)."""
    config = Path(path) / "config.json"
    return config.is_file() and "vision_config" in json.loads(config.read_text())


def load_processor(path: str | Path, trust_remote_code: bool = False) -> Any:
    """The processor (image processor + tokenizer + chat template) of an image-text model folder."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(path), trust_remote_code=trust_remote_code)


def load_causal_lm(path: str | Path, dtype: str = "float32", trust_remote_code: bool = False) -> Any:
    """A causal LM, or an image-text model (AutoModelForImageTextToText) when the folder has a vision tower."""
    check_model_path(path)
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    auto = AutoModelForImageTextToText if is_image_text_model(path) else AutoModelForCausalLM
    return auto.from_pretrained(str(path), dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code)


def load_policy(path: str | Path, dtype: str = "float32", device: str = "cpu",
                trust_remote_code: bool = False) -> tuple[Any, Any]:
    """(model on `device`, tokenizer) of a causal LM folder."""
    tokenizer = load_tokenizer(path, trust_remote_code)
    model = load_causal_lm(path, dtype, trust_remote_code)
    model.to(resolve_device(device))
    return model, tokenizer


def save_hf(model: Any, tokenizer: Any, out: str | Path) -> Path:
    """Save a HF folder atomically: written next to `out`, then renamed over it."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)
    return out
