"""deploy/kubernetes/: every manifest validated, as it is, against the Kubernetes JSON
schemas that the kubernetes-validate package ships (strict: unknown fields fail; no
cluster or network needed), the deployment's invariants, and the Jobs' commands equal to
the compose defaults. `kubectl kustomize` renders the base too where kubectl is present.
No cluster runs here (docs/kubernetes.md)."""
from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests import composefile as cf

kv = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[test]' (kubernetes-validate)")
K8S = cf.ROOT / "deploy" / "kubernetes"
VERSIONS = ("1.29", kv.latest_version())  # oldest with every field used here (podFailurePolicy), newest
GPU_JOBS = {"facehpo-workers", "facehpo-workers-fine", "facehpo-final"}
STOP_GRACE = 300  # docker-compose.yml's stop_grace_period (5m): longer than one epoch


def manifests() -> dict[str, list[dict]]:
    return {str(p.relative_to(K8S)): [d for d in yaml.safe_load_all(p.read_text()) if d]
            for p in sorted(K8S.rglob("*.yaml")) if p.name != "kustomization.yaml"}


def generated_secret() -> dict:
    """What kustomization.yaml's secretGenerator makes (the password file is never committed)."""
    (gen,) = yaml.safe_load((K8S / "kustomization.yaml").read_text())["secretGenerator"]
    keys = [f.split("=")[0] for f in gen["files"]]
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": gen["name"], "namespace": "facehpo"},
            "type": "Opaque", "data": {k: "c2VjcmV0" for k in keys}}


def resources() -> list[dict]:
    return [d for docs in manifests().values() for d in docs] + [generated_secret()]


def schema_errors(doc: dict) -> list[str]:
    errors = []
    for version in VERSIONS:
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as e:
            errors.append(f"{doc['kind']} {doc['metadata'].get('name')} (Kubernetes {version}): "
                          f"{'.'.join(map(str, e.path))}: {e.message}")
    return errors


def pod_specs(docs: list[dict]) -> dict[str, dict]:
    specs = {}
    for d in docs:
        if d["kind"] == "Pod":
            specs[d["metadata"]["name"]] = d["spec"]
        elif d["kind"] in ("Job", "Deployment", "StatefulSet"):
            specs[d["metadata"]["name"]] = d["spec"]["template"]["spec"]
    return specs


def invariant_problems(docs: list[dict]) -> list[str]:
    problems = []
    for name, spec in pod_specs(docs).items():
        for c in spec["containers"]:
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(res.get(kind) or {}):
                    problems.append(f"{name}: no cpu/memory {kind}")
            gpus = (res.get("limits") or {}).get("nvidia.com/gpu")
            if (name in GPU_JOBS) != (gpus == 1):
                problems.append(f"{name}: nvidia.com/gpu limit {gpus}")
        if name in GPU_JOBS and spec.get("terminationGracePeriodSeconds", 30) < STOP_GRACE:
            problems.append(f"{name}: terminationGracePeriodSeconds below {STOP_GRACE} s (one epoch)")
    for d in docs:
        name = d["metadata"]["name"]
        if d["kind"] == "Service" and d["spec"].get("type", "ClusterIP") != "ClusterIP":
            problems.append(f"Service {name} is {d['spec']['type']}: reach it by port-forward only")
        if d["kind"] == "Ingress":
            problems.append(f"Ingress {name} exposes a service")
        if d["kind"] == "Job" and name in ("facehpo-workers", "facehpo-workers-fine"):
            s = d["spec"]
            if s.get("completionMode") != "Indexed" or s.get("parallelism") != s.get("completions"):
                problems.append(f"{name}: not an indexed Job with parallelism == completions")
    return problems


def test_every_manifest_validates_against_the_kubernetes_schemas():
    assert len(resources()) >= 12
    assert [e for d in resources() for e in schema_errors(d)] == []


