"""The import contracts of pyproject.toml ([tool.importlinter]), checked by import-linter's lint-imports:
kept by the package as it is, and each one broken on purpose in a copy of the package, so that a
contract that stopped checking anything (a typo in a module name, a standard-library module that the
graph leaves out) fails here."""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).parents[1]
PYPROJECT = ROOT / "pyproject.toml"
PACKAGE = ROOT / "operator" / "inference_operator"
# The console script of the same environment as the interpreter running the tests.
LINT_IMPORTS = pathlib.Path(sys.executable).parent / "lint-imports"
# A safety net for a hung process only: lint-imports takes well under a second here.
TIMEOUT_S = 300

# One deliberate violation per case: (contract id, file under inference_operator/, the line appended to
# it, every contract id the line breaks). Each contract has at least one case; the test below checks it.
BREAKAGES = [
    ("layers", "desired/render.py", "from inference_operator.controller import runner", {"layers", "pure"}),
    ("layers", "rollout/plan.py", "from inference_operator.status import conditions", {"layers"}),
    ("layers", "naming.py", "from inference_operator.modelrepo import model_config", {"layers"}),
    ("layers", "api/validation.py", "from inference_operator import config", {"layers"}),
    ("pure", "rollout/canary.py", "import kopf", {"pure"}),
    ("pure", "status/conditions.py", "import subprocess", {"pure"}),
    ("pure", "promql.py", "import socket", {"pure"}),
    ("pure", "naming.py", "from http import client", {"pure"}),
    ("pure", "desired/signals.py", "from inference_operator import prometheus", {"pure"}),
    ("pure", "modelrepo/model_config.py", "from inference_operator.modelrepo import fetch", {"pure"}),
    ("init-container", "modelrepo/fetch.py", "from inference_operator.controller import runner", {"layers", "init-container"}),
    ("init-container", "modelrepo/fetch.py", "import kubernetes", {"init-container"}),
    ("kubectl-plugin", "controller/runner.py", "from inference_operator.kubectl import plugin", {"layers", "kubectl-plugin"}),
    ("kubectl-plugin", "cli.py", "from inference_operator.kubectl import plugin", {"layers", "kubectl-plugin"}),
    ("kubectl-not-controller", "kubectl/userclient.py", "from inference_operator.controller import metrics",
     {"kubectl-not-controller"}),
    ("kubectl-not-controller", "kubectl/dashboard.py", "import kopf", {"kubectl-not-controller"}),
    ("pure", "status/pods.py", "from inference_operator import kube", {"pure"}),
]


def configured_contracts() -> dict[str, str]:
    """Contract id -> name, as pyproject.toml configures them."""
    contracts = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    return {contract["id"]: contract["name"] for contract in contracts}


def words(text: str) -> str:
    """The text with every run of whitespace made one space: rich wraps long lines at its width."""
    return " ".join(text.split())


def lint_imports(pythonpath: pathlib.Path, cwd: pathlib.Path) -> tuple[int, str]:
    """lint-imports with the real pyproject.toml on the inference_operator found on pythonpath."""
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} is missing: install the test extra (make venv)"
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "COLUMNS": "200", "NO_COLOR": "1"}
    proc = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(PYPROJECT)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
    )
    return proc.returncode, proc.stdout + proc.stderr


def verdicts(output: str) -> dict[str, str]:
    """Contract id -> "KEPT" or "BROKEN", as lint-imports reported each configured contract."""
    found = {}
    for contract_id, name in configured_contracts().items():
        match = re.search(re.escape(words(name)) + r" (KEPT|BROKEN)\b", words(output))
        assert match, f"lint-imports did not report contract {name!r}:\n{output}"
        found[contract_id] = match.group(1)
    return found


def test_every_contract_has_a_deliberate_breakage_and_no_case_names_a_missing_contract():
    # A contract dropped from pyproject.toml (or renamed) fails here rather than going unchecked.
    assert set(configured_contracts()) == {case[0] for case in BREAKAGES}


