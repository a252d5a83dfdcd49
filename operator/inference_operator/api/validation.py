"""The API server's admission checks of an InferenceService, offline, from the CRD's own schema.

`render` runs these before anything else, so a GitOps preview refuses exactly what `kubectl
apply` would: structural defaulting, then the OpenAPI schema (types, bounds, lengths, patterns,
enums, required and unknown fields), then every CEL rule (``x-kubernetes-validations``) with the
CEL engine of the ``common-expression-language`` package, Kubernetes' ``quantity()`` library
included. Field paths and messages are the API server's; e2e/test_parity.py checks them against a
server-side dry run, case by case.
"""

from __future__ import annotations

import copy
import dataclasses
import fractions
import functools
import re
from typing import Any, Iterator, Optional

import cel

from inference_operator.api import crd


@dataclasses.dataclass(frozen=True)
class Violation:
    path: str  # as the API server writes it: spec.runtime.args, spec.runtime.env[0].name, ...
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<nil>'}: {self.message}"


@functools.lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


# ---- Kubernetes' CEL quantity library (what the limits >= requests rules use) ------------------

_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
_FACTORS = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": fractions.Fraction(1, 10**9), "u": fractions.Fraction(1, 10**6), "m": fractions.Fraction(1, 1000),
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}


# What the API server's quantity() says of a string that is not one.
QUANTITY_ERROR = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"


def quantity_value(text: str) -> fractions.Fraction:
    m = _QUANTITY.match(text)
    if not m:
        raise ValueError(QUANTITY_ERROR)
    number, suffix = fractions.Fraction(m.group(1)), m.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return number * fractions.Fraction(10) ** int(suffix[1:])
    return number * _FACTORS[suffix]


class _Errors:
    """Errors raised inside our CEL functions: the binding's own exception loses their text."""

    def __init__(self) -> None:
        self.last: Optional[str] = None


def _context(variables: dict[str, Any], errors: Optional[_Errors] = None) -> cel.Context:
    ctx = cel.Context()

    def quantity(text: str) -> dict[str, str]:
        try:
            return {"quantity": str(quantity_value(text))}
        except ValueError as exc:
            # Recorded, not raised: the binding prints a raised error. The rule then fails as an
            # evaluation error, whatever it returns.
            if errors is not None:
                errors.last = str(exc)
            return {"quantity": "0"}

    ctx.add_function("quantity", quantity)

    def compare(a: dict, b: dict) -> int:
        x, y = fractions.Fraction(a["quantity"]), fractions.Fraction(b["quantity"])
        return (x > y) - (x < y)

    ctx.add_function("compareTo", compare)
    # Kubernetes' lists library (the canary's ascending step weights).
    ctx.add_function("isSorted", lambda items: list(items) == sorted(items))
    for name, value in variables.items():
        ctx.add_variable(name, value)
    return ctx


# ---- defaulting, as the API server does it before validation -------------------------------------


def apply_defaults(node: dict[str, Any], value: Any) -> Any:
    """Absent properties take their schema default, recursively (structural defaulting)."""
    if isinstance(value, dict) and "properties" in node:
        for key, child in node["properties"].items():
            if key in value and value[key] is None and not child.get("nullable"):
                del value[key]  # the API server prunes a null, then defaults what is absent
            if key not in value and "default" in child:
                value[key] = copy.deepcopy(child["default"])
            if key in value:
                apply_defaults(child, value[key])
    elif isinstance(value, dict) and isinstance(node.get("additionalProperties"), dict):
        for item in value.values():
            apply_defaults(node["additionalProperties"], item)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for item in value:
            apply_defaults(node["items"], item)
    return value


# ---- the OpenAPI schema ----------------------------------------------------------------------------

_TYPES = {"string": str, "integer": int, "boolean": bool, "object": dict, "array": list, "number": (int, float)}


def _type_name(value: Any) -> str:
    for name, t in (("boolean", bool), ("integer", int), ("number", float), ("string", str),
                    ("object", dict), ("array", list)):
        if isinstance(value, t):
            return name
    return "null"


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (dict, list)):
        return f'"{_type_name(value)}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _wrong_type(path: str, expected: str, value: Any) -> Violation:
    return Violation(path, f"Invalid value: \"{_type_name(value)}\": {path} in body must be of type "
                           f"{expected}: \"{_type_name(value)}\"")