def test_schema_check_can_fail():
    (job,) = manifests()["jobs/workers.yaml"]
    bad = copy.deepcopy(job)
    bad["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    assert schema_errors(bad)
    bad = copy.deepcopy(job)
    bad["spec"]["parallelism"] = "four"
    assert schema_errors(bad)


def test_the_deployment_invariants_hold():
    docs = resources()
    assert invariant_problems(docs) == []
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("Secret", "facehpo-db"), ("StatefulSet", "facehpo-db"), ("Job", "facehpo-init"),
            ("Job", "facehpo-workers"), ("Job", "facehpo-fine"), ("Job", "facehpo-workers-fine"),
            ("Job", "facehpo-final"), ("Deployment", "facehpo-dashboard"),
            ("Service", "facehpo-dashboard")} <= kinds
    assert all(d["metadata"].get("namespace") == "facehpo" for d in docs if d["kind"] != "Namespace")


def test_invariant_checks_can_fail():
    docs = copy.deepcopy(resources())
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    by[("Service", "facehpo-dashboard")]["spec"]["type"] = "NodePort"
    workers = by[("Job", "facehpo-workers")]
    workers["spec"]["parallelism"] = 2
    pod = workers["spec"]["template"]["spec"]
    pod["terminationGracePeriodSeconds"] = 30
    del pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert sorted(invariant_problems(docs)) == [
        "Service facehpo-dashboard is NodePort: reach it by port-forward only",
        "facehpo-workers: not an indexed Job with parallelism == completions",
        "facehpo-workers: nvidia.com/gpu limit None",
        "facehpo-workers: terminationGracePeriodSeconds below 300 s (one epoch)"]


def test_no_password_in_any_manifest_and_the_generated_one_is_ignored():
    for name, docs in manifests().items():
        for s in cf.strings(docs):
            assert not cf.URL_PASSWORD.search(s), f"{name}: URL with a password: {s!r}"
        for d in docs:
            assert d["kind"] != "Secret", f"{name}: a Secret with its value in the repository"
    (gen,) = yaml.safe_load((K8S / "kustomization.yaml").read_text())["secretGenerator"]
    ignored = (cf.ROOT / ".gitignore").read_text().split()
    for f in gen["files"]:
        assert "/" + str((K8S / f.split("=")[1]).relative_to(cf.ROOT)) in ignored


def test_kustomization_lists_the_base_and_the_settings_match_compose():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name not in ("kustomization.yaml", "files-pod.yaml"))
    (config,) = manifests()["config.yaml"]
    compose = cf.interpolate(cf.load(), cf.read_env_file())["services"]["worker"]
    env = cf.environment(compose)
    assert set(config["data"]) == set(env)
    for key in set(env) - {"FACEHPO_STORAGE"}:
        assert config["data"][key] == env[key], key
    assert config["data"]["FACEHPO_STORAGE"] == env["FACEHPO_STORAGE"].replace("@db:", "@facehpo-db:")


@pytest.mark.parametrize("job,service", [("init", "init"), ("workers", "worker"), ("fine", "fine"),
                                         ("workers-fine", "worker-fine"), ("final", "final")])
def test_each_job_runs_the_compose_services_command(job, service):
    """The same defaults as docker-compose.yml with .env.example, and the CLI parses them."""
    from study.cli import build_parser

    (doc,) = manifests()[f"jobs/{job}.yaml"]
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    compose = cf.interpolate(cf.load(), cf.read_env_file())["services"][service]
    assert container["args"] == cf.command(compose)
    assert build_parser().parse_args(container["args"]).command == container["args"][0]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/run/secrets", "/data"} <= mounts


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed: rendering not checked")
def test_kubectl_kustomize_renders_the_base(tmp_path):
    base = shutil.copytree(K8S, tmp_path / "kubernetes")
    (base / "postgres_password").write_text("not-a-real-password\n")
    r = subprocess.run(["kubectl", "kustomize", str(base)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rendered = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert {d["kind"] for d in rendered} >= {"Namespace", "Secret", "StatefulSet", "Deployment"}
    assert [e for d in rendered for e in schema_errors(d)] == []
