"""Generates the InferenceService CustomResourceDefinition from the pydantic models.

Pydantic's JSON Schema is turned into a Kubernetes structural schema: references inlined,
nullable unions collapsed, free-form maps marked x-kubernetes-preserve-unknown-fields.
"""

from __future__ import annotations

from typing import Any

import yaml

from inference_operator import api

# Keywords a structural schema may carry; everything else pydantic emits (title, ...) is dropped.
_KEEP = {
    "type",
    "description",
    "default",
    "enum",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "maxProperties",
    "items",
    "properties",
    "additionalProperties",
    "required",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields",
}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").split("/")[-1]]
        merged = {**_resolve(target, defs), **{k: _resolve(v, defs) for k, v in node.items()}}
        # A field-level x-kubernetes-validations replaces nothing: both sets of rules apply.
        rules = list(_resolve(target, defs).get("x-kubernetes-validations", []))
        rules += node.get("x-kubernetes-validations", [])
        if rules:
            merged["x-kubernetes-validations"] = rules
        return _structural(merged, defs)
    for union in ("anyOf", "oneOf"):
        if union in node:
            branches = [b for b in node.pop(union) if b.get("type") != "null"]
            if len(branches) != 1:
                raise ValueError(f"cannot express union {branches!r} in a structural schema")
            inner = _resolve(branches[0], defs)
            rules = inner.get("x-kubernetes-validations", []) + node.get(
                "x-kubernetes-validations", []
            )
            node = {**inner, **{k: v for k, v in node.items()}}
            if rules:
                node["x-kubernetes-validations"] = rules
            if node.get("default", "unset") is None:
                del node["default"]
            return _structural(node, defs)
    return _structural(node, defs)


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if node.get("default", "unset") is None:
        del node["default"]
    if "properties" in node:
        node["properties"] = {k: _resolve(v, defs) for k, v in node["properties"].items()}
        node["type"] = "object"
        node.pop("additionalProperties", None)
    elif node.get("type") == "object":
        extra = node.get("additionalProperties", True)
        if extra is True or extra == {}:
            node.pop("additionalProperties", None)
            node["x-kubernetes-preserve-unknown-fields"] = True
        else:
            node["additionalProperties"] = _resolve(extra, defs)
    if "items" in node:
        node["items"] = _resolve(node["items"], defs)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    return {k: v for k, v in node.items() if k in _KEEP}


def schema_of(model: type[api.BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _resolve(raw, defs)


def openapi_schema() -> dict[str, Any]:
    spec = schema_of(api.InferenceServiceSpec)
    status = schema_of(api.InferenceServiceStatus)
    spec["description"] = "The desired state: which model, on which runtime, on which GPUs."
    status["description"] = "The observed state, written by the operator."
    return {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": [
            api.cel(
                f"self.metadata.name.size() <= {api.MAX_NAME_LENGTH}",
                f"metadata.name must be at most {api.MAX_NAME_LENGTH} characters: "
                "child objects are named <name>-predictor",
            ),
            api.cel(
                "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
                "metadata.name must be a DNS-1035 label (lowercase letters, digits and '-', "
                "starting with a letter): it names the model's Service",
            ),
        ],
    }


def build_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "inference-operator"},
            # Deleting the CRD deletes every InferenceService and so every workload: Argo CD never
            # prunes it (an Application deleted, or the chart's crds/ skipped, leaves it in place).
            "annotations": {"argocd.argoproj.io/sync-options": "Prune=false"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": api.SHORT_NAMES,
                "categories": api.CATEGORIES,
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": [
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                        },
                        {
                            "name": "Reason",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
                            "priority": 1,
                        },
                        {"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas"},
                        {"name": "Revision", "type": "string", "jsonPath": ".status.revision"},
                        # The last canary: its phase, and the weight it asks for and actually gets.
                        {"name": "Canary", "type": "string", "jsonPath": ".status.canary.phase"},
                        {"name": "Weight", "type": "integer", "jsonPath": ".status.canary.weight"},
                        {"name": "Effective", "type": "integer", "jsonPath": ".status.canary.effectiveWeight",
                         "priority": 1},
                        {"name": "URL", "type": "string", "jsonPath": ".status.url"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


class _NoAliases(yaml.SafeDumper):
    """Writes a schema shared by two fields out twice, rather than as a YAML anchor and alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def crd_yaml() -> str:
    return yaml.dump(build_crd(), Dumper=_NoAliases, sort_keys=False, width=100)