def _schema_errors(node: dict[str, Any], value: Any, path: str) -> Iterator[Violation]:
    expected = node.get("type")
    if expected and value is not None:
        ok = isinstance(value, _TYPES[expected]) and not (expected in ("integer", "number") and isinstance(value, bool))
        if expected == "integer" and isinstance(value, float) and value.is_integer():
            ok = True  # JSON has one number type: 2.0 is an integer to the API server
        if not ok:
            yield _wrong_type(path, expected, value)
            return
    if "enum" in node and value not in node["enum"]:
        supported = ", ".join(f'"{v}"' for v in node["enum"])
        yield Violation(path, f"Unsupported value: {_shown(value)}: supported values: {supported}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in node and value < node["minimum"]:
            yield Violation(path, f"Invalid value: {value}: {path} in body should be greater than or equal to "
                                  f"{node['minimum']}")
        if "maximum" in node and value > node["maximum"]:
            yield Violation(path, f"Invalid value: {value}: {path} in body should be less than or equal to "
                                  f"{node['maximum']}")
    if isinstance(value, str):
        if "maxLength" in node and len(value) > node["maxLength"]:
            yield Violation(path, f"Too long: may not be more than {node['maxLength']} bytes")
        if "minLength" in node and len(value) < node["minLength"]:
            yield Violation(path, f"Invalid value: \"{value}\": {path} in body should be at least "
                                  f"{node['minLength']} chars long")
        if "pattern" in node and not re.search(node["pattern"], value):
            yield Violation(path, f"Invalid value: \"{value}\": {path} in body should match '{node['pattern']}'")
    if isinstance(value, list):
        if "minItems" in node and len(value) < node["minItems"]:
            yield Violation(path, f"Invalid value: {len(value)}: {path} in body should have at least "
                                  f"{node['minItems']} items")
        if "maxItems" in node and len(value) > node["maxItems"]:
            yield Violation(path, f"Too many: {len(value)}: must have at most {node['maxItems']} items")
        if isinstance(node.get("items"), dict):
            for i, item in enumerate(value):
                if item is None and node["items"].get("type") and not node["items"].get("nullable"):
                    # A null field is dropped before validation; a null item cannot be: a wrong type
                    # (e2e/test_fuzz.py found render passing it, and then running the CEL rules).
                    yield _wrong_type(f"{path}[{i}]", node["items"]["type"], item)
                    continue
                yield from _schema_errors(node["items"], item, f"{path}[{i}]")
        keys = node.get("x-kubernetes-list-map-keys")
        # As the API server: a list keyed by name with an item that is not an object has that
        # item's type refused above, and no duplicate looked for (e2e/test_fuzz.py found it).
        if node.get("x-kubernetes-list-type") == "map" and keys and all(isinstance(item, dict) for item in value):
            seen, reported = set(), set()
            for i, item in enumerate(value):
                key = tuple(item.get(k) for k in keys)
                if key in seen and key not in reported:  # the first repeat only, as the API server
                    shown = ",".join(f'"{k}":"{v}"' for k, v in zip(keys, key))
                    yield Violation(f"{path}[{i}]", f"Duplicate value: {{{shown}}}")
                    reported.add(key)
                seen.add(key)
    if isinstance(value, dict):
        if "maxProperties" in node and len(value) > node["maxProperties"]:
            yield Violation(path, f"Too many: {len(value)}: must have at most {node['maxProperties']} items")
        for key in node.get("required", []):
            if key not in value:
                yield Violation(_join(path, key), "Required value")
        props = node.get("properties")
        if props is not None:
            for key, item in value.items():
                if key in props:
                    yield from _schema_errors(props[key], item, _join(path, key))
                elif not node.get("x-kubernetes-preserve-unknown-fields") and path != "metadata":
                    yield Violation(_join(path, key), f'unknown field "{_join(path, key)}"')
        elif isinstance(node.get("additionalProperties"), dict):
            for key, item in value.items():
                yield from _schema_errors(node["additionalProperties"], item, f"{path}[{key}]")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# ---- CEL rules -------------------------------------------------------------------------------------


def _rule_errors(node: dict[str, Any], value: Any, path: str) -> Iterator[Violation]:
    if value is None:
        return
    for rule in node.get("x-kubernetes-validations", []):
        text = rule["rule"]
        if "oldSelf" in text:
            if not rule.get("optionalOldSelf"):
                continue  # transition rules only run on update
            # Offline is a create: no old object (the API server's optional oldSelf is none).
            text = text.replace("oldSelf", "optional.none()")
        errors = _Errors()
        try:
            ok = cel.evaluate(text, _context({"self": value}, errors))
        except Exception as exc:  # noqa: BLE001 -- a rule that fails to evaluate refuses, as on the API server
            errors.last = errors.last or str(exc)
        if errors.last:
            yield Violation(path, f"Invalid value: \"{_type_name(value)}\": {errors.last} evaluating rule: "
                                  f"{rule['message']}")
            continue
        if not ok:
            # The API server shows a scalar's value, and no value for an object or a list.
            shown = "" if isinstance(value, (dict, list)) else f"{_shown(value)}: "
            yield Violation(path, f"Invalid value: {shown}{rule['message']}")
    if isinstance(value, dict) and "properties" in node:
        for key, child in node["properties"].items():
            if key in value:
                yield from _rule_errors(child, value[key], _join(path, key))
    elif isinstance(value, dict) and isinstance(node.get("additionalProperties"), dict):
        for key, item in value.items():
            yield from _rule_errors(node["additionalProperties"], item, f"{path}[{key}]")
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, item in enumerate(value):
            yield from _rule_errors(node["items"], item, f"{path}[{i}]")


_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _metadata_errors(meta: dict[str, Any]) -> Iterator[Violation]:
    """The ObjectMeta checks that matter for an InferenceService manifest: a name, and labels."""
    if not meta.get("name") and not meta.get("generateName"):
        yield Violation("metadata.name", "Required value: name or generateName is required")
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, name = key.rpartition("/")
        if (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix))) or len(name) > 63 \
                or not _LABEL_NAME.match(name):
            yield Violation("metadata.labels", f'Invalid value: "{key}": name part must consist of alphanumeric '
                                               "characters, '-', '_' or '.', and must start and end with an "
                                               "alphanumeric character")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            yield Violation("metadata.labels", f'Invalid value: "{value}": a valid label must be an empty string '
                                               "or consist of alphanumeric characters, '-', '_' or '.', and must "
                                               "start and end with an alphanumeric character")


