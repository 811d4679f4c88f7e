"""Run ansible-inventory (the real CLI, in this process) with the Kubernetes API faked at the module_utils boundary.

    python inventory_driver.py <scenario.json> <ansible-inventory arguments...>

``scenario.json``: ``{"clusters": {<key>: {"deployments": [...], "services": [...], "errors": {regex: status}}
| "unreachable"}, "calls": <path>}``. A connection's key is its rendered ``context``, else ``host``, else
``default``. Each API client built is appended to ``calls`` as one JSON line ``{key, auth options given}`` (names
only). Everything else is the real plugin, module_utils, Ansible config, templating, cache and JSON output.
Not a test module (no ``test_`` prefix).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "module_utils"))


def main() -> None:
    import ansible.cli
    from ansible.cli.inventory import InventoryCLI

    scenario_path, args = sys.argv[1], sys.argv[2:]
    init = ansible.cli.init_plugin_loader

    def patched_init(*a, **kw):
        init(*a, **kw)
        from ansible_collections.asgard.mlflow.plugins.module_utils import _kube
        from fleet_fixtures import FakeKube

        scenario = json.loads(Path(scenario_path).read_text())

        def api_from_auth(auth, timeout=15.0, retries=1):
            key = auth.get("context") or auth.get("host") or "default"
            with open(scenario["calls"], "a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "options": sorted(auth), "timeout": timeout}) + "\n")
            cluster = scenario["clusters"][key]
            if cluster == "unreachable":
                return FakeKube(errors={".": None}, host=str(key))
            return FakeKube(cluster.get("deployments", []), cluster.get("services", []), cluster.get("errors"),
                            host=str(key))

        _kube.api_from_auth = api_from_auth

    ansible.cli.init_plugin_loader = patched_init
    InventoryCLI.cli_executor(["ansible-inventory", *args])


if __name__ == "__main__":
    main()
