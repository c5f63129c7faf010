"""The graph interface of optimum's decoder export with KV cache, as one table.

optimum.exporters.onnx (``TextDecoderOnnxConfig``, task ``text-generation-with-past``)
names the inputs ``input_ids``, ``attention_mask``, ``position_ids`` and
``past_key_values.N.key/value``, and the outputs ``logits`` and ``present.N.key/value``
(fed back as the next step's past). The ONNX Runtime and TensorRT runners both run such
graphs; the TensorRT engine keeps the names of the ONNX file it was built from.
"""

from __future__ import annotations

import re
from typing import Optional, Tuple

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
POSITION_IDS = "position_ids"
LOGITS = "logits"
TOKEN_INPUTS = (INPUT_IDS, ATTENTION_MASK, POSITION_IDS)
KV_KINDS = ("key", "value")
PAST_INPUT = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
PAST_NAME = "past_key_values.{layer}.{kind}"
PRESENT_OUTPUT = "present.{layer}.{kind}"


def past_layer(name: str) -> Optional[Tuple[int, str]]:
    """(layer, "key"/"value") of a past-KV input name, None for any other name."""
    match = PAST_INPUT.match(name)
    return (int(match.group(1)), match.group(2)) if match else None


def present_for(past: str) -> str:
    """The output name that carries the update of a past-KV input."""
    layer, kind = past_layer(past) or (None, None)
    if layer is None:
        raise ValueError(f"expected a past_key_values.N.key/value name, found {past!r}")
    return PRESENT_OUTPUT.format(layer=layer, kind=kind)
