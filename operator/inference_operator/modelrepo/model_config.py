"""Triton's config.pbtxt: generated from the spec when a model has none, or the spec's overrides
merged into the model's own. Pure text work; the overrides are all top-level fields, so a small
scanner of top-level text-proto fields is all the merge needs.
"""

from __future__ import annotations

import re
from typing import Optional

from inference_operator import api

# Where a single downloaded file goes in <model>/1/, by format (Triton's default file names). Only
# formats whose inputs and outputs Triton completes itself: a generated config has none.
DEFAULT_FILENAMES = {
    "onnx": "model.onnx",
    "tensorrt_plan": "model.plan",
}
# platform or backend, by format.
PLATFORMS = {
    "onnx": ("backend", "onnxruntime"),
    "tensorrt_plan": ("platform", "tensorrt_plan"),
    "pytorch_libtorch": ("backend", "pytorch"),
    "tensorflow_savedmodel": ("platform", "tensorflow_savedmodel"),
    "tensorflow_graphdef": ("platform", "tensorflow_graphdef"),
    "python": ("backend", "python"),
    "openvino": ("backend", "openvino"),
    "fil": ("backend", "fil"),
    "dali": ("backend", "dali"),
    "ensemble": ("platform", "ensemble"),
}


class ConfigError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def overrides(spec: api.InferenceServiceSpec) -> str:
    """The spec's settings as config.pbtxt text (empty when the spec sets none)."""
    mc = spec.runtime.model_config_overrides
    lines = []
    if mc.max_batch_size is not None:
        lines.append(f"max_batch_size: {mc.max_batch_size}")
    if mc.dynamic_batching is not None:
        db = mc.dynamic_batching
        sizes = ", ".join(str(s) for s in db.preferred_batch_sizes)
        body = [f"  preferred_batch_size: [ {sizes} ]"] if sizes else []
        body.append(f"  max_queue_delay_microseconds: {db.max_queue_delay_microseconds}")
        lines += ["dynamic_batching {", *body, "}"]
    if mc.instance_count is not None:
        kind = "KIND_GPU" if spec.resources.gpu.count > 0 else "KIND_CPU"
        lines.append(f"instance_group [ {{ count: {mc.instance_count} kind: {kind} }} ]")
    if spec.model.version is not None:
        lines.append(f"version_policy: {{ specific: {{ versions: [ {spec.model.version} ] }} }}")
    if spec.runtime.response_cache is not None:
        lines.append("response_cache { enable: true }")
    return "\n".join(lines) + ("\n" if lines else "")


_TOKEN = re.compile(
    r"""\s+|\#[^\n]*|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[{}\[\]<>:;,]|[^\s{}\[\]<>:;,"'#]+""",
    re.DOTALL,
)
_CLOSE = {"{": "}", "<": ">", "[": "]"}


def _tokens(text: str) -> list[tuple[str, int, int]]:
    out = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ConfigError("InvalidModelConfig", f"config.pbtxt: cannot read at offset {pos}")
        if not (m.group().isspace() or m.group().startswith("#")):
            out.append((m.group(), m.start(), m.end()))
        pos = m.end()
    return out


def top_level_fields(text: str) -> list[tuple[str, int, int]]:
    """(name, start, end) of each top-level field, the value included."""
    toks = _tokens(text)
    fields = []
    i = 0
    while i < len(toks):
        name, start, _ = toks[i]
        i += 1
        if i < len(toks) and toks[i][0] == ":":
            i += 1
        if i >= len(toks):
            raise ConfigError("InvalidModelConfig", f"config.pbtxt: field {name} has no value")
        if toks[i][0] in _CLOSE:
            depth = 0
            while i < len(toks):
                if toks[i][0] in _CLOSE:
                    depth += 1
                elif toks[i][0] in _CLOSE.values():
                    depth -= 1
                i += 1
                if depth == 0:
                    break
            if depth:
                raise ConfigError("InvalidModelConfig", f"config.pbtxt: unbalanced brackets in {name}")
        else:
            i += 1
            # Adjacent string literals are one value in text proto: "a" "b" is "ab".
            while i < len(toks) and toks[i - 1][0][:1] in "\"'" and toks[i][0][:1] in "\"'":
                i += 1
        end = toks[i - 1][2]
        if i < len(toks) and toks[i][0] in (",", ";"):
            end = toks[i][2]
            i += 1
        fields.append((name, start, end))
    return fields


def build(model: str, fmt: Optional[str], existing: Optional[str], extra: str) -> str:
    """The config.pbtxt to write: the model's own with the overrides replacing the same fields,
    or a generated one. Triton wants `name` equal to the directory, so it is set either way."""
    replaced = {name for name, _, _ in top_level_fields(extra)} | {"name"}
    if existing is None:
        if fmt is None:
            raise ConfigError("NotAModelRepository",
                              f"{model}/ has no config.pbtxt; set spec.model.format so one can be generated")
        key, value = PLATFORMS[fmt]
        base = f'{key}: "{value}"\n'
        if "max_batch_size" not in replaced:
            base += "max_batch_size: 0\n"
    else:
        kept, pos = [], 0
        for name, start, end in top_level_fields(existing):
            if name in replaced:
                kept.append(existing[pos:start])
                pos = end
        kept.append(existing[pos:])
        base = "".join(kept).strip() + "\n"
    return f'name: "{model}"\n' + base + extra
