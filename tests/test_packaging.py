"""The image installs a lock; the lock must satisfy what pyproject.toml asks for."""

import pathlib
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = pathlib.Path(__file__).parents[1]


def lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "operator" / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not pinned: {line}"
            pins[canonicalize_name(name)] = version
    return pins


def test_every_runtime_dependency_is_locked_at_a_version_pyproject_allows():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = lock()
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in operator/requirements.lock"
        assert req.specifier.contains(pins[name]), f"{req.name}=={pins[name]} does not satisfy {req.specifier}"


def test_the_dockerfile_installs_the_lock_and_nothing_unpinned():
    text = (ROOT / "operator" / "Dockerfile").read_text()
    assert "-r operator/requirements.lock" in text
    for line in text.splitlines():
        if "pip install" in line:
            assert "--no-deps" in line, line


def test_the_kopf_floor_has_the_settings_the_operator_uses():
    """settings.watching.label_selectors first ships in kopf 1.45 (1.37 to 1.44 lack it: checked
    against their wheels); a lower floor lets pip pick a kopf the operator crashes on at start."""
    import kopf
    from packaging.version import Version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    req = next(Requirement(s) for s in project["dependencies"] if Requirement(s).name == "kopf")
    floor = min(Version(s.version) for s in req.specifier if s.operator in (">=", "=="))
    assert floor >= Version("1.45"), req
    assert hasattr(kopf.OperatorSettings().watching, "label_selectors")
