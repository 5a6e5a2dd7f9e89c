"""The Kubernetes deployment, rendered (no cluster here): dagster-k8s builds the run-worker Job
that its K8sRunLauncher would create for a run of each GPU job of the real Definitions, from
the Helm values in deploy/helm/values.yaml; the Job must carry the image, the GPU limit, the
environment and the volume the runs need."""

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _run_worker_job(job_name: str, values: dict):
    from dagster_k8s.job import (
        DagsterK8sJobConfig,
        construct_dagster_k8s_job,
        get_user_defined_k8s_config,
    )

    from pipelines.definitions import defs

    deployment = values["dagster-user-deployments"]["deployments"][0]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    config = DagsterK8sJobConfig(
        job_image=image,
        dagster_home=values["dagsterHome"],
        image_pull_policy=deployment["image"]["pullPolicy"],
        env_vars=launcher["envVars"],
        volumes=launcher["volumes"],
        volume_mounts=launcher["volumeMounts"],
    )
    run_tags = {
        k: v if isinstance(v, str) else json.dumps(v)
        for k, v in defs.get_job_def(job_name).tags.items()
    }  # as a run stores them
    user_config = get_user_defined_k8s_config(run_tags)
    return image, construct_dagster_k8s_job(
        job_config=config,
        args=["dagster", "api", "execute_run", "{}"],
        job_name="run-1",
        user_defined_k8s_config=user_config,
        component="run_worker",
    )


@pytest.mark.parametrize(
    "job_name", ["shard_and_caption", "train_dual_encoder", "video_adaptation"]
)
def test_gpu_jobs_render_to_kubernetes_jobs_with_image_gpu_env_and_data(job_name):
    values = yaml.safe_load((ROOT / "deploy" / "helm" / "values.yaml").read_text())
    image, job = _run_worker_job(job_name, values)
    container = job.spec.template.spec.containers[0]
    assert container.image == image == "registry.example.com/vidistill:0.1.0"
    assert container.resources.limits == {"nvidia.com/gpu": "1"}
    env = {e.name: e.value for e in container.env}
    assert env["VIDISTILL_DATA_ROOT"] == "/data"
    assert env["VIDISTILL_TRACKING_URI"].startswith("postgresql://")
    assert env["DAGSTER_HOME"] == values["dagsterHome"]
    assert [(m.name, m.mount_path) for m in container.volume_mounts] == [("data", "/data")]


def test_gpu_counts_come_from_the_environment(monkeypatch):
    from pipelines.jobs import gpu_count, gpu_request

    monkeypatch.setenv("VIDISTILL_TRAIN_GPUS", "4")
    assert gpu_request(gpu_count("VIDISTILL_TRAIN_GPUS")) == {
        "dagster-k8s/config": {
            "container_config": {"resources": {"limits": {"nvidia.com/gpu": "4"}}}
        }
    }
    assert gpu_request(0) == {}
    monkeypatch.setenv("VIDISTILL_TRAIN_GPUS", "two")
    with pytest.raises(ValueError, match=r"\$VIDISTILL_TRAIN_GPUS must be a whole number"):
        gpu_count("VIDISTILL_TRAIN_GPUS")


def test_the_code_location_the_chart_serves_is_ours():
    values = yaml.safe_load((ROOT / "deploy" / "helm" / "values.yaml").read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "pipelines.definitions"]
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert '"torch==2.13.0"' in dockerfile and "pip install ." in dockerfile


def test_the_code_location_loads_whole():
    """What `dagster dev` and the gRPC server do at start: every job, asset and sensor resolves
    (a job named like an asset, for one, only fails here)."""
    from dagster import Definitions

    from pipelines.definitions import defs

    Definitions.validate_loadable(defs)
    assert {"shard_and_caption", "train_dual_encoder", "video_adaptation"} <= set(
        defs.get_repository_def().job_names
    )
    adaptation = defs.get_job_def("video_adaptation").asset_layer.executable_asset_keys
    names = {key.to_user_string() for key in adaptation}
    assert {"image_vlm", "adapted_encoder", "instruction_tuned_lm", "video_vlm"} <= names
    assert "adaptation_order" not in names  # the ablation trains both stages twice more


def test_training_pods_are_chosen_by_configuration_and_request_a_gpu_per_rank(monkeypatch):
    """The Pipes launch of training in a pod (PipesK8sClient), rendered: the pod body
    dagster-k8s would create runs torchrun on N ranks with N GPUs and the data volume."""
    from dagster_k8s.pipes import build_pod_body

    from pipelines.definitions import make_resources

    monkeypatch.setenv("VIDISTILL_TRAINING_BACKEND", "k8s")
    monkeypatch.setenv("VIDISTILL_IMAGE", "registry.example.com/vidistill:0.1.0")
    monkeypatch.setenv("VIDISTILL_DATA_CLAIM", "vidistill-data")
    launcher = make_resources("/data")["launcher"]
    assert launcher.backend == "k8s"
    job_file = Path("/data/training_jobs/dual_encoder[alt_text]-r1.json")
    args = launcher.k8s_args(
        "model_code.train_dual_encoder", job_file, 2, {"MLFLOW_RUN_ID": "abc"}, "/data"
    )
    pod = build_pod_body(
        "train-1", args["image"], args["command"], args["env"], None, args["base_pod_spec"]
    )
    (container,) = pod.spec.containers
    assert container.image == "registry.example.com/vidistill:0.1.0"
    assert container.command == [
        "python",
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "model_code.train_dual_encoder",
        "--job",
        str(job_file),
    ]
    assert container.resources.limits == {"nvidia.com/gpu": "2"}
    assert {e.name: e.value for e in container.env} == {"MLFLOW_RUN_ID": "abc"}
    assert ("data", "/data") in [(m.name, m.mount_path) for m in container.volume_mounts]
    claims = {v.name: v.persistent_volume_claim for v in pod.spec.volumes}
    assert claims["data"].claim_name == "vidistill-data"
    monkeypatch.setenv("VIDISTILL_IMAGE", "")
    with pytest.raises(ValueError, match="TrainingLauncher.image"):
        make_resources("/data")["launcher"].k8s_args("m", job_file, 1, {}, "/data")
