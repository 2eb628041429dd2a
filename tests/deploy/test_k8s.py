"""deploy/k8s (docs/kubernetes.md): every overlay renders with `kubectl kustomize`, and what it renders holds.

What checks what:
- Core kinds (Deployment, Service, Job, HorizontalPodAutoscaler, NetworkPolicy, ...): Kubernetes 1.32's own schemas,
  strict (unknown fields refused), through kubernetes-validate.
- Custom resources have no schema installable here, so they get FIELD CHECKS: the fields their documentation
  requires or allows, written down below, plus the core types they embed checked against the core schemas
  (pod templates, containers, pod-level fields). Field-checked: InferenceService and ServingRuntime (KServe v1beta1
  / v1alpha1), RayService (KubeRay ray.io/v1), ServiceMonitor (Prometheus Operator), and prometheus-adapter's rule
  (a Helm values file, not a Kubernetes object). The InferenceService and ServingRuntime also go through the kserve
  SDK's typed models, in the SDK's own environment (no kserve release installs beside constraints.txt: every one
  pins protobuf < 7 and psutil < 6): test_kserve_sdk.py.
- Security and the contracts between the pieces: Triton's arguments (bit-serve's: models fixed, admin APIs
  restricted to a header no client can send), no secret on a command line, the image cap, NetworkPolicies, the
  restricted pod standard, GPU requests, the HPA's metric against the adapter's rule, the Ray application's
  arguments against scale/serve_app.py's contract.

Each check is a function that returns its problems; the tests below assert there are none on what the overlays
render, and that each check finds the problem in a copy broken on purpose (so no check passes vacuously).
"""

from __future__ import annotations

import copy
import functools
import os
import re
import shutil
import subprocess

import pytest
import yaml

from bit_trt.engine.preprocess import DEFAULT_MAX_IMAGE_PIXELS
from bit_trt.serve.triton_lockdown import ADMIN_APIS, RESTRICTION

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K8S = os.path.join(ROOT, "deploy", "k8s")
OVERLAYS = ("triton", "kserve", "kuberay", "kuberay-gpu")
KUBERNETES = "1.32.0"
KUBECTL = shutil.which("kubectl")


