"""deploy/kubernetes/ as the objects a cluster would get, for the deployment tests.

``render(directory)`` does what ``kubectl kustomize`` does with the parts of kustomize these manifests use:
``resources`` (files and directories), ``configMapGenerator`` (files and literals, no name hash) and
``patches`` of files (strategic merge: maps merged, lists of named items merged by name with new items
first, other lists replaced). It refuses any other field, so a manifest that starts using one fails here
instead of being rendered wrongly; tests/unit/test_deploy.py compares the result with `kubectl kustomize`
where kubectl is installed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = {p.name: p for p in sorted((KUBERNETES / "overlays").iterdir()) if p.is_dir()}
KNOWN_FIELDS = {"apiVersion", "kind", "resources", "patches", "configMapGenerator"}

Manifest = dict[str, Any]


def key(obj: Manifest) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def render(directory: Path) -> list[Manifest]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - KNOWN_FIELDS
    assert not unknown, f"{directory}: the test renderer does not support {sorted(unknown)}"
    objects: list[Manifest] = []
    for resource in spec.get("resources", []):
        path = (directory / resource).resolve()
        if path.is_dir():
            objects += render(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for generator in spec.get("configMapGenerator", []):
        options = generator.get("options", {})
        assert options.get("disableNameSuffixHash") is True, "the test renderer does not hash names"
        data: dict[str, str] = {}
        for entry in generator.get("files", []):
            name, _, source = entry.rpartition("=")
            data[name or Path(source).name] = (directory / source).read_text()
        for literal in generator.get("literals", []):
            name, _, value = literal.partition("=")
            data[name] = value
        metadata: dict[str, Any] = {"name": generator["name"]}
        if options.get("labels"):
            metadata["labels"] = dict(options["labels"])
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data})
    for patch in spec.get("patches", []):
        assert set(patch) == {"path"}, f"{directory}: only file patches are supported, not {patch}"
        body = yaml.safe_load((directory / patch["path"]).read_text())
        (target,) = [obj for obj in objects if key(obj) == key(body)]
        merge(target, body)
    return objects


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for name, value in patch.items():
        current = target.get(name)
        if isinstance(value, dict) and isinstance(current, dict):
            merge(current, value)
        elif isinstance(value, list) and isinstance(current, list) and _named(value) and _named(current):
            by_name = {item["name"]: item for item in current}
            added = []
            for item in value:
                if item["name"] in by_name:
                    merge(by_name[item["name"]], item)
                else:
                    added.append(copy.deepcopy(item))
            target[name] = added + current
        else:
            target[name] = copy.deepcopy(value)


def _named(items: list[Any]) -> bool:
    return all(isinstance(item, dict) and "name" in item for item in items)


def normalized(objects: list[Manifest]) -> dict[tuple[str, str], Manifest]:
    """Objects by (kind, name), with named lists in name order (kustomize may order them differently)."""

    def sort(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: sort(v) for k, v in node.items()}
        if isinstance(node, list):
            items = [sort(v) for v in node]
            return sorted(items, key=lambda item: item["name"]) if items and _named(items) else items
        return node

    return {key(obj): sort(obj) for obj in objects}


def pod_spec(objects: list[Manifest]) -> dict[str, Any]:
    (statefulset,) = [obj for obj in objects if obj["kind"] == "StatefulSet"]
    spec: dict[str, Any] = statefulset["spec"]["template"]["spec"]
    return spec


def agent_container(objects: list[Manifest]) -> dict[str, Any]:
    (container,) = [c for c in pod_spec(objects)["containers"] if c["name"] == "agent"]
    return container


def config_data(objects: list[Manifest]) -> dict[str, str]:
    (config,) = [obj for obj in objects if key(obj) == ("ConfigMap", "streamhouse-config")]
    return {k: "" if v is None else str(v) for k, v in config["data"].items()}
