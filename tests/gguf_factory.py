"""Write small GGUF files for tests, valid or deliberately broken.

Independent of edgert's reader on purpose (its own struct packing), so the reader is
tested against the format, not against itself. Layout per ggml/docs/gguf.md.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, List, Optional, Tuple

U32, I32, F32, BOOL, STR, ARR, U64 = 4, 5, 6, 7, 8, 9, 10


def gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str, type_id: int, value: Any) -> bytes:
    out = gguf_string(key) + struct.pack("<I", type_id)
    if type_id == STR:
        return out + gguf_string(value)
    if type_id == ARR:
        elem_type, items = value
        out += struct.pack("<IQ", elem_type, len(items))
        for item in items:
            out += gguf_string(item) if elem_type == STR else struct.pack({U32: "<I", I32: "<i", F32: "<f"}[elem_type], item)
        return out
    return out + struct.pack({U32: "<I", I32: "<i", F32: "<f", BOOL: "<?", U64: "<Q"}[type_id], value)


def build_gguf(
    metadata: Optional[List[bytes]] = None,
    tensors: Optional[List[Tuple[str, List[int], int]]] = None,
    version: int = 3,
    magic: bytes = b"GGUF",
    n_tensors: Optional[int] = None,
    n_kv: Optional[int] = None,
    data: bool = True,
) -> bytes:
    """A GGUF file. tensors are (name, shape, ggml_type) with F32 (0) as the usual type."""
    if metadata is None:
        metadata = default_metadata()
    tensors = tensors if tensors is not None else [("token_embd.weight", [8, 4], 0), ("output_norm.weight", [8], 0)]
    body = b""
    offset = 0
    sizes = []
    for name, shape, type_id in tensors:
        body += gguf_string(name) + struct.pack("<I", len(shape))
        body += b"".join(struct.pack("<Q", d) for d in shape)
        n = 1
        for d in shape:
            n *= d
        size = n * 4 if type_id == 0 else n * 2
        body += struct.pack("<IQ", type_id, offset)
        sizes.append(size)
        offset += size + (-size % 32)
    header = magic + struct.pack("<I", version)
    header += struct.pack("<QQ", len(tensors) if n_tensors is None else n_tensors, len(metadata) if n_kv is None else n_kv)
    blob = header + b"".join(metadata) + body
    blob += b"\0" * (-len(blob) % 32)
    if data:
        blob += b"\0" * offset
    return blob


def default_metadata(name: str = "tiny", file_type: int = 0, template: Optional[str] = "{{ messages[0]['content'] }}") -> List[bytes]:
    meta = [
        kv("general.architecture", STR, "llama"),
        kv("general.name", STR, name),
        kv("general.file_type", U32, file_type),
        kv("llama.context_length", U32, 256),
        kv("tokenizer.ggml.model", STR, "gpt2"),
        kv("tokenizer.ggml.tokens", ARR, (STR, ["a", "b", "c"])),
        kv("tokenizer.ggml.bos_token_id", U32, 1),
        kv("tokenizer.ggml.eos_token_id", U32, 2),
    ]
    if template is not None:
        meta.append(kv("tokenizer.chat_template", STR, template))
    return meta


def write_gguf(path: Path, **kwargs: Any) -> Path:
    path.write_bytes(build_gguf(**kwargs))
    return path
