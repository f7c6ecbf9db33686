"""deploy/kuberay/rayjob.yaml: the fields the README's "On Kubernetes" section relies on.

No Kubernetes cluster runs here: this parses the manifest and checks its structure (where the
head, the driver and the workers run, storage, tracking, authentication, the sweep's options,
trials that resume on another worker when a spot node is taken back), and that its entrypoint
is a command line that ``sweeps/run.py`` accepts.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from sweeps.run import build_parser

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "deploy" / "kuberay" / "rayjob.yaml"


@pytest.fixture(scope="module")
def job() -> dict:
    docs = list(yaml.safe_load_all(MANIFEST.read_text()))
    assert len(docs) == 1
    return docs[0]


def pod(group: dict) -> dict:
    return group["template"]["spec"]


def test_is_a_rayjob_for_the_pinned_ray(job: dict) -> None:
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["rayClusterSpec"]["rayVersion"] == "2.60.0"
    assert spec["shutdownAfterJobFinishes"] is True and spec["backoffLimit"] == 0
    assert spec["rayClusterSpec"]["authOptions"] == {"mode": "token"}


def test_entrypoint_is_a_cluster_sweep_with_s3_and_the_mlflow_server(job: dict) -> None:
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["python", "/home/ray/ssr/sweeps/run.py"]
    args = build_parser().parse_args(argv[2:])  # exits (SystemExit) on an option run.py lacks
    assert args.cluster and not args.insecure and not args.resume
    assert args.storage.startswith("s3://")
    assert args.tracking_uri.startswith("http://") and args.tracking_uri.endswith(":5000")
    assert args.gpus_per_trial == 1
    assert Path(args.config).name in {p.name for p in (REPO / "sweeps" / "configs").iterdir()}


def test_head_and_driver_on_demand_workers_on_spot_gpus(job: dict) -> None:
    cluster = job["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # no trial on the head
    assert pod(head)["nodeSelector"]["karpenter.sh/capacity-type"] == "on-demand"
    assert "nvidia.com/gpu" not in str(pod(head)["containers"][0]["resources"])
    submitter = job["spec"]["submitterPodTemplate"]["spec"]
    assert submitter["nodeSelector"]["karpenter.sh/capacity-type"] == "on-demand"
    (workers,) = cluster["workerGroupSpecs"]
    spec = pod(workers)
    assert spec["nodeSelector"]["karpenter.sh/capacity-type"] == "spot"
    assert {t["key"] for t in spec["tolerations"]} >= {"nvidia.com/gpu", "spot"}
    limits = spec["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1
    assert workers["minReplicas"] <= workers["replicas"] <= workers["maxReplicas"]
    argv = build_parser().parse_args(shlex.split(job["spec"]["entrypoint"])[2:])
    assert argv.cpus_per_trial <= float(limits["cpu"])  # one trial fits a worker


def test_trials_on_spot_workers_resume_from_their_checkpoints(job: dict) -> None:
    from sweeps.define.spec import load_sweep

    args = build_parser().parse_args(shlex.split(job["spec"]["entrypoint"])[2:])
    sweep = load_sweep(REPO / "sweeps" / "configs" / Path(args.config).name, args.set)
    assert sweep.spec.preemptible and sweep.spec.max_resumes >= 1
    assert sweep.spec.budget.checkpoint_every < sweep.spec.budget.search_epochs


def test_every_ray_pod_reaches_the_bucket_and_the_dataset(job: dict) -> None:
    cluster = job["spec"]["rayClusterSpec"]
    for group in (cluster["headGroupSpec"], *cluster["workerGroupSpecs"]):
        spec = pod(group)
        (container,) = spec["containers"]
        env = {e["name"] for e in container["env"]}
        assert "AWS_DEFAULT_REGION" in env
        assert container["envFrom"][0]["secretRef"]["optional"] is True
        assert spec["serviceAccountName"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["data"] == "/data"
        claims = {v["name"]: v.get("persistentVolumeClaim") for v in spec["volumes"]}
        assert claims["data"]["readOnly"] is True
