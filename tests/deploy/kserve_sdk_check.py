"""KServe objects through the kserve SDK's typed models. Run by tests/deploy/test_kserve_sdk.py with the Python of
<repo>/.venv-kserve (constraints-kserve.txt), never imported by the tests: kserve does not install beside the main
environment.

stdin: a JSON list of Kubernetes objects. stdout: JSON, {"kserve": <version>, "kubernetes": <client version>,
"verdicts": [{"kind", "name", "problems": [...]}, ...]}, one verdict per object in order; no problems means valid.

How an object is judged:
1. Its apiVersion and kind name a KServe model (InferenceService -> V1beta1InferenceService, ServingRuntime ->
   V1alpha1ServingRuntime, ClusterServingRuntime -> V1alpha1ClusterServingRuntime); anything else is refused.
2. The Kubernetes client's deserializer (ApiClient.deserialize) builds the typed model from the dict, with class
   names looked up in kserve.models and then kubernetes.client.models (KServe's predictor embeds core types:
   V1Container, V1Toleration, ...). The models' constructors refuse a missing required field (a model's
   modelFormat, a runtime's containers, a container's name) and the deserializer refuses a value it cannot convert
   (int("one")): either is a problem.
3. ROUND TRIP. The SDK's models are lenient: the deserializer silently drops a field no model declares, and
   converts primitives instead of refusing them (str(5), bool("false") is True, int("4")). So the model is
   serialized back (ApiClient.sanitize_for_serialization) and compared with the input: a field that did not
   survive is unknown to the SDK, a value that came back changed had the wrong type. One exception: a number
   given for a resource quantity (requests, limits, overhead, sizeLimit) comes back as its string, which
   Kubernetes takes too (a Quantity is an int or a string). A field the SDK adds is its model's default (a
   model's container name '') and is not compared.
   Not caught: a value outside a field's allowed set (the models list no enums: protocolVersion "v9" passes; the
   field check in test_k8s.py holds the values we rely on), and any value of a field typed `object` in the models
   (an IntOrString, such as a probe's port).

kserve/__init__.py imports KServe's model server (FastAPI, gRPC, pandas, ...), which this environment does not
install; kserve.models needs only six, urllib3 and kserve.configuration. So the package is entered without running
its __init__ (a bare module with kserve's path stands in for it), and anything else missing fails loudly here.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import sys
import types

MODELS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
}
QUANTITY_MAPS = {"requests", "limits", "overhead"}  # maps of resource name -> Quantity
QUANTITY_FIELDS = {"sizeLimit"}  # an emptyDir's


def kserve_models() -> types.ModuleType:
    spec = importlib.util.find_spec("kserve")  # finds the package; does not run its __init__
    if spec is None or spec.submodule_search_locations is None:
        raise SystemExit("kserve is not installed in this environment")
    package = types.ModuleType("kserve")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["kserve"] = package
    return importlib.import_module("kserve.models")


def make_client():
    import kubernetes.client

    kserve = kserve_models()
    core = kubernetes.client.models

    class Client(kubernetes.client.ApiClient):
        """kubernetes.client.ApiClient, resolving model names in kserve.models first, then in the core models."""

        def _ApiClient__deserialize(self, data, klass):  # the base class's private __deserialize, for each level
            if isinstance(klass, str) and not klass.startswith(("list[", "dict(")):
                if klass not in self.NATIVE_TYPES_MAPPING:
                    klass = getattr(kserve, klass, None) or getattr(core, klass)
            return super()._ApiClient__deserialize(data, klass)

    return Client()


def _is_quantity(path: tuple) -> bool:
    return (len(path) >= 2 and path[-2] in QUANTITY_MAPS) or (len(path) >= 1 and path[-1] in QUANTITY_FIELDS)


def round_trip_problems(given, kept, path: tuple = ()) -> list[str]:
    where = "/".join(map(str, path)) or "."
    if isinstance(given, dict) and isinstance(kept, dict):
        problems = []
        for key, value in given.items():
            if key not in kept:
                if value is not None:  # null is absent to Kubernetes, and the serializer drops it
                    field = "/".join(map(str, (*path, key)))
                    problems.append(f"{field}: not a field of the SDK's model (dropped in the round trip)")
            else:
                problems += round_trip_problems(value, kept[key], (*path, key))
        return problems
    if isinstance(given, list) and isinstance(kept, list) and len(given) == len(kept):
        return [p for i, (g, k) in enumerate(zip(given, kept)) for p in round_trip_problems(g, k, (*path, i))]
    if type(given) is type(kept) and given == kept:
        return []
    if _is_quantity(path) and type(given) in (int, float) and kept == str(given):
        return []
    return [f"{where}: {json.dumps(given)} came back as {json.dumps(kept)} (a wrong type for the SDK's model)"]


def verdict(client, obj) -> list[str]:
    if not isinstance(obj, dict):
        return [f"not an object: {type(obj).__name__}"]
    model = MODELS.get((obj.get("apiVersion"), obj.get("kind")))
    if model is None:
        return [f"{obj.get('apiVersion')} {obj.get('kind')}: not a KServe kind this check knows ({sorted(MODELS)})"]
    try:
        typed = client.deserialize(types.SimpleNamespace(data=json.dumps(obj)), model)
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        return [f"the SDK's {model} refused it: {type(e).__name__}: {e}"]
    return round_trip_problems(obj, client.sanitize_for_serialization(typed))


def main() -> None:
    objects = json.load(sys.stdin)
    client = make_client()
    verdicts = [
        {"kind": obj.get("kind"), "name": obj.get("metadata", {}).get("name"), "problems": verdict(client, obj)}
        if isinstance(obj, dict)
        else {"kind": None, "name": None, "problems": verdict(client, obj)}
        for obj in objects
    ]
    versions = {name: importlib.metadata.version(name) for name in ("kserve", "kubernetes")}
    json.dump({**versions, "verdicts": verdicts}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
