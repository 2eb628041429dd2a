"""deploy/k8s/overlays/kserve's InferenceService and ServingRuntime through the kserve SDK's typed models.

The SDK runs in its own environment (.venv-kserve, constraints-kserve.txt; tests/deploy/conftest.py builds it), so
the rendered objects go as JSON to tests/deploy/kserve_sdk_check.py, run with that environment's Python, which
answers a verdict per object. The SDK's models alone are lenient: its deserializer drops fields it does not know
and converts wrong types (str(5), bool("false")) without a word. So the check deserializes each object into its
typed model (V1beta1InferenceService, V1alpha1ServingRuntime, with the core types they embed), then serializes it
back and compares with the input: a field that does not survive the round trip is unknown to the SDK, a value that
comes back changed had the wrong type; the models' constructors refuse missing required fields and the
deserializer values it cannot convert. Enum values (protocolVersion) are not in the models: test_k8s.py's field
check holds those.

A copy broken in one place must be refused, each break on its own (so neither the check nor the SDK passes
vacuously). Marked slow: the first run builds the environment (15-30 s on 2 cores, from the package index).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess

import pytest

from tests.deploy.test_k8s import ROOT, needs_kubectl, one, render

pytestmark = [pytest.mark.slow, needs_kubectl]

CHECK = os.path.join(ROOT, "tests", "deploy", "kserve_sdk_check.py")
KSERVE_KINDS = {"InferenceService", "ServingRuntime"}


def kserve_objects(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["apiVersion"].startswith("serving.kserve.io/")]


def sdk_check(python: str, objects: list[dict]) -> dict:
    proc = subprocess.run(
        [python, CHECK], input=json.dumps(objects), capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    answer = json.loads(proc.stdout)
    assert len(answer["verdicts"]) == len(objects)
    return answer


def _pin(name: str) -> str:
    text = open(os.path.join(ROOT, "constraints-kserve.txt"), encoding="utf-8").read()
    return re.search(rf"^{name}==(\S+)$", text, re.M).group(1)


def _predictor(obj):
    return obj["spec"]["predictor"]


def _runtime_container(obj):
    return obj["spec"]["containers"][0]


# name -> (kind, breaker, a fragment the problem must contain)
BREAKS = {
    # unknown fields: the deserializer drops them; the round trip finds them
    "predictor field": ("InferenceService", lambda o: _predictor(o).update(minReplica=1), "predictor/minReplica"),
    "model field": (
        "InferenceService",
        lambda o: _predictor(o)["model"].update(protocolVersions="v2"),
        "model/protocolVersions",
    ),
    "spec field": ("InferenceService", lambda o: o["spec"].update(predictors={}), "spec/predictors"),
    "runtime field": ("ServingRuntime", lambda o: o["spec"].update(protocolVersion="v2"), "spec/protocolVersion"),
    "runtime container field": (
        "ServingRuntime",
        lambda o: _runtime_container(o).update(volumeMount=[]),
        "containers/0/volumeMount",
    ),
    "format field": (
        "ServingRuntime",
        lambda o: o["spec"]["supportedModelFormats"][0].update(autoselect=False),
        "supportedModelFormats/0/autoselect",
    ),
    # wrong types: refused by the deserializer, or converted and found by the round trip
    "replicas text": ("InferenceService", lambda o: _predictor(o).update(minReplicas="one"), "refused it"),
    "replicas string": ("InferenceService", lambda o: _predictor(o).update(maxReplicas="4"), "predictor/maxReplicas"),
    "runtime number": ("InferenceService", lambda o: _predictor(o)["model"].update(runtime=5), "model/runtime"),
    "multiModel string": ("ServingRuntime", lambda o: o["spec"].update(multiModel="false"), "spec/multiModel"),
    "protocols string": ("ServingRuntime", lambda o: o["spec"].update(protocolVersions="v2"), "protocolVersions"),
    "tolerations object": (
        "InferenceService",
        lambda o: _predictor(o).update(tolerations={"key": "nvidia.com/gpu"}),
        "predictor/tolerations",
    ),
    "port name": (
        "ServingRuntime",
        lambda o: _runtime_container(o)["ports"][0].update(containerPort="http"),
        "refused it",
    ),
    "label number": ("InferenceService", lambda o: o["metadata"]["labels"].update(tier=1), "labels/tier"),
    # required fields, and a kind that is not KServe's
    "no model format": ("InferenceService", lambda o: _predictor(o)["model"].pop("modelFormat"), "model_format"),
    "no containers": ("ServingRuntime", lambda o: o["spec"].pop("containers"), "containers"),
    "kind typo": ("InferenceService", lambda o: o.update(kind="InferenceServices"), "not a KServe kind"),
}


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    objects = kserve_objects(render("kserve"))
    assert {o["kind"] for o in objects} == KSERVE_KINDS
    return objects


@pytest.fixture(scope="module")
def broken_verdicts(kserve_python, rendered) -> dict:
    """Every broken copy in one run of the check: name -> its problems."""
    copies = []
    for kind, breaker, _ in BREAKS.values():
        broken = copy.deepcopy(one(rendered, kind))
        breaker(broken)
        copies.append(broken)
    verdicts = sdk_check(kserve_python, copies)["verdicts"]
    return {name: v["problems"] for name, v in zip(BREAKS, verdicts)}


def test_kserve_objects_pass_the_sdk_models(kserve_python, rendered):
    answer = sdk_check(kserve_python, rendered)
    assert [(v["kind"], v["problems"]) for v in answer["verdicts"]] == [(o["kind"], []) for o in rendered]
    if not os.environ.get("BIT_KSERVE_PYTHON"):  # the environment is constraints-kserve.txt's
        assert (answer["kserve"], answer["kubernetes"]) == (_pin("kserve"), _pin("kubernetes"))


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_sdk_models_refuse_the_break(broken_verdicts, name):
    problems = broken_verdicts[name]
    assert problems, f"{name}: the SDK check passed a broken copy"
    assert any(BREAKS[name][2] in p for p in problems), problems


def test_unknown_field_is_found_by_the_round_trip(broken_verdicts):
    """The SDK's deserializer accepts an unknown field: only the round trip refuses it (kserve_sdk_check.py)."""
    assert broken_verdicts["predictor field"] == [
        "spec/predictor/minReplica: not a field of the SDK's model (dropped in the round trip)"
    ]
