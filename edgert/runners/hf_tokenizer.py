"""One Hugging Face tokenizer for the runners of exported models (ONNX Runtime, TensorRT).

It reads the side files an export ships beside the model: ``tokenizer.json`` (through the
``tokenizers`` package), ``tokenizer_config.json`` (chat template, BOS/EOS texts),
``chat_template.jinja``, ``generation_config.json`` and ``config.json`` (end and BOS ids).
End tokens are the union of every source, so generation stops wherever any of them says.

Decoding is per token, to bytes: streaming needs the bytes of each token (a character may
span tokens, and the stop-string decoder joins them), while ``Tokenizer.decode`` on one id
turns half a character into U+FFFD. ``tokenizers.decoders.DecodeStream`` is not used: it
is stateful per sequence and returns text, whereas the runner contract is a stateless
``ids -> bytes`` shared by the streaming decoder, whole-sequence detokenization and
several interleaved sequences; it also strips the first token's leading space
(``Strip`` decoders), which would change the text the runners return today.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set

from ..errors import BackendUnavailableError, ModelFileError
from .guidance import Guide

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
#: the side files the runners read, in the order a converter should copy them
SIDE_FILES = (TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, CHAT_TEMPLATE_FILE, CONFIG_FILE, GENERATION_CONFIG_FILE)


def _bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's byte -> printable character table of byte-level BPE (GPT-2 encoder.py, bytes_to_unicode)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_LEVEL_DECODE = {char: byte for byte, char in _bytes_to_unicode().items()}
BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")  # sentencepiece byte-fallback pieces
METASPACE = "\u2581"


def read_json(path: Path) -> Dict[str, Any]:
    """A JSON object from a side file; {} when the file is absent; ModelFileError when it is not JSON."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: not valid JSON ({exc})") from None
    return data if isinstance(data, dict) else {}


def token_ids(value: Any) -> List[int]:
    """An id or list of ids from a config field (booleans and other types ignored)."""
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def _token_text(value: Any) -> str:
    if isinstance(value, dict):  # {"content": "<s>", ...} (AddedToken as saved by transformers)
        return str(value.get("content") or "")
    return value if isinstance(value, str) else ""


def pick_template(value: Any) -> Optional[str]:
    """tokenizer_config's chat_template: a string, or [{"name", "template"}] (the default, else the first)."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        chosen = named.get("default") or next(iter(named.values()), None)
        return chosen if isinstance(chosen, str) else None
    return None


class HfTokenizer:
    """tokenizer.json plus its side files: ids, per-token bytes, end ids, BOS and chat template."""

    def __init__(self, directory: Path):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise BackendUnavailableError(
                "Hugging Face tokenizer unavailable: expected the tokenizers package (an edgert dependency), "
                "found it missing; reinstall edgert") from None
        directory = Path(directory)
        path = directory / TOKENIZER_FILE
        if not path.is_file():
            raise ModelFileError(f"{path} is missing: the runner needs the model's tokenizer.json next to the model file")
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
            spec = json.loads(path.read_text(encoding="utf-8"))
        except Exception as exc:  # tokenizers raises its own exception types
            raise ModelFileError(f"{path}: not a tokenizers file ({exc})") from None
        decoder = json.dumps(spec.get("decoder") or {})
        self.byte_level = '"ByteLevel"' in decoder
        self.metaspace = '"Metaspace"' in decoder or METASPACE in decoder
        added = [t for t in spec.get("added_tokens", []) if isinstance(t, dict)]
        self.special: Set[int] = {t["id"] for t in added if t.get("special")}
        self.added: Dict[int, str] = {t["id"]: t["content"] for t in added}
        self._piece = lru_cache(maxsize=None)(self._token_bytes)

        config = read_json(directory / CONFIG_FILE)
        generation = read_json(directory / GENERATION_CONFIG_FILE)
        tokenizer_config = read_json(directory / TOKENIZER_CONFIG_FILE)
        self.chat_template = pick_template(tokenizer_config.get("chat_template"))
        template_file = directory / CHAT_TEMPLATE_FILE
        if self.chat_template is None and template_file.is_file():
            self.chat_template = template_file.read_text(encoding="utf-8")
        bos_text = _token_text(tokenizer_config.get("bos_token"))
        eos_text = _token_text(tokenizer_config.get("eos_token"))
        bos_ids = token_ids(config.get("bos_token_id")) or token_ids(generation.get("bos_token_id"))
        self.bos_id: Optional[int] = bos_ids[0] if bos_ids else (
            self.tokenizer.token_to_id(bos_text) if bos_text else None)
        ends = set(token_ids(generation.get("eos_token_id"))) | set(token_ids(config.get("eos_token_id")))
        eos_id = self.tokenizer.token_to_id(eos_text) if eos_text else None
        if eos_id is not None:
            ends.add(eos_id)
        self.end_ids: Set[int] = ends
        self.bos_text = bos_text or self._id_text(self.bos_id)
        self.eos_text = eos_text or self._id_text(min(ends) if ends else None)

    def _id_text(self, token: Optional[int]) -> str:
        return (self.tokenizer.id_to_token(token) or "") if token is not None else ""

    def guide(self, n_vocab: Optional[int] = None) -> Guide:
        """llguidance's tokenizer for constrained decoding, from this tokenizer.json.

        n_vocab: the width of the model's logits (default: the tokenizer's vocabulary)."""
        size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        return Guide.from_tokenizer_json(self.tokenizer.to_str(), max(n_vocab or 0, size), sorted(self.end_ids))

    def encode(self, text: str) -> List[int]:
        """Token ids of ``text`` with the tokenizer's special tokens (BOS) added."""
        return list(self.tokenizer.encode(text, add_special_tokens=True).ids)

    def _token_bytes(self, token: int) -> bytes:
        if token in self.special:
            return b""
        if token in self.added:
            return self.added[token].encode("utf-8")
        text = self.tokenizer.id_to_token(token)
        if text is None:
            return b""
        fallback = BYTE_FALLBACK.match(text)
        if fallback:
            return bytes([int(fallback.group(1), 16)])
        if self.byte_level and all(c in BYTE_LEVEL_DECODE for c in text):
            return bytes(BYTE_LEVEL_DECODE[c] for c in text)
        if self.metaspace:
            text = text.replace(METASPACE, " ")
        return text.encode("utf-8")

    def token_bytes(self, token: int) -> bytes:
        """The bytes one token stands for (b"" for special tokens)."""
        return self._piece(int(token))

    def __call__(self, ids: Sequence[int]) -> bytes:
        return b"".join(self._piece(int(t)) for t in ids)
