"""YAML that every reader takes back exactly as written: what `render` prints.

PyYAML quotes a string only when its own YAML 1.1 resolver would read it as something else; a
YAML 1.2 or Go reader (kubectl, Argo CD, Helm) also reads 1e3, 0o17, 1_000 or 12:30 as numbers. So
any string that looks like a number, a boolean or null to any of them is double-quoted.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

import yaml

_AMBIGUOUS = re.compile(
    r"""^(?:
        [-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?  # 1, 1., 1.5, .5, 1e3, 1_000
      | [-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?          # 12:30 (YAML 1.1 base 60)
      | [-+]?0[xX][0-9a-fA-F_]+ | [-+]?0[oO][0-7_]+ | [-+]?0[bB][01_]+
      | [-+]?\.(?:inf|Inf|INF) | \.(?:nan|NaN|NAN)
      | y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF
      | ~|null|Null|NULL|=|<<
    )$""",
    re.VERBOSE,
)


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    if value == "" or _AMBIGUOUS.match(value):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')
    return dumper.represent_str(value)


_Dumper.add_representer(str, _str)


def dump_all(documents: Iterable[Any]) -> str:
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, width=100)
