"""meta/argument_specs.yml documents every variable of defaults/main.yml, with the same default."""

from __future__ import annotations

from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[3] / "roles" / "deploy"


def _load():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    return defaults, specs


def test_keys_in_step():
    defaults, specs = _load()
    assert sorted(defaults) == sorted(specs), (
        f"only in defaults: {sorted(set(defaults) - set(specs))}; only in argument_specs: {sorted(set(specs) - set(defaults))}"
    )


def test_every_option_documented_with_type_and_matching_default():
    defaults, specs = _load()
    types = {"bool": bool, "int": int, "str": str, "list": list, "dict": dict}
    for name, spec in specs.items():
        assert name.startswith("deploy_"), name
        assert spec.get("type") in {*types, "raw"}, name
        assert isinstance(spec.get("description"), str) and len(spec["description"]) > 15, name
        if defaults[name] is None:
            assert "default" not in spec, name
            continue
        assert spec.get("default") == defaults[name], name
        if spec["type"] in types:
            assert isinstance(defaults[name], types[spec["type"]]), name
        if spec["type"] == "list":
            assert spec.get("elements") in {"str", "dict"}, name
        if "choices" in spec:
            assert defaults[name] in spec["choices"], name


def test_internal_vars_prefixed():
    internal = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    assert internal and all(k.startswith("_deploy_") for k in internal), [k for k in internal if not k.startswith("_deploy_")]


def test_registered_results_prefixed():
    import re

    for f in (ROLE / "tasks").glob("*.yml"):
        for reg in re.findall(r"^\s*register:\s*(\S+)", f.read_text(), re.M):
            assert reg.startswith("__deploy_"), f"{f.name}: {reg}"


def test_docs_table_lists_every_variable():
    defaults, _specs = _load()
    doc = (ROLE.parents[1] / "docs" / "deploy.md").read_text()
    missing = [k for k in defaults if f"| `{k}` |" not in doc]
    assert not missing, f"docs/deploy.md lacks rows for {missing}"