_BLOCKING = ("Unsupported value", "Required value", "Too long", "Too many")


def validate(body: dict[str, Any]) -> list[Violation]:
    """What the API server would refuse in this InferenceService on create; [] if it would accept it."""
    root = schema()
    doc = apply_defaults(root, copy.deepcopy(body))
    meta = doc.setdefault("metadata", {})
    found = list(_metadata_errors(meta))
    if any(f.path == "metadata.name" for f in found):
        return found + [Violation("", "Invalid value: null: some validation rules were not checked because the "
                                      "object was invalid; correct the existing errors to complete validation")]
    if found:
        return found  # ObjectMeta is checked, and refused, before the schema
    if not meta.get("name"):
        meta["name"] = meta["generateName"] + "x0000"  # the API server generates the name before validating
    found = list(_schema_errors(root, doc, ""))
    unknown = [f for f in found if f.message.startswith("unknown field")]
    if unknown:
        return unknown  # strict decoding refuses the object before it is validated
    if any(f.message.startswith(_BLOCKING) or "must be of type" in f.message for f in found):
        # As the API server: these errors (a wrong type, an unsupported enum value, a missing,
        # too long or too many value) keep the CEL rules from running.
        return found + [Violation("", "Invalid value: null: some validation rules were not checked "
                                      "because the object was invalid; correct the existing errors to "
                                      "complete validation")]
    return found + list(_rule_errors(root, doc, ""))


def defaulted(body: dict[str, Any]) -> dict[str, Any]:
    """The body as the API server stores it on create: defaults filled in."""
    return apply_defaults(schema(), copy.deepcopy(body))