def test_the_package_keeps_every_contract(tmp_path):
    code, output = lint_imports(ROOT / "operator", cwd=tmp_path)
    configured = configured_contracts()
    assert code == 0, output
    assert re.search(rf"Contracts: {len(configured)} kept, 0 broken\.", output), output
    assert verdicts(output) == dict.fromkeys(configured, "KEPT"), output


@pytest.mark.parametrize(
    ("contract", "path", "line", "broken"),
    BREAKAGES,
    ids=[f"{contract}:{path}:{line}" for contract, path, line, _ in BREAKAGES],
)
def test_a_deliberate_violation_breaks_the_contract(tmp_path, contract, path, line, broken):
    copy = tmp_path / "inference_operator"
    # Only the Python sources: lint-imports reads nothing else.
    shutil.copytree(
        PACKAGE, copy,
        ignore=lambda folder, names: [n for n in names if (pathlib.Path(folder) / n).is_file() and not n.endswith(".py")],
    )
    target = copy / path
    assert target.is_file(), f"{path} is not in the package any more: pick another file for this case"
    # At the end of the module: after any docstring and `from __future__` import, and still an import
    # of the module as far as the graph is concerned.
    target.write_text(target.read_text() + f"\n{line}\n")

    code, output = lint_imports(tmp_path, cwd=tmp_path)

    assert code != 0, output
    assert contract in broken
    name = configured_contracts()[contract]
    assert re.search(re.escape(words(name)) + " BROKEN", words(output)), output
    assert {cid for cid, verdict in verdicts(output).items() if verdict == "BROKEN"} == broken, output
    # The report names the injected import: lint-imports read the copy, not the installed package.
    assert f"{dotted(path)} -> {imported(line)}" in words(output), output


def dotted(path: str) -> str:
    """The module of a file under inference_operator/."""
    return "inference_operator." + path.removesuffix(".py").replace("/", ".")


def imported(line: str) -> str:
    """The module an injected import adds to the graph: external ones are squashed to their top level."""
    parts = line.split()
    module = parts[1] if parts[0] == "import" else f"{parts[1]}.{parts[3]}"
    return module if module.startswith("inference_operator.") else module.split(".")[0]


def loaded_by(probe: str) -> list[str]:
    """The modules a fresh interpreter holds after running ``probe``."""
    code = f"import sys\n{probe}\nprint('\\n'.join(sorted(sys.modules)))\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def foreign(loaded: list[str], packages: tuple[str, ...], libraries: tuple[str, ...]) -> list[str]:
    return [m for m in loaded if m.startswith(packages) or m.split(".")[0] in libraries]


def test_the_init_containers_command_loads_nothing_of_the_controller_or_the_plugin():
    """What `inference-operator fetch-model` loads at run time (the CLI, then the fetcher it imports
    when the command runs) holds no module of the controller or the plugin, nor kopf or the
    kubernetes client: the contracts, checked on the process itself."""
    loaded = loaded_by(
        "from inference_operator import cli\n"
        "try:\n"
        "    cli.main(['fetch-model', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "from inference_operator.modelrepo import fetch\n"
    )
    assert "inference_operator.modelrepo.fetch" in loaded
    assert foreign(loaded, ("inference_operator.controller", "inference_operator.kubectl"),
                   ("kopf", "kubernetes")) == []


def test_the_plugins_process_loads_nothing_of_the_controller():
    """Every module of kubectl inference, and its render command run on a sample, load no module of
    the controller and no kopf: the plugin talks to the API server through kube.py alone."""
    sample = ROOT / "manifests" / "samples" / "resnet.yaml"
    loaded = loaded_by(
        "import contextlib, io\n"
        "from inference_operator.kubectl import controls, dashboard, overview, plugin, userclient\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert plugin.main(['render', '-f', {str(sample)!r}]) == 0\n"
    )
    assert "inference_operator.kubectl.dashboard" in loaded
    assert foreign(loaded, ("inference_operator.controller",), ("kopf",)) == []
