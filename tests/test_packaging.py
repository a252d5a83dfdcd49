"""The image installs a lock; the lock must satisfy what pyproject.toml asks for. The wheel, installed
in a fresh venv, holds every template and static file and runs `render` and the plugin as the checkout does."""

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import types
import zipfile

import pytest
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
    from inference_operator.config import OperatorConfig
    from inference_operator.desired import render

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


# ---- the wheel, installed: what `pip install` of a release gives a user ----------------------------

PACKAGE = ROOT / "operator" / "inference_operator"
TEMPLATES = PACKAGE / "desired" / "templates"
STATIC = PACKAGE / "kubectl" / "static"
SAMPLES = sorted((ROOT / "manifests" / "samples").glob("*.yaml"))


def package_files(directory: pathlib.Path) -> list[str]:
    """The files under directory, as paths inside the wheel (inference_operator/...); bytecode left out."""
    return sorted(str(p.relative_to(PACKAGE.parent)) for p in directory.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> types.SimpleNamespace:
    """The wheel built from a copy of what the Dockerfile copies (the checkout gets no build/ nor
    egg-info), installed with pip into a fresh venv. The venv borrows the dependencies of the one
    running the tests through a .pth line (installing them would need the index and minutes): a
    directory a .pth line adds runs no .pth of its own, so the checkout's editable install stays out,
    and the test asserts the package is imported from the venv."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    (source / "operator").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / "operator" / "inference_operator",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))

    def run(*argv: str | pathlib.Path) -> subprocess.CompletedProcess:
        result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600, cwd=work)
        assert result.returncode == 0, f"{' '.join(map(str, argv))}:\n{result.stdout[-2000:]}{result.stderr[-4000:]}"
        return result

    # Built as a release is: in isolation, with the setuptools pyproject.toml asks for.
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", work / "dist", source)
    (wheel,) = (work / "dist").glob("inference_operator-*.whl")
    venv = work / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel)
    site = pathlib.Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    borrowed = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "borrowed-dependencies.pth").write_text("".join(f"{p}\n" for p in borrowed))
    return types.SimpleNamespace(wheel=wheel, venv=venv, python=python, bin=venv / "bin", site=site, cwd=work)


def run_installed(installed: types.SimpleNamespace, *argv: str | pathlib.Path) -> subprocess.CompletedProcess:
    """A command of the venv, run outside the checkout with no PYTHONPATH and no config from the environment."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME") and not k.startswith("INFERENCE_OPERATOR_")}
    env["PATH"] = f"{installed.bin}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120, env=env,
                          cwd=installed.cwd)


def test_the_wheel_holds_every_module_template_and_static_file(installed):
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = wheel.read(entry_points).decode()
    templates, static = package_files(TEMPLATES), package_files(STATIC)
    assert templates and static
    assert any(t.endswith(".j2") for t in templates) and "inference_operator/kubectl/static/dashboard.js" in static
    missing = [f for f in package_files(PACKAGE) if f not in names]  # templates and static among them
    assert not missing, f"not in {installed.wheel.name}: {missing}"
    project_scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name, target in project_scripts.items():
        assert f"{name} = {target}" in scripts, (name, scripts)


def test_the_installed_package_is_the_wheels_not_the_checkouts(installed):
    result = run_installed(installed, installed.python, "-c", "import inference_operator; print(inference_operator.__file__)")
    assert result.returncode == 0, result.stderr
    assert pathlib.Path(result.stdout.strip()).is_relative_to(installed.site), result.stdout


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.stem for s in SAMPLES])
def test_the_installed_render_renders_each_sample_as_the_checkout_does(installed, sample):
    """Its templates are found in the installed package; the output is the checkout's, byte for byte."""
    result = run_installed(installed, installed.bin / "inference-operator", "render", "-f", sample)
    assert result.returncode == 0, result.stderr
    assert "kind: Deployment" in result.stdout
    checkout = run_installed(installed, sys.executable, "-m", "inference_operator.cli", "render", "-f", sample)
    assert checkout.returncode == 0, checkout.stderr
    assert result.stdout == checkout.stdout
    plugin = run_installed(installed, installed.bin / "kubectl-inference", "render", "-f", sample)
    assert plugin.returncode == 0, plugin.stderr
    assert plugin.stdout == result.stdout


def test_the_installed_plugin_answers_help_and_serves_every_static_file(installed):
    result = run_installed(installed, installed.bin / "kubectl-inference", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: kubectl inference"), result.stdout  # its prog, as kubectl runs it
    for command in ("get", "render", "crd", "dashboard"):
        assert command in result.stdout, command
    listed = run_installed(installed, installed.python, "-c",
                           "from inference_operator.kubectl import dashboard as d; "
                           "print(d.STATIC); print(*sorted(d.STATIC_FILES))")
    assert listed.returncode == 0, listed.stderr
    directory, files = listed.stdout.splitlines()
    assert pathlib.Path(directory).is_relative_to(installed.site), directory
    assert files.split() == sorted(p.name for p in STATIC.iterdir() if p.is_file())
