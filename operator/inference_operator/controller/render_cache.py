"""The children a spec renders to, kept per InferenceService and track: rendering is most of a no-op
pass's CPU."""

from __future__ import annotations

import collections
import hashlib
import json
import threading
import zlib
from typing import Any, Optional

from inference_operator import api
from inference_operator.config import OperatorConfig
from inference_operator.desired import children, render


class RenderCache:
    """Stamped children by everything they are rendered from: the spec, the name, namespace and
    uid, the config and the track. Rendering is most of a no-op pass's CPU (jinja2, YAML, hashes);
    a pass over an unchanged InferenceService finds its children here. One slot per
    InferenceService and track, so a change replaces its entry instead of adding one, and a
    deleted InferenceService's slot goes with it (``forget``): the cache holds what the live
    InferenceServices render to, never more (bounded too, least recently used out). Entries are
    kept as compressed JSON (about 1.5 KB for an InferenceService's children, against some 17 KB
    as Python objects) and each ``get`` returns a fresh copy, which its caller owns. Thread-safe."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._items: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()
        self.misses = 0

    def get(self, isvc: api.InferenceService, config: OperatorConfig, track: Optional[str]) -> list[dict[str, Any]]:
        slot = (isvc.namespace, isvc.name, track)
        key = (isvc.metadata.uid, hashlib.sha256(isvc.spec.model_dump_json().encode()).digest(), config)
        with self._lock:
            found = self._items.get(slot)
            if found is not None and found[0] == key:
                self._items.move_to_end(slot)
                return json.loads(zlib.decompress(found[1]))
        self.misses += 1
        stamped = [children.stamp(c, isvc) for c in render.render(isvc, config, track=track)]
        blob = zlib.compress(json.dumps(stamped, separators=(",", ":")).encode(), 1)
        with self._lock:
            self._items[slot] = (key, blob)
            self._items.move_to_end(slot)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return stamped

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            for slot in [s for s in self._items if s[:2] == (namespace, name)]:
                del self._items[slot]

    def __len__(self) -> int:
        return len(self._items)
