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


# ---- operator/Dockerfile -------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments): continuation lines joined,
    comments dropped; the ARGs before the first FROM are left out (they belong to no stage)."""
    instructions, pending = [], ""
    for line in (ROOT / "operator" / "Dockerfile").read_text().splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, rest = pending.strip().partition(" ")
        instructions.append((keyword.upper(), " ".join(rest.split())))
        pending = ""
    stages: list[list[tuple[str, str]]] = []
    for instruction in instructions:
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def final_stage() -> list[tuple[str, str]]:
    return dockerfile_stages()[-1]


def labels(stage: list[tuple[str, str]]) -> dict[str, str]:
    import shlex

    found = {}
    for keyword, args in stage:
        if keyword == "LABEL":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                found[key] = value
    return found


def test_the_image_is_built_in_stages_and_the_last_copies_only_the_venv():
    stages = dockerfile_stages()
    assert len(stages) > 1
    copies = [args for keyword, args in final_stage() if keyword in ("COPY", "ADD")]
    assert copies == ["--from=builder /opt/venv /opt/venv"], copies
    builder = " ".join(args for _, args in stages[0])
    assert "venv /opt/venv" in builder


def test_the_builder_installs_the_lock_then_the_package_from_the_repository():
    runs = [args for keyword, args in dockerfile_stages()[0] if keyword == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    assert len(installs) == 2, installs
    assert "-r operator/requirements.lock" in installs[0]
    assert installs[1].split("&&")[0].split()[-1] == ".", installs[1]  # the package, from the copy of the repo
    copied = " ".join(args for keyword, args in dockerfile_stages()[0] if keyword == "COPY")
    for needed in ("pyproject.toml", "README.md", "operator/"):
        assert needed in copied, needed


def test_the_lock_is_installed_with_hashes_exactly_when_it_has_them():
    hashed = "--hash=" in (ROOT / "operator" / "requirements.lock").read_text()
    (install,) = [a for k, a in dockerfile_stages()[0] if k == "RUN" and "requirements.lock" in a]
    assert ("--require-hashes" in install) == hashed, install


def test_the_final_stage_installs_and_builds_nothing():
    for keyword, args in final_stage():
        if keyword != "RUN":
            continue
        for word in ("pip install", "apt-get", "apt ", "apk ", "gcc", "build-essential", "make "):
            assert word not in args, f"the final stage runs {word!r}: {args}"


def test_the_final_stage_runs_as_a_numeric_non_root_user():
    users = [args for keyword, args in final_stage() if keyword == "USER"]
    assert users, "no USER in the final stage: it would run as root"
    user, _, group = users[-1].partition(":")
    # Numeric, or the kubelet cannot check runAsNonRoot without a passwd entry.
    assert user.isdigit() and int(user) != 0, users[-1]
    assert not group or (group.isdigit() and int(group) != 0), users[-1]


def test_the_final_stage_has_the_oci_labels():
    found = labels(final_stage())
    for key in ("title", "description", "source", "licenses", "version", "revision"):
        assert found.get(f"org.opencontainers.image.{key}"), key
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert found["org.opencontainers.image.licenses"] == project["license"]
    assert found["org.opencontainers.image.version"] == "${VERSION}"
    assert found["org.opencontainers.image.revision"] == "${REVISION}"


def test_the_image_version_defaults_to_the_package_version():
    """`make image` passes VERSION from pyproject.toml; the Dockerfile's default and the image the
    operator runs as its init container (config.py) say the same release."""
    from inference_operator import __version__
    from inference_operator.config import DEFAULT_OPERATOR_IMAGE

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    args = [a for k, a in final_stage() if k == "ARG"]
    assert f"VERSION={version}" in args, args
    assert __version__ == version
    assert DEFAULT_OPERATOR_IMAGE.rsplit(":", 1)[1] == version


def test_the_entrypoint_is_the_command_the_init_container_runs_too():
    import json

    from inference_operator import api
    from inference_operator.desired import render
    from inference_operator.config import OperatorConfig

    found = {k: a for k, a in final_stage() if k in ("ENTRYPOINT", "CMD")}
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(found["ENTRYPOINT"]) == ["inference-operator"] and "inference-operator" in scripts
    assert json.loads(found["CMD"]) == ["run"]
    # The storage-initializer runs the same image with args only: a `command` would bypass the entrypoint.
    isvc = api.parse({"apiVersion": api.API_VERSION, "kind": api.KIND,
                      "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
                      "spec": {"model": {"name": "m", "storageUri": "s3://models/m"}}})
    deployment = render.render(isvc, OperatorConfig())[0]
    (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
    assert "command" not in init and init["args"][0] == "fetch-model"


def test_the_build_context_holds_what_the_dockerfile_copies():
    """.dockerignore keeps .venv and the rest out of the context, and nothing the build needs."""
    allowed = [line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]
    for stage in dockerfile_stages():
        for keyword, args in stage:
            if keyword == "COPY" and not args.startswith("--from"):
                for source in args.split()[:-1]:
                    assert source.rstrip("/").split("/")[0] in allowed, source
