"""Render our kustomizations offline: the subset of kustomize that deploy/kubernetes uses.

Supported: ``resources`` (files and directories), ``namespace``, ``labels`` (metadata only),
``secretGenerator`` (files, ``disableNameSuffixHash``), and strategic-merge ``patches`` by path,
with the merge keys of the fields we patch and ``$patch: delete``. Anything else raises, so a
kustomization that outgrows this renderer fails the tests loudly instead of rendering wrongly.
When ``kubectl`` is installed, a test checks this renderer against ``kubectl kustomize``.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

KNOWN_FIELDS = {"apiVersion", "kind", "namespace", "labels", "resources", "patches", "secretGenerator",
                "generatorOptions"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "RuntimeClass",
                  "CustomResourceDefinition"}
# Strategic-merge keys of the Kubernetes list fields our patches touch (others are replaced whole).
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath", "ports": "containerPort", "imagePullSecrets": "name"}


class UnsupportedKustomization(ValueError):
    pass


def render(directory: Path) -> list[Obj]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KNOWN_FIELDS
    if unknown:
        raise UnsupportedKustomization(f"{directory}: fields {sorted(unknown)} are not supported")
    objects: list[Obj] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        if path.is_dir():
            objects += render(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    options = kustomization.get("generatorOptions", {})
    for generator in kustomization.get("secretGenerator", []):
        objects.append(_secret(directory, generator, options))
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise UnsupportedKustomization(f"{directory}: only patches with a path are supported")
        _apply_patch(objects, yaml.safe_load((directory / patch["path"]).read_text()))
    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kustomization["namespace"]
    for entry in kustomization.get("labels", []):
        if entry.get("includeSelectors") or entry.get("includeTemplates"):
            raise UnsupportedKustomization("labels: only metadata labels are supported")
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(entry["pairs"])
    return objects


def _secret(directory: Path, generator: Obj, options: Obj) -> Obj:
    if not options.get("disableNameSuffixHash") or set(generator) - {"name", "files", "type"}:
        raise UnsupportedKustomization("secretGenerator: only files, without a name hash")
    data = {}
    for item in generator["files"]:
        key, _, path = item.partition("=") if "=" in item else (Path(item).name, "", item)
        data[key] = base64.b64encode((directory / path).read_bytes()).decode()
    metadata: Obj = {"name": generator["name"]}
    if options.get("labels"):
        metadata["labels"] = dict(options["labels"])
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata,
            "type": generator.get("type", "Opaque"), "data": data}


def _apply_patch(objects: list[Obj], patch: Obj) -> None:
    for obj in objects:
        if obj["kind"] == patch["kind"] and obj["metadata"]["name"] == patch["metadata"]["name"]:
            merged = strategic_merge(obj, patch)
            obj.clear()
            obj.update(merged)
            return
    raise UnsupportedKustomization(f"patch target {patch['kind']}/{patch['metadata']['name']} not found")


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            merged[key] = strategic_merge(merged[key], value, key) if key in merged else copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        items: list[Obj] = copy.deepcopy(base)
        added: list[Obj] = []  # kustomize puts the patch's new items first, in the patch's order
        for item in patch:
            index = next((i for i, existing in enumerate(items) if existing.get(key) == item.get(key)), None)
            if item.get("$patch") == "delete":
                if index is None:
                    raise UnsupportedKustomization(f"{field}: nothing to delete with {key}={item.get(key)}")
                del items[index]
            elif index is None:
                added.append(copy.deepcopy(item))
            else:
                items[index] = strategic_merge(items[index], item, field)
        return added + items
    return copy.deepcopy(patch)