FIELD_CHECKED = {
    ("serving.kserve.io/v1beta1", "InferenceService"),
    ("serving.kserve.io/v1alpha1", "ServingRuntime"),
    ("ray.io/v1", "RayService"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}
IMAGES = {"bit-trt:cpu", "bit-trt:ray", "bit-trt:triton", "bit-trt:ray-gpu"}  # docs/docker.md, docs/kubernetes.md
GPU = "nvidia.com/gpu"

needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (it renders the overlays)")


# ---- rendering and walking --------------------------------------------------------------------------------------


@functools.cache
def _rendered(overlay: str) -> tuple:
    proc = subprocess.run(
        [KUBECTL, "kustomize", os.path.join(K8S, "overlays", overlay)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def render(overlay: str) -> list[dict]:
    return copy.deepcopy(list(_rendered(overlay)))


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"{len(found)} {kind}s"
    return found[0]


def pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    """Every pod spec an overlay runs, by where it is: core workloads' templates, Ray's group templates, and the
    InferenceService's predictor (its pod-level fields, with the model and the runtime's container as containers)."""
    specs = []
    for d in docs:
        name = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            specs.append((name, d["spec"]["template"]["spec"]))
        elif d["kind"] == "RayService":
            cluster = d["spec"]["rayClusterConfig"]
            specs.append((f"{name} head", cluster["headGroupSpec"]["template"]["spec"]))
            for group in cluster["workerGroupSpecs"]:
                specs.append((f"{name} {group['groupName']}", group["template"]["spec"]))
        elif d["kind"] == "InferenceService":
            predictor = d["spec"]["predictor"]
            runtime = _runtime_of(docs, predictor)
            container = {**(runtime or {}).get("containers", [{}])[0], **_container_part(predictor["model"])}
            pod = {k: v for k, v in predictor.items() if k not in KSERVE_PREDICTOR_FIELDS}
            specs.append((name, {**pod, "containers": [container]}))
    return specs


def containers(spec: dict) -> list[dict]:
    return list(spec.get("initContainers", [])) + list(spec.get("containers", []))


def _runtime_of(docs: list[dict], predictor: dict) -> dict | None:
    name = predictor.get("model", {}).get("runtime")
    for d in of_kind(docs, "ServingRuntime"):
        if d["metadata"]["name"] == name:
            return d["spec"]
    return None


# ---- core kinds: Kubernetes 1.32's schemas, strict -----------------------------------------------------------------


@functools.cache
def _definitions():
    from kubernetes_validate.utils import schema_contents
    from referencing import Resource

    return Resource.from_contents(
        schema_contents(f"kubernetes-json-schema/{_schema_dir()}/_definitions.json", KUBERNETES)
    )


def _schema_dir() -> str:
    return f"v{KUBERNETES}-local-strict"


@functools.cache
def _validator(schema_name: str):
    """kubernetes_validate.validate's validator, built once per schema (the definitions are 1.3 MB of JSON)."""
    import jsonschema
    from kubernetes_validate.utils import schema_contents
    from referencing import Registry, Resource

    schema = schema_contents(f"kubernetes-json-schema/{_schema_dir()}/{schema_name}.json", KUBERNETES)
    registry = _definitions() @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def schema_problems(obj: dict, schema_name: str, where: str) -> list[str]:
    return [
        f"{where}: {'/'.join(map(str, e.absolute_path)) or '.'}: {e.message}"
        for e in _validator(schema_name).iter_errors(obj)
    ]


def _schema_name(doc: dict) -> str:
    """kubernetes-validate's file name for a kind: apps/v1 Deployment -> deployment-apps-v1."""
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", doc["apiVersion"])
    return f"{doc['kind'].lower()}-{api}"


def core_problems(docs: list[dict]) -> list[str]:
    """Every object that is not field-checked must be a core kind of Kubernetes 1.32, valid under its schema."""
    import importlib.resources

    folder = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema" / _schema_dir()
    problems = []
    for d in docs:
        if (d["apiVersion"], d["kind"]) in FIELD_CHECKED:
            continue
        name = _schema_name(d)
        if not (folder / f"{name}.json").is_file():
            problems.append(f"{d['kind']} {d['apiVersion']}: not a Kubernetes {KUBERNETES} kind, and not field-checked")
            continue
        problems += schema_problems(d, name, f"{d['kind']}/{d['metadata']['name']}")
    return problems


def embedded_core_problems(docs: list[dict]) -> list[str]:
    """The core types inside custom resources, against the core schemas: Ray's pod templates and the autoscaler's
    security context, the ServingRuntime's containers, the InferenceService's pod-level fields and model container."""
    problems = []
    for d in of_kind(docs, "RayService"):
        cluster = d["spec"]["rayClusterConfig"]
        groups = [("head", cluster["headGroupSpec"])] + [(g["groupName"], g) for g in cluster["workerGroupSpecs"]]
        for name, group in groups:
            problems += schema_problems(group["template"], "podtemplatespec-v1", f"RayService {name} template")
        context = cluster.get("autoscalerOptions", {}).get("securityContext", {})
        problems += schema_problems(context, "securitycontext-v1", "RayService autoscalerOptions.securityContext")
    for d in of_kind(docs, "ServingRuntime"):
        for c in d["spec"]["containers"]:
            problems += schema_problems(c, "container-v1", f"ServingRuntime container {c.get('name')}")
    for d in of_kind(docs, "InferenceService"):
        predictor = d["spec"]["predictor"]
        pod = {k: v for k, v in predictor.items() if k not in KSERVE_PREDICTOR_FIELDS}
        problems += schema_problems({**pod, "containers": [{"name": "x"}]}, "podspec-v1", "InferenceService predictor")
        model = {"name": "kserve-container", **_container_part(predictor.get("model", {}))}
        problems += schema_problems(model, "container-v1", "InferenceService predictor.model")
    return problems


# ---- KServe: FIELD CHECK ----------------------------------------------------------------------------------------
# KServe's v1beta1 PredictorSpec is a PodSpec (inlined) plus these fields; its ModelSpec is a Container plus these.
# The lists are KServe's (the InferenceService CRD and SDK models, v0.15 to v0.21): a name outside them and outside
# PodSpec/Container is refused by the core schema check above.
KSERVE_PREDICTOR_FIELDS = {
    "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType", "autoScaling",
    "containerConcurrency", "timeout", "canaryTrafficPercent", "logger", "batcher", "labels", "annotations",
    "deploymentStrategy", "storageUris", "workerSpec", "model", "triton", "onnx", "sklearn", "xgboost", "tensorflow",
    "pytorch", "lightgbm", "paddle", "pmml", "huggingface",
}  # fmt: skip
KSERVE_MODEL_FIELDS = {"modelFormat", "runtime", "runtimeVersion", "protocolVersion", "storageUri", "storage"}
KSERVE_PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}
KSERVE_RUNTIME_FIELDS = {
    "supportedModelFormats", "protocolVersions", "multiModel", "disabled", "containers", "volumes", "nodeSelector",
    "affinity", "tolerations", "imagePullSecrets", "labels", "annotations", "builtInAdapter", "grpcEndpoint",
    "grpcDataEndpoint", "httpDataEndpoint", "replicas", "storageHelper", "hostIPC", "workerSpec", "schedulerName",
}  # fmt: skip


def _container_part(model: dict) -> dict:
    return {k: v for k, v in model.items() if k not in KSERVE_MODEL_FIELDS}


def kserve_problems(docs: list[dict]) -> list[str]:
    problems = []
    runtimes = {d["metadata"]["name"]: d for d in of_kind(docs, "ServingRuntime")}
    for r in runtimes.values():
        extra = set(r["spec"]) - KSERVE_RUNTIME_FIELDS
        if extra:
            problems.append(f"ServingRuntime spec: not KServe fields: {sorted(extra)}")
        if not set(r["spec"].get("protocolVersions", [])) <= KSERVE_PROTOCOLS | {"grpc-v2"}:
            problems.append(f"ServingRuntime protocolVersions: {r['spec'].get('protocolVersions')}")
        for f in r["spec"].get("supportedModelFormats", []):
            if set(f) - {"name", "version", "autoSelect", "priority"} or "name" not in f:
                problems.append(f"ServingRuntime supportedModelFormats entry: {f}")
    for d in of_kind(docs, "InferenceService"):
        if d["apiVersion"] != "serving.kserve.io/v1beta1" or set(d) - {"apiVersion", "kind", "metadata", "spec"}:
            problems.append("InferenceService: apiVersion or top-level fields")
        if set(d["spec"]) - {"predictor", "transformer", "explainer"}:
            problems.append(f"InferenceService spec: not KServe fields: {sorted(set(d['spec']) - {'predictor'})}")
        predictor = d["spec"].get("predictor", {})
        model = predictor.get("model", {})
        if model.get("modelFormat", {}).get("name") != "triton" or set(model.get("modelFormat", {})) - {
            "name",
            "version",
        }:
            problems.append(f"InferenceService model.modelFormat: {model.get('modelFormat')}")
        if model.get("protocolVersion") != "v2":
            problems.append(f"InferenceService model.protocolVersion: {model.get('protocolVersion')!r}, not v2")
        runtime = runtimes.get(model.get("runtime"))
        if runtime is None:
            problems.append(f"InferenceService model.runtime {model.get('runtime')!r}: no such ServingRuntime here")
        else:
            formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
            if "triton" not in formats or "v2" not in runtime["spec"]["protocolVersions"]:
                problems.append("the ServingRuntime does not serve triton models over v2")
        claim = {p["metadata"]["name"] for p in of_kind(docs, "PersistentVolumeClaim")}
        uri = model.get("storageUri", "")
        if not re.fullmatch(r"pvc://([a-z0-9-]+)/\S+", uri) or uri.split("/")[2] not in claim:
            problems.append(f"InferenceService storageUri {uri!r}: not pvc://<a claim here>/<path>")
        annotations = d["metadata"].get("annotations", {})
        if annotations.get("serving.kserve.io/deploymentMode") != "RawDeployment":
            problems.append("InferenceService: not RawDeployment")
        if annotations.get("serving.kserve.io/autoscalerClass") != "external":
            problems.append("InferenceService: KServe would add its own autoscaler beside ours (autoscalerClass)")
    return problems


# ---- KubeRay: FIELD CHECK ---------------------------------------------------------------------------------------
# From KubeRay's ray.io/v1 API reference (v1.5-v1.7): the fields a RayService may have, and those we rely on.
RAYSERVICE_FIELDS = {
    "serveConfigV2", "rayClusterConfig", "serveService", "upgradeStrategy", "excludeHeadPodFromServeSvc",
    "serviceUnhealthySecondThreshold", "deploymentUnhealthySecondThreshold", "rayClusterDeletionDelaySeconds",
}  # fmt: skip
RAYCLUSTER_FIELDS = {
    "rayVersion", "enableInTreeAutoscaling", "autoscalerOptions", "headGroupSpec", "workerGroupSpecs", "authOptions",
    "headServiceAnnotations", "suspend", "gcsFaultToleranceOptions", "managedBy", "upgradeStrategy",
}  # fmt: skip
HEAD_FIELDS = {"rayStartParams", "template", "serviceType", "headService", "enableIngress", "resources", "labels"}
WORKER_FIELDS = {
    "groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template", "numOfHosts", "scaleStrategy",
    "suspend", "idleTimeoutSeconds", "resources", "labels",
}  # fmt: skip
AUTOSCALER_FIELDS = {
    "resources", "image", "imagePullPolicy", "env", "envFrom", "volumeMounts", "securityContext", "idleTimeoutSeconds",
    "upscalingMode", "version", "options",
}  # fmt: skip
# scale/serve_app.py's application builder and its arguments (all strings in serveConfigV2).
SERVE_APP = "bit_trt.scale.serve_app:app_builder"
SERVE_ARGS = {
    "bundle", "expected_sha256", "backend", "precision", "min_replicas", "max_replicas", "target_ongoing_requests",
    "max_batch", "batch_wait_timeout_s", "replica_cpus", "replica_gpus", "max_image_pixels",
}  # fmt: skip


def _ray_pin() -> str:
    text = open(os.path.join(ROOT, "constraints.txt"), encoding="utf-8").read()
    return re.search(r"^ray==(\S+)$", text, re.M).group(1)


def serve_apps(ray_service: dict) -> list[dict]:
    return yaml.safe_load(ray_service["spec"]["serveConfigV2"])["applications"]


def kuberay_problems(docs: list[dict]) -> list[str]:
    problems = []
    for d in of_kind(docs, "RayService"):
        spec = d["spec"]
        cluster = spec.get("rayClusterConfig", {})
        levels = [
            ("spec", spec, RAYSERVICE_FIELDS),
            ("rayClusterConfig", cluster, RAYCLUSTER_FIELDS),
            ("headGroupSpec", cluster.get("headGroupSpec", {}), HEAD_FIELDS),
            ("autoscalerOptions", cluster.get("autoscalerOptions", {}), AUTOSCALER_FIELDS),
        ]
        levels += [
            (f"workerGroupSpecs[{g.get('groupName')}]", g, WORKER_FIELDS) for g in cluster.get("workerGroupSpecs", [])
        ]
        for where, fields, allowed in levels:
            extra = set(fields) - allowed
            if extra:
                problems.append(f"RayService {where}: not KubeRay fields: {sorted(extra)}")
        if {"serveConfigV2", "rayClusterConfig"} - set(spec):
            problems.append("RayService: serveConfigV2 and rayClusterConfig are required")
            continue
        cluster = spec["rayClusterConfig"]
        if cluster.get("rayVersion") != _ray_pin():
            problems.append(f"rayVersion {cluster.get('rayVersion')!r} is not constraints.txt's ray {_ray_pin()}")
        groups = [cluster.get("headGroupSpec", {})] + cluster.get("workerGroupSpecs", [])
        for group in groups:
            params = group.get("rayStartParams")
            if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
                problems.append(f"rayStartParams must be a map of strings: {params!r}")
            if "template" not in group:
                problems.append("a Ray group without a pod template")
        for g in cluster.get("workerGroupSpecs", []):
            if not g.get("minReplicas", 0) <= g.get("replicas", 0) <= g.get("maxReplicas", 0):
                problems.append(f"worker group {g.get('groupName')}: replicas outside [minReplicas, maxReplicas]")
        if not isinstance(spec["serveConfigV2"], str):
            problems.append("serveConfigV2 must be a string (a Serve config as YAML)")
            continue
        for app in serve_apps(d):
            if app.get("import_path") != SERVE_APP:
                problems.append(f"Serve application import_path {app.get('import_path')!r}, not {SERVE_APP}")
            args = app.get("args", {})
            if set(args) != SERVE_ARGS:
                problems.append(f"Serve args differ from the contract: {sorted(set(args) ^ SERVE_ARGS)}")
            if not all(isinstance(v, str) for v in args.values()):
                problems.append("Serve args must all be strings")
            if not re.fullmatch(r"[0-9a-f]{64}", str(args.get("expected_sha256", ""))):
                problems.append(f"expected_sha256 {args.get('expected_sha256')!r} is not a sha256")
            for name, spec_ in pod_specs([d]):
                mounts = [m["mountPath"] for c in spec_["containers"] for m in c.get("volumeMounts", [])]
                if not any(str(args.get("bundle", "")).startswith(m.rstrip("/") + "/") for m in mounts):
                    problems.append(f"{name}: the bundle {args.get('bundle')!r} is on no volume it mounts")
            workers = cluster.get("workerGroupSpecs", [])
            limits = [
                c.get("resources", {}).get("limits", {}) for g in workers for c in g["template"]["spec"]["containers"]
            ]
            gpus = {int(limit.get(GPU, 0)) for limit in limits}
            if {int(args.get("replica_gpus", "0"))} != gpus:
                problems.append(f"replica_gpus {args.get('replica_gpus')!r} but the workers have {sorted(gpus)} GPUs")
    return problems


# ---- ServiceMonitor, HPA and prometheus-adapter: FIELD CHECK -------------------------------------------------------
ADAPTER_VALUES = os.path.join(K8S, "components", "triton-autoscaling", "prometheus-adapter-values.yaml")


# The Prometheus Operator's ServiceMonitor spec and endpoint fields (monitoring.coreos.com/v1) that may appear here.
SERVICEMONITOR_FIELDS = {
    "selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels", "podTargetLabels", "sampleLimit",
    "scrapeProtocols", "attachMetadata",
}  # fmt: skip
ENDPOINT_FIELDS = {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels", "relabelings"}
# Triton's cumulative queue time over its successful requests, both as rates, per the adapter's <<.GroupBy>>.
QUEUE_OVER_REQUESTS = re.compile(
    r"rate\(nv_inference_queue_duration_us\{<<\.LabelMatchers>>.*\}\[\w+\]\).*by \(<<\.GroupBy>>\)"
    r".*/.*rate\(nv_inference_request_success\{<<\.LabelMatchers>>",
    re.S,
)


def adapter_rules() -> list[dict]:
    with open(ADAPTER_VALUES, encoding="utf-8") as f:
        return yaml.safe_load(f)["rules"]["custom"]


def metrics_problems(docs: list[dict], rules: list[dict]) -> list[str]:
    """ServiceMonitor: the fields the Prometheus Operator's API requires (selector, endpoints naming a port of a
    selected Service). HPA: scales a workload of this overlay on the custom metric the adapter's rule serves, and
    the rule reads Triton's queue time over its request count, per pod."""
    problems = []
    services = of_kind(docs, "Service")
    for sm in of_kind(docs, "ServiceMonitor"):
        spec = sm["spec"]
        if set(spec) - SERVICEMONITOR_FIELDS:
            problems.append(f"ServiceMonitor spec: unknown fields {sorted(spec)}")
        wanted = spec.get("selector", {}).get("matchLabels", {})
        selected = [s for s in services if wanted and wanted.items() <= s["metadata"].get("labels", {}).items()]
        if not selected:
            problems.append(f"ServiceMonitor selects no Service here ({wanted})")
        for ep in spec.get("endpoints", []):
            if set(ep) - ENDPOINT_FIELDS:
                problems.append(f"ServiceMonitor endpoint: unknown fields {sorted(ep)}")
            if not re.fullmatch(r"\d+[smh]", ep.get("interval", "30s")):
                problems.append(f"ServiceMonitor interval {ep.get('interval')!r}")
            for s in selected:
                if ep.get("port") not in {p.get("name") for p in s["spec"]["ports"]}:
                    problems.append(
                        f"ServiceMonitor port {ep.get('port')!r} is not a port name of {s['metadata']['name']}"
                    )
        if not spec.get("endpoints"):
            problems.append("ServiceMonitor without endpoints")
    served = {r["name"]["as"]: r for r in rules}
    for rule in rules:
        if set(rule) - {"seriesQuery", "resources", "name", "metricsQuery", "seriesFilters"}:
            problems.append(f"adapter rule: unknown fields {sorted(rule)}")
        overrides = rule.get("resources", {}).get("overrides", {})
        if {k: v.get("resource") for k, v in overrides.items()} != {"namespace": "namespace", "pod": "pod"}:
            problems.append("adapter rule: the namespace and pod labels must map to their resources")
        query = rule.get("metricsQuery", "")
        if not QUEUE_OVER_REQUESTS.search(query):
            problems.append("adapter rule: not Triton's queue time over its successful requests, per <<.GroupBy>>")
        if "nv_inference_queue_duration_us" not in rule.get("seriesQuery", ""):
            problems.append("adapter rule: seriesQuery does not find Triton's queue time")
    workloads = {d["metadata"]["name"] for d in of_kind(docs, "Deployment")}
    workloads |= {f"{d['metadata']['name']}-predictor" for d in of_kind(docs, "InferenceService")}
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        if target.get("kind") != "Deployment" or target.get("name") not in workloads:
            problems.append(f"HPA scales {target}, which this overlay does not run")
        for m in hpa["spec"].get("metrics", []):
            name = m.get("pods", {}).get("metric", {}).get("name")
            if m.get("type") != "Pods" or name not in served:
                problems.append(f"HPA metric {name!r} is not one the adapter serves ({sorted(served)})")
    return problems


# ---- Triton's arguments, the image cap, secrets ------------------------------------------------------------------


def triton_containers(docs: list[dict]) -> list[tuple[str, dict]]:
    found = []
    for name, spec in pod_specs(docs):
        for c in spec["containers"]:
            if "tritonserver" in c.get("command", []) or c.get("image") == "bit-trt:triton":
                found.append((f"{name} {c.get('name')}", c))
    return found


def triton_problems(docs: list[dict]) -> list[str]:
    """bit-serve's Triton (docs/serving.md, "Security"): models fixed at start; the admin APIs restricted over HTTP
    and gRPC to a header no client can send; ready means every model is; the repository is bit-triton's, written
    with the image cap."""
    problems = []
    for name, c in triton_containers(docs):
        args = c.get("args", [])
        flags = {}
        for a in args:
            key, _, value = a.partition("=")
            flags.setdefault(key, []).append(value)
        if flags.get("--model-control-mode") != ["none"]:
            problems.append(f"{name}: --model-control-mode is {flags.get('--model-control-mode')}, not none")
        for forbidden in ("--load-model", "--model-load-thread-count", "--allow-model-repository-polling"):
            if forbidden in flags:
                problems.append(f"{name}: {forbidden}")
        for flag in ("--http-restricted-api", "--grpc-restricted-protocol"):
            if flags.get(flag) != [RESTRICTION]:
                problems.append(f"{name}: {flag} must close {ADMIN_APIS} to a header no client can send")
        if flags.get("--strict-readiness", ["true"]) != ["true"]:
            problems.append(f"{name}: --strict-readiness off: ready before the models are")
        probe = c.get("readinessProbe", {}).get("httpGet", {})
        if probe.get("path") != "/v2/health/ready":
            problems.append(f"{name}: readiness is not /v2/health/ready")
        repository = (flags.get("--model-repository") or [""])[0]
        if not repository:
            problems.append(f"{name}: no --model-repository")
    jobs = [c for d in of_kind(docs, "Job") for c in d["spec"]["template"]["spec"]["containers"]]
    writers = [c for c in jobs if c.get("command", [None])[0] == "bit-triton"]
    if triton_containers(docs) and len(writers) != 1:
        problems.append("Triton serves a repository that no bit-triton Job here writes")
    for c in writers:
        caps = [a for a in c.get("args", []) if a.startswith("--max-image-pixels=")]
        if caps != [f"--max-image-pixels={DEFAULT_MAX_IMAGE_PIXELS}"]:
            problems.append(f"bit-triton: the image cap {caps} is not --max-image-pixels={DEFAULT_MAX_IMAGE_PIXELS}")
        if not any(a.startswith("--max-decode-mb=") for a in c.get("args", [])):
            problems.append("bit-triton: no --max-decode-mb")
        positional = [a for a in c.get("args", []) if not a.startswith("-")]
        if len(positional) != 2:
            problems.append(f"bit-triton: not BUNDLE OUT: {positional}")
            continue
        for d in of_kind(docs, "Deployment"):
            for tc in d["spec"]["template"]["spec"]["containers"]:
                if tc.get("command") == ["tritonserver"] and f"--model-repository={positional[1]}" not in tc["args"]:
                    problems.append("Triton's --model-repository is not where bit-triton writes")
        for d in of_kind(docs, "InferenceService"):
            uri = d["spec"]["predictor"]["model"].get("storageUri", "")
            if "/models/" + uri.split("/", 3)[3] != positional[1]:
                problems.append(f"the InferenceService's storageUri {uri} is not where bit-triton writes")
    for d in of_kind(docs, "RayService"):
        for app in serve_apps(d):
            if app["args"].get("max_image_pixels") != str(DEFAULT_MAX_IMAGE_PIXELS):
                problems.append(f"Ray application: max_image_pixels {app['args'].get('max_image_pixels')!r}")
    return problems


SECRET_WORD = re.compile(r"token|secret|passw|api[-_]?key|credential", re.I)


def secret_problems(docs: list[dict]) -> list[str]:
    """No secret on a command line (the pod spec, `ps`, /proc/PID/cmdline): no argument names a token, password or
    key, none expands an environment variable ($(VAR)) fed from a Secret, and no such variable has a literal value.
    Ray's token comes from a Secret through env (authOptions), never an argument."""
    problems = []
    for name, spec in pod_specs(docs):
        for c in containers(spec):
            secret_env = {e["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
            for e in c.get("env", []):
                if SECRET_WORD.search(e["name"]) and "value" in e:
                    problems.append(f"{name} {c['name']}: env {e['name']} holds a literal value")
            for a in c.get("command", []) + c.get("args", []):
                if SECRET_WORD.search(a) or any(f"$({v})" in a for v in secret_env):
                    problems.append(f"{name} {c['name']}: a secret on the command line: {a!r}")
    for d in of_kind(docs, "RayService"):
        if d["spec"]["rayClusterConfig"].get("authOptions", {}).get("mode") != "token":
            problems.append("RayService: Ray token authentication is off (authOptions.mode)")
    return problems


# ---- NetworkPolicies, Services, pod security, images, GPUs ------------------------------------------------------


def _selects(selector: dict, labels: dict) -> bool:
    """Whether a policy may select the pod: matchExpressions are not evaluated, so a policy with them counts as
    selecting (its ingress rules are then held to the same limits)."""
    return selector.get("matchLabels", {}).items() <= labels.items()


def _admitted(docs: list[dict], labels: dict, port: int) -> list[dict] | None:
    """The peers that may reach `port` on a pod with `labels` (None: no policy selects the pod, so anyone)."""
    policies = [p for p in of_kind(docs, "NetworkPolicy") if _selects(p["spec"]["podSelector"], labels)]
    if not policies:
        return None
    peers = []
    for p in policies:
        for rule in p["spec"].get("ingress", []):
            ports = {q.get("port") for q in rule.get("ports", [])}
            if not rule.get("ports") or port in ports:
                peers += rule.get("from", [{}])  # no `from`: everyone
    return peers


RAY_HEAD = {"ray.io/is-ray-node": "yes", "ray.io/node-type": "head"}
RAY_WORKER = {"ray.io/is-ray-node": "yes", "ray.io/node-type": "worker"}
OPERATOR_NAMESPACE = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kuberay-system"}}}
RAY_PODS = {"podSelector": {"matchLabels": {"ray.io/is-ray-node": "yes"}}}


def _client_peer(peer: dict, label: str) -> bool:
    selector = peer.get("podSelector") or peer.get("namespaceSelector") or {}
    return set(peer) <= {"podSelector", "namespaceSelector"} and selector.get("matchLabels") == {label: "true"}


def network_problems(docs: list[dict]) -> list[str]:
    problems = []
    deny = [
        p for p in of_kind(docs, "NetworkPolicy") if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")
    ]
    if not deny or "Ingress" not in deny[0]["spec"].get("policyTypes", []):
        problems.append("no default-deny ingress policy")
    for s in of_kind(docs, "Service"):
        if s["spec"].get("type", "ClusterIP") != "ClusterIP":
            problems.append(f"Service {s['metadata']['name']} is {s['spec']['type']}: reachable from outside")
    for p in of_kind(docs, "NetworkPolicy"):
        for rule in p["spec"].get("ingress", []):
            for peer in rule.get("from", [{}]):
                if peer == {} or peer.get("namespaceSelector") == {} or "ipBlock" in peer:
                    problems.append(f"NetworkPolicy {p['metadata']['name']}: admits any namespace or address")
    # Triton: inference from labelled clients (and KServe's gateway), metrics from monitoring only.
    for d in of_kind(docs, "Deployment"):
        if d["metadata"]["name"] != "bit-triton":
            continue
        labels = d["spec"]["template"]["metadata"]["labels"]
        for port in (8000, 8001):
            peers = _admitted(docs, labels, port)
            if peers is None or not all(_client_peer(x, "bit-trt.io/triton-client") for x in peers):
                problems.append(f"Triton's port {port} is open beyond bit-trt.io/triton-client pods: {peers}")
    for d in of_kind(docs, "InferenceService"):
        labels = d["spec"]["predictor"].get("labels", {})
        for port in (8080, 9000):
            peers = _admitted(docs, labels, port)
            gateway = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-system"}}}
            if peers is None or not all(_client_peer(x, "bit-trt.io/triton-client") or x == gateway for x in peers):
                problems.append(f"KServe predictor port {port} is open beyond its clients: {peers}")
    # Ray: GCS and the dashboard from Ray's own pods and the operator only; Serve's HTTP from labelled clients.
    if of_kind(docs, "RayService"):
        for port in (6379, 8265):
            peers = _admitted(docs, RAY_HEAD, port)
            if peers is None or not all(x in (RAY_PODS, OPERATOR_NAMESPACE) for x in peers):
                problems.append(f"the Ray head's port {port} is open beyond Ray's pods and the operator: {peers}")
        for labels in (RAY_HEAD, RAY_WORKER):
            peers = _admitted(docs, labels, 8000)
            if peers is None or not all(x == RAY_PODS or _client_peer(x, "bit-trt.io/ray-client") for x in peers):
                problems.append(f"Serve's HTTP on {labels['ray.io/node-type']} is open beyond its clients: {peers}")
        for d in of_kind(docs, "RayService"):
            cluster = d["spec"]["rayClusterConfig"]
            for spec in [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]:
                ports = {p["containerPort"] for c in spec["template"]["spec"]["containers"] for p in c.get("ports", [])}
                if 10001 in ports:
                    problems.append("the Ray Client port (10001, remote code) is exposed")
    return problems


def pod_security_problems(docs: list[dict]) -> list[str]:
    """The "restricted" Pod Security Standard the namespace enforces: non-root, no privilege escalation, no
    capabilities, the runtime's seccomp profile; and the images' user (uid 10001), who owns the bundle."""
    problems = []
    namespace = one(docs, "Namespace")["metadata"]["labels"]
    if namespace.get("pod-security.kubernetes.io/enforce") != "restricted":
        problems.append("the namespace does not enforce the restricted pod security standard")
    for name, spec in pod_specs(docs):
        pod = spec.get("securityContext", {})
        for c in containers(spec):
            sc = {**pod, **c.get("securityContext", {})}
            where = f"{name} {c.get('name')}"
            if sc.get("runAsNonRoot") is not True or sc.get("runAsUser", 10001) != 10001:
                problems.append(f"{where}: not non-root as uid 10001")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{where}: capabilities not dropped")
            if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                problems.append(f"{where}: no RuntimeDefault seccomp profile")
    for d in of_kind(docs, "RayService"):
        sc = d["spec"]["rayClusterConfig"].get("autoscalerOptions", {}).get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False or sc.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append("RayService autoscaler sidecar: not held to the restricted standard")
    return problems


def resource_problems(docs: list[dict]) -> list[str]:
    """Images from docs/docker.md (and docs/kubernetes.md's GPU Ray image); a GPU is asked for as Kubernetes needs
    it (an extended resource: limit, and request equal to it), one per serving pod; every container has requests
    and a memory limit."""
    problems = []
    for name, spec in pod_specs(docs):
        for c in containers(spec):
            where = f"{name} {c.get('name')}"
            if c.get("image") not in IMAGES:
                problems.append(f"{where}: image {c.get('image')!r} is none of {sorted(IMAGES)}")
            res = c.get("resources", {})
            if not res.get("requests") or "memory" not in res.get("limits", {}):
                problems.append(f"{where}: no requests or no memory limit")
            requested, limited = res.get("requests", {}).get(GPU), res.get("limits", {}).get(GPU)
            if requested != limited or limited not in (None, 1):
                problems.append(f"{where}: {GPU} request {requested} and limit {limited}: want 1 and 1, or none")
            if limited and c.get("image") not in ("bit-trt:triton", "bit-trt:ray-gpu"):
                problems.append(f"{where}: a GPU for a CPU image")
    for where, c in triton_containers(docs):
        if c.get("resources", {}).get("limits", {}).get(GPU) != 1:
            problems.append(f"{where}: Triton without its GPU")
    return problems


# ---- the tests --------------------------------------------------------------------------------------------------

CHECKS = {
    "core": core_problems,
    "embedded": embedded_core_problems,
    "kserve": kserve_problems,
    "kuberay": kuberay_problems,
    "metrics": lambda docs: metrics_problems(docs, adapter_rules()),
    "triton": triton_problems,
    "secrets": secret_problems,
    "network": network_problems,
    "pod-security": pod_security_problems,
    "resources": resource_problems,
}
EXPECTED_KINDS = {
    "triton": {"Deployment", "Service", "Job", "HorizontalPodAutoscaler", "ServiceMonitor", "NetworkPolicy"},
    "kserve": {"InferenceService", "ServingRuntime", "Job", "HorizontalPodAutoscaler", "ServiceMonitor", "Service"},
    "kuberay": {"RayService", "NetworkPolicy"},
    "kuberay-gpu": {"RayService", "NetworkPolicy"},
}


def test_every_overlay_is_tested():
    assert sorted(os.listdir(os.path.join(K8S, "overlays"))) == sorted(OVERLAYS)


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_with_the_objects_it_promises(overlay):
    docs = render(overlay)
    kinds = {d["kind"] for d in docs}
    assert EXPECTED_KINDS[overlay] | {"Namespace", "PersistentVolumeClaim", "NetworkPolicy"} <= kinds
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"bit-trt"}


@needs_kubectl
@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes(overlay, check):
    assert CHECKS[check](render(overlay)) == []


# Each check, on a copy broken in one place: it must say so.
def _container(docs, kind, index=0):
    return one(docs, kind)["spec"]["template"]["spec"]["containers"][index]


def _ray(docs):
    return one(docs, "RayService")["spec"]


def _set_serve_arg(docs, key, value):
    spec = _ray(docs)
    config = yaml.safe_load(spec["serveConfigV2"])
    config["applications"][0]["args"][key] = value
    spec["serveConfigV2"] = yaml.safe_dump(config)


def _replace_arg(c, prefix, new):
    c["args"] = [new if a.startswith(prefix) else a for a in c["args"] if new is not None or not a.startswith(prefix)]


BREAKS = {
    # core schemas (strict): a wrong type, an unknown field, an unknown kind
    "replicas type": ("triton", "core", lambda d: one(d, "Deployment")["spec"].update(replicas="one")),
    "unknown field": ("triton", "core", lambda d: one(d, "Deployment")["spec"].update(replica=2)),
    "hpa type": ("triton", "core", lambda d: one(d, "HorizontalPodAutoscaler")["spec"].update(maxReplicas="4")),
    "unknown kind": (
        "triton",
        "core",
        lambda d: d.append({"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "x"}}),
    ),
    # core types embedded in custom resources
    "ray template": (
        "kuberay",
        "embedded",
        lambda d: _ray(d)["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0].update(
            volumeMount=[]
        ),
    ),
    "runtime container": (
        "kserve",
        "embedded",
        lambda d: one(d, "ServingRuntime")["spec"]["containers"][0].update(ports=[{"containerPort": "http"}]),
    ),
    "predictor typo": (
        "kserve",
        "embedded",
        lambda d: one(d, "InferenceService")["spec"]["predictor"].update(minReplica=1),
    ),
    "model typo": (
        "kserve",
        "embedded",
        lambda d: one(d, "InferenceService")["spec"]["predictor"]["model"].update(protocolVersions="v2"),
    ),
    # KServe field check
    "protocol": (
        "kserve",
        "kserve",
        lambda d: one(d, "InferenceService")["spec"]["predictor"]["model"].update(protocolVersion="v1"),
    ),
    "runtime name": (
        "kserve",
        "kserve",
        lambda d: one(d, "InferenceService")["spec"]["predictor"]["model"].update(runtime="kserve-tritonserver"),
    ),
    "runtime field": ("kserve", "kserve", lambda d: one(d, "ServingRuntime")["spec"].update(protocolVersion=["v2"])),
    "kserve hpa": (
        "kserve",
        "kserve",
        lambda d: one(d, "InferenceService")["metadata"]["annotations"].pop("serving.kserve.io/autoscalerClass"),
    ),
    # KubeRay field check
    "ray typo": ("kuberay", "kuberay", lambda d: _ray(d)["rayClusterConfig"].update(workerGroupSpec=[])),
    "ray version": ("kuberay", "kuberay", lambda d: _ray(d)["rayClusterConfig"].update(rayVersion="2.9.0")),
    "start params": (
        "kuberay",
        "kuberay",
        lambda d: _ray(d)["rayClusterConfig"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
    ),
    "import path": (
        "kuberay",
        "kuberay",
        lambda d: _ray(d).update(
            serveConfigV2=_ray(d)["serveConfigV2"].replace("serve_app:app_builder", "serve_app:app")
        ),
    ),
    "sha256": ("kuberay", "kuberay", lambda d: _set_serve_arg(d, "expected_sha256", "abc")),
    "serve arg": ("kuberay", "kuberay", lambda d: _set_serve_arg(d, "max_batches", "8")),
    "gpu arg": ("kuberay-gpu", "kuberay", lambda d: _set_serve_arg(d, "replica_gpus", "0")),
    # ServiceMonitor, HPA, adapter
    "monitor port": (
        "triton",
        "metrics",
        lambda d: one(d, "ServiceMonitor")["spec"]["endpoints"][0].update(port="metric"),
    ),
    "hpa metric": (
        "triton",
        "metrics",
        lambda d: one(d, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]["metric"].update(
            name="nv_inference_count"
        ),
    ),
    "hpa target": (
        "kserve",
        "metrics",
        lambda d: one(d, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"].update(name="bit-triton"),
    ),
    # Triton's arguments and the image cap
    "model control": (
        "triton",
        "triton",
        lambda d: _replace_arg(_container(d, "Deployment"), "--model-control-mode", "--model-control-mode=explicit"),
    ),
    "grpc open": (
        "kserve",
        "triton",
        lambda d: _replace_arg(one(d, "ServingRuntime")["spec"]["containers"][0], "--grpc-restricted-protocol", None),
    ),
    "sendable header": (
        "triton",
        "triton",
        lambda d: _replace_arg(
            _container(d, "Deployment"),
            "--http-restricted-api",
            "--http-restricted-api=" + ",".join(ADMIN_APIS) + ":admin-key=admin",
        ),
    ),
    "readiness": (
        "triton",
        "triton",
        lambda d: _container(d, "Deployment")["readinessProbe"]["httpGet"].update(path="/v2/health/live"),
    ),
    "no image cap": ("triton", "triton", lambda d: _replace_arg(_container(d, "Job"), "--max-image-pixels", None)),
    "ray image cap": ("kuberay", "triton", lambda d: _set_serve_arg(d, "max_image_pixels", "0")),
    # secrets
    "token arg": (
        "triton",
        "secrets",
        lambda d: (
            _container(d, "Deployment").update(
                env=[{"name": "ADMIN_KEY", "valueFrom": {"secretKeyRef": {"name": "bit-admin", "key": "key"}}}]
            ),
            _replace_arg(
                _container(d, "Deployment"), "--http-restricted-api", "--http-restricted-api=trace:x=$(ADMIN_KEY)"
            ),
        ),
    ),
    "literal token": (
        "kuberay",
        "secrets",
        lambda d: _ray(d)["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0].update(
            env=[{"name": "RAY_AUTH_TOKEN", "value": "hunter2"}]
        ),
    ),
    "ray auth off": ("kuberay", "secrets", lambda d: _ray(d)["rayClusterConfig"].pop("authOptions")),
    # network
    "gcs open": (
        "kuberay",
        "network",
        lambda d: d.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "oops"},
                "spec": {
                    "podSelector": {"matchLabels": {"ray.io/node-type": "head"}},
                    "ingress": [
                        {"from": [{"namespaceSelector": {"matchLabels": {"team": "web"}}}], "ports": [{"port": 6379}]}
                    ],
                },
            }
        ),
    ),
    "no default deny": (
        "kuberay",
        "network",
        lambda d: d.remove(
            next(p for p in of_kind(d, "NetworkPolicy") if p["metadata"]["name"] == "default-deny-ingress")
        ),
    ),
    "load balancer": ("triton", "network", lambda d: one(d, "Service")["spec"].update(type="LoadBalancer")),
    "triton open": (
        "triton",
        "network",
        lambda d: next(p for p in of_kind(d, "NetworkPolicy") if p["metadata"]["name"] == "bit-triton")["spec"][
            "ingress"
        ][0].pop("from"),
    ),
    "ray client": (
        "kuberay",
        "network",
        lambda d: _ray(d)["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"].append(
            {"name": "client", "containerPort": 10001}
        ),
    ),
    # pod security, images, GPUs
    "root": (
        "kuberay",
        "pod-security",
        lambda d: _ray(d)["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["securityContext"].update(
            runAsUser=0
        ),
    ),
    "escalation": (
        "kserve",
        "pod-security",
        lambda d: one(d, "ServingRuntime")["spec"]["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
    ),
    "foreign image": (
        "triton",
        "resources",
        lambda d: _container(d, "Deployment").update(image="nvcr.io/nvidia/tritonserver:25.10-py3"),
    ),
    "gpu without limit": (
        "triton",
        "resources",
        lambda d: _container(d, "Deployment")["resources"]["limits"].pop(GPU),
    ),
    "two gpus": (
        "kserve",
        "resources",
        lambda d: one(d, "InferenceService")["spec"]["predictor"]["model"]["resources"].update(
            requests={"cpu": "4", "memory": "8Gi", GPU: 2}, limits={"memory": "16Gi", GPU: 2}
        ),
    ),
}


@needs_kubectl
@pytest.mark.parametrize("name", sorted(BREAKS))
def test_check_finds_the_break(name):
    overlay, check, breaker = BREAKS[name]
    docs = render(overlay)
    assert CHECKS[check](docs) == []
    breaker(docs)
    assert CHECKS[check](docs) != []


def test_every_check_is_broken_once():
    assert {check for _, check, _ in BREAKS.values()} == set(CHECKS)


@needs_kubectl
def test_adapter_rule_breaks():
    """The adapter's rule is a Helm values file, not rendered: its field check, broken."""
    rules = adapter_rules()
    assert metrics_problems(render("triton"), rules) == []
    broken = copy.deepcopy(rules)
    broken[0]["metricsQuery"] = broken[0]["metricsQuery"].replace("nv_inference_request_success", "nv_inference_count")
    assert metrics_problems(render("triton"), broken) != []
    broken = copy.deepcopy(rules)
    broken[0]["name"]["as"] = "triton_queue_us"
    assert metrics_problems(render("triton"), broken) != []


@needs_kubectl
def test_schema_check_agrees_with_kubernetes_validate():
    """core_problems builds kubernetes-validate's validator once per schema (for speed): the library's own entry
    point gives the same verdicts, on the rendered objects and on a broken one."""
    import kubernetes_validate

    docs = [d for d in render("triton") if (d["apiVersion"], d["kind"]) not in FIELD_CHECKED]
    for d in docs:
        kubernetes_validate.validate(d, KUBERNETES, strict=True)
    broken = copy.deepcopy(one(docs, "Deployment"))
    broken["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)
    assert core_problems([broken]) != []
