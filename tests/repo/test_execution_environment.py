# Copyright: (c) 2025, asgard.mlflow contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The execution environment: examples/awx/execution-environment.yml (the build definition) really
builds a context that carries everything the collection's Python code imports, and no kubectl; and
meta/execution-environment.yml (the collection's dependency metadata, relative to the collection root)
is what ansible-builder's own introspection reads when any EE installs the collection.

`ansible-builder create` runs for real (offline: it only writes the build context); the plugins are
scanned with `ast`, so a module or module_utils that lands later with a new third-party import fails
here until requirements.txt (which the EE uses) lists it.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EE_FILE = ROOT / "examples" / "awx" / "execution-environment.yml"
META_EE = ROOT / "meta" / "execution-environment.yml"
# Packages the EE gets from elsewhere than the python requirements: ansible-core itself.
PROVIDED = {"ansible-core"}
# Binaries the collection promises not to need.
FORBIDDEN_BINARIES = ("kubectl", "oc", "helm")


def _tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is not installed in {BIN.parent}; it is pinned in requirements-dev.txt (make setup)"
    return str(path)


def _galaxy_version() -> str:
    return yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> Path:
    """Build the collection tarball the EE bakes in, then `ansible-builder create` the context."""
    out = ROOT / ".build" / "ee"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("asgard-mlflow-*.tar.gz"):
        old.unlink()
    subprocess.run([_tool("ansible-galaxy"), "collection", "build", "--force", "--output-path", str(out), "."],
                   cwd=ROOT, check=True, capture_output=True, text=True)
    ctx = tmp_path_factory.mktemp("ee") / "context"
    proc = subprocess.run([_tool("ansible-builder"), "create", "-f", str(EE_FILE), "-c", str(ctx),
                           "--output-filename", "Containerfile"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"ansible-builder create failed:\n{proc.stdout}\n{proc.stderr}"
    assert "No matches" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return ctx


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level names imported by plugins/**.py that are neither stdlib nor ansible: name -> files."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("__future__", "ansible", "ansible_collections"):
                    continue
                found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _collection_imports() -> dict[str, set[str]]:
    """Other collections imported by plugins/**.py: 'namespace.name' -> files."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            mod = node.module if isinstance(node, ast.ImportFrom) and node.level == 0 else None
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [mod] if mod else []
            for name in names:
                parts = name.split(".")
                if parts[0] == "ansible_collections" and len(parts) >= 3:
                    fqcn = f"{parts[1]}.{parts[2]}"
                    if fqcn != "asgard.mlflow":
                        found.setdefault(fqcn, set()).add(str(path.relative_to(ROOT)))
    return found


def _requirements(path: Path) -> list[Requirement]:
    reqs = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            reqs.append(Requirement(line))
    return reqs


def _closure(names: set[str]) -> dict[str, str]:
    """Every distribution the named ones pull in (installed metadata, markers evaluated): dist -> via."""
    seen = {n: n for n in names}
    todo = list(names)
    while todo:
        name = todo.pop()
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for spec in requires:
            req = Requirement(spec)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            dep = canonicalize_name(req.name)
            if dep not in seen:
                seen[dep] = seen[name]
                todo.append(dep)
    return seen


def test_definition_is_schema_3_with_the_repo_requirements():
    ee = yaml.safe_load(EE_FILE.read_text())
    assert ee["version"] == 3
    deps = ee["dependencies"]
    assert (EE_FILE.parent / deps["python"]).resolve() == ROOT / "requirements.txt"
    assert (EE_FILE.parent / deps["galaxy"]).resolve() == ROOT / "requirements.yml"
    assert (EE_FILE.parent / deps["system"]).resolve() == ROOT / "meta" / "bindep.txt"
    # The ansible-core the EE installs must satisfy meta/runtime.yml and admit the dev pin.
    core = Requirement(deps["ansible_core"]["package_pip"])
    runtime = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())["requires_ansible"]
    minimum = Version(re.fullmatch(r">=\s*([0-9.]+)", runtime.strip()).group(1))
    dev_pin = re.search(r"^ansible-core==(\S+)", (ROOT / "requirements-dev.txt").read_text(), re.M).group(1)
    assert core.specifier.contains(dev_pin), f"EE ansible_core {core} does not admit the tested {dev_pin}"
    lows = [Version(s.version) for s in core.specifier if s.operator in (">=", ">")]
    assert lows and min(lows) >= minimum, f"EE ansible_core {core} admits releases below requires_ansible {runtime}"


def test_collection_metadata_is_what_ansible_builder_introspects(tmp_path):
    """Install the built tarball like the EE build does, then run ansible-builder's introspection on it."""
    from ansible_builder._target_scripts import introspect

    meta = yaml.safe_load(META_EE.read_text())
    assert meta["dependencies"] == {"python": "requirements.txt", "system": "meta/bindep.txt"}
    out = tmp_path / "build"
    subprocess.run([_tool("ansible-galaxy"), "collection", "build", "--output-path", str(out), "."],
                   cwd=ROOT, check=True, capture_output=True, text=True)
    (tarball,) = out.glob("asgard-mlflow-*.tar.gz")
    # cwd and env away from the repo's ansible.cfg (whose collections_path already holds asgard.mlflow)
    subprocess.run([_tool("ansible-galaxy"), "collection", "install", "--force", "--offline", "--no-deps", "-p",
                    str(tmp_path / "collections"), str(tarball)], check=True, capture_output=True, text=True,
                   cwd=tmp_path, env={"PATH": str(BIN), "HOME": str(tmp_path)})
    found = introspect.process(data_dir=str(tmp_path / "collections"))
    python = found["python"]["asgard.mlflow"]
    system = found["system"]["asgard.mlflow"]
    assert [str(r) for r in _requirements(ROOT / "requirements.txt")] == [str(Requirement(x)) for x in python]
    assert any(line.startswith("ca-certificates") for line in system), system
    assert not any(re.match(r"(kubectl|oc|helm)\b", line) for line in system), system


def test_context_has_every_input(context):
    build = context / "_build"
    assert (context / "Containerfile").is_file()
    for name in ("requirements.txt", "requirements.yml", "bindep.txt"):
        assert (build / name).is_file(), f"{name} missing from the context"
    assert (build / "requirements.txt").read_text() == (ROOT / "requirements.txt").read_text()
    tarball = build / "collections" / f"asgard-mlflow-{_galaxy_version()}.tar.gz"
    assert tarball.is_file(), "the asgard.mlflow tarball is not baked into the EE context"
    containerfile = (context / "Containerfile").read_text()
    assert "/build/collections/asgard-mlflow-*.tar.gz" in containerfile
    assert "USER 1000" in containerfile


def test_context_python_requirements_cover_every_plugin_import(context):
    imports = _third_party_imports()
    # The scanner must see the client libraries the module_utils are known to use; if it finds nothing,
    # it is broken, not the EE complete.
    assert {"kubernetes", "websocket"} <= set(imports), imports
    listed = {canonicalize_name(r.name) for r in _requirements(context / "_build" / "requirements.txt")}
    covered = _closure(listed | {canonicalize_name(p) for p in PROVIDED})
    mapping = md.packages_distributions()
    problems = []
    for name, files in sorted(imports.items()):
        dists = mapping.get(name)
        if not dists:
            problems.append(f"{name} (imported by {', '.join(sorted(files))}) is not installed in the venv, "
                            "so no distribution can be checked; add it to requirements.txt")
            continue
        if not any(canonicalize_name(d) in covered for d in dists):
            problems.append(f"{name} (distribution {'/'.join(dists)}, imported by {', '.join(sorted(files))}) "
                            "is not in requirements.txt nor pulled in by anything listed there")
    assert not problems, "EE python requirements miss:\n" + "\n".join(problems)


def test_context_galaxy_requirements_cover_every_collection_import(context):
    wanted = _collection_imports()
    reqs = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    listed = {c["name"] if isinstance(c, dict) else c for c in reqs["collections"]}
    assert "kubernetes.core" in listed
    missing = {k: sorted(v) for k, v in wanted.items() if k not in listed}
    assert not missing, f"collections imported by plugins but not in the EE galaxy requirements: {missing}"
    # The kubernetes.core the tests run against must be admitted by the EE's spec.
    import ansible_collections.kubernetes.core as kc

    installed = json.loads((Path(kc.__path__[0]) / "MANIFEST.json").read_text())["collection_info"]["version"]
    spec = next(c for c in reqs["collections"] if isinstance(c, dict) and c["name"] == "kubernetes.core")
    assert SpecifierSet(spec.get("version", ">=0").replace(" ", "")).contains(installed), (spec, installed)


def test_no_kubectl_anywhere(context):
    from bindep.depends import Depends

    rules = Depends((ROOT / "meta" / "bindep.txt").read_text())._rules  # parses, or raises on bad syntax
    packages = {rule[0] for rule in rules}
    assert "ca-certificates" in packages
    assert not packages & set(FORBIDDEN_BINARIES), packages
    bindep_ctx = (context / "_build" / "bindep.txt").read_text()
    assert not re.search(r"^\s*(kubectl|oc|helm)\b", bindep_ctx, re.M)
    containerfile = (context / "Containerfile").read_text()
    assert "RUN ! command -v kubectl" in containerfile, "the build no longer guards against a kubectl binary"
    for line in containerfile.splitlines():
        if line.startswith(("RUN", "COPY", "ADD")) and re.search(r"\b(kubectl|oc|helm)\b", line):
            assert line.strip() == "RUN ! command -v kubectl", f"Containerfile brings a Kubernetes CLI: {line}"
    # And the code: no task shells out to a Kubernetes CLI, no plugin executes one.
    offenders = _cli_tasks() + _cli_calls()
    assert not offenders, "a Kubernetes CLI binary is used:\n" + "\n".join(offenders)


COMMAND_MODULES = {"command", "shell", "raw", "script", "expect"}
CLI_RE = re.compile(r"^\s*(\S*/)?(kubectl|oc|helm)(\s|$)")


def _walk_tasks(node, where, out):
    if isinstance(node, list):
        for item in node:
            _walk_tasks(item, where, out)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key.split(".")[-1] in COMMAND_MODULES and key.split(".")[0] in ("ansible", key):
                args = value.get("cmd") or value.get("argv") if isinstance(value, dict) else value
                text = " ".join(map(str, args)) if isinstance(args, list) else str(args or "")
                if CLI_RE.search(text):
                    out.append(f"{where}: {key}: {text}")
            if key in ("block", "rescue", "always", "tasks", "pre_tasks", "post_tasks", "handlers"):
                _walk_tasks(value, where, out)


def _cli_tasks() -> list[str]:
    out: list[str] = []
    for path in sorted(list((ROOT / "roles").glob("*/tasks/*.yml")) + list((ROOT / "roles").glob("*/handlers/*.yml"))
                       + list((ROOT / "playbooks").glob("*.yml"))):
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            out.append(f"{path.relative_to(ROOT)}: not YAML: {exc}")
            continue
        _walk_tasks(data, str(path.relative_to(ROOT)), out)
    return out


def _cli_calls() -> list[str]:
    """Calls like run_command(['kubectl', ...]) / subprocess.run('kubectl ...') in plugins/."""
    out = []
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if func not in {"run_command", "run", "Popen", "call", "check_call", "check_output", "system",
                            "execv", "execvp", "execvpe", "spawnv", "spawnvp", "create_subprocess_exec"}:
                continue
            first = node.args[0]
            if isinstance(first, (ast.List, ast.Tuple)) and first.elts:
                first = first.elts[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str) and CLI_RE.search(first.value):
                out.append(f"{path.relative_to(ROOT)}:{node.lineno}: {func}({first.value!r}, ...)")
    return out
