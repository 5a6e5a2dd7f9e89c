"""The Kubernetes deployment, checked as the Dagster Helm chart would take it (no cluster, and no
`helm` binary from the registries this project reaches: the test does what the chart does with
deploy/helm/values.yaml, and refuses what the chart would drop or reject):

- every key of the values must be one the chart (1.13, the release of our pinned dagster) reads
  at that place: the chart's own levels against CHART_KEYS below; a key it does not know fails;
- the parts the chart turns into the instance's dagster.yaml (run launcher, run queue, run
  monitoring, PostgreSQL storage) are translated the way its templates do it and validated by the
  installed dagster / dagster-k8s / dagster-postgres against their own config schemas;
- the Kubernetes objects (env, volumes, mounts, tolerations) against the kubernetes client's
  models, with dagster-k8s's strict parser (an unknown field fails);
- then a K8sRunLauncher made from that config builds the run-worker Job of each GPU job of the
  real Definitions, as its launch_run does: image, GPU limit, environment, volume, tolerations."""

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
VALUES = ROOT / "deploy" / "helm" / "values.yaml"

# The keys the Dagster chart 1.13 reads, at the places our values set something (each set holds
# that level's keys in the chart's values.yaml; not every key there: add one only after finding it
# in the chart's values.yaml of the pinned release). Levels below these are checked by dagster's
# or the kubernetes client's own schemas.
# fmt: off
CHART_KEYS = {
    "": {
        "global", "nameOverride", "fullnameOverride", "rbacEnabled", "imagePullSecrets",
        "serviceAccount", "postgresqlSecretName", "computeLogManager", "pythonLogs",
        "dagsterWebserver", "dagster-user-deployments", "pipelineRun", "scheduler",
        "runLauncher", "postgresql", "generatePostgresqlPasswordSecret",
        "generateCeleryConfigSecret", "rabbitmq", "redis", "flower", "ingress",
        "dagsterDaemon", "busybox", "migrate", "telemetry", "extraManifests", "retention",
        "additionalInstanceConfig", "concurrency", "defsStateStorage",
    },
    "global": {
        "postgresqlSecretName", "dagsterHome", "serviceAccountName", "celeryConfigSecretName",
    },
    "dagster-user-deployments": {"enabled", "enableSubchart", "imagePullSecrets", "deployments"},
    "dagster-user-deployments.deployments[]": {
        "name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns",
        "port", "env", "envConfigMaps", "envSecrets", "annotations",
        "nodeSelector", "affinity", "tolerations", "podSecurityContext", "securityContext",
        "resources", "livenessProbe", "readinessProbe", "startupProbe", "labels", "volumes",
        "volumeMounts", "initContainers", "sidecarContainers", "schedulerName", "service",
        "replicaCount",
    },
    "dagster-user-deployments.deployments[].image": {"repository", "tag", "pullPolicy"},
    "runLauncher": {"type", "config"},
    "runLauncher.config": {"k8sRunLauncher", "celeryK8sRunLauncher", "customRunLauncher"},
    "postgresql": {
        "enabled", "image", "postgresqlHost", "postgresqlUsername", "postgresqlPassword",
        "postgresqlDatabase", "postgresqlParams", "postgresqlScheme", "service",
    },
    "dagsterDaemon": {
        "enabled", "image", "heartbeatTolerance", "runCoordinator", "runMonitoring",
        "runRetries", "sensors", "schedules", "backfills", "env", "envConfigMaps", "envSecrets",
        "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations",
        "podSecurityContext", "securityContext", "checkDbReadyInitContainer", "initContainers",
        "sidecarContainers", "resources", "livenessProbe", "readinessProbe", "startupProbe",
        "annotations", "volumes", "volumeMounts", "schedulerName",
    },
    "dagsterDaemon.runCoordinator": {"enabled", "type", "config"},
    "dagsterDaemon.runCoordinator.config": {"queuedRunCoordinator", "customRunCoordinator"},
}
# fmt: on

# chart value -> dagster.yaml key, as the chart's instance templates write them (a key of these
# sections the template does not name is dropped by the chart: refused here)
K8S_RUN_LAUNCHER = {
    "loadInclusterConfig": "load_incluster_config",
    "kubeconfigFile": "kubeconfig_file",
    "jobNamespace": "job_namespace",
    "imagePullPolicy": "image_pull_policy",
    "image": "job_image",
    "envConfigMaps": "env_config_maps",
    "envSecrets": "env_secrets",
    "envVars": "env_vars",
    "volumeMounts": "volume_mounts",
    "volumes": "volumes",
    "labels": "labels",
    "resources": "resources",
    "failPodOnRunFailure": "fail_pod_on_run_failure",
    "schedulerName": "scheduler_name",
    "securityContext": "security_context",
    "runK8sConfig": "run_k8s_config",
}
RUN_K8S_CONFIG = {
    "containerConfig": "container_config",
    "podSpecConfig": "pod_spec_config",
    "podTemplateSpecMetadata": "pod_template_spec_metadata",
    "jobSpecConfig": "job_spec_config",
    "jobMetadata": "job_metadata",
}
QUEUED_RUN_COORDINATOR = {
    "maxConcurrentRuns": "max_concurrent_runs",
    "tagConcurrencyLimits": "tag_concurrency_limits",
    "dequeueIntervalSeconds": "dequeue_interval_seconds",
    "dequeueUseThreads": "dequeue_use_threads",
    "dequeueNumWorkers": "dequeue_num_workers",
    "blockOpConcurrencyLimitedRuns": "block_op_concurrency_limited_runs",
}
RUN_MONITORING = {
    "enabled": "enabled",
    "startTimeoutSeconds": "start_timeout_seconds",
    "cancelTimeoutSeconds": "cancel_timeout_seconds",
    "maxResumeRunAttempts": "max_resume_run_attempts",
    "maxRuntimeSeconds": "max_runtime_seconds",
    "pollIntervalSeconds": "poll_interval_seconds",
    "freeSlotsAfterRunEndSeconds": "free_slots_after_run_end_seconds",
}


def _values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def _unknown_chart_keys(values: dict) -> list[str]:
    """Paths of the keys of `values` that the chart does not read where they stand."""
    unknown = []

    def walk(node, path):
        if not isinstance(node, dict):
            return
        allowed = CHART_KEYS.get(path)
        for key, value in node.items():
            at = f"{path}.{key}" if path else key
            if allowed is not None and key not in allowed:
                unknown.append(at)
            elif isinstance(value, list) and f"{at}[]" in CHART_KEYS:
                for item in value:
                    walk(item, f"{at}[]")
            elif at in CHART_KEYS:
                walk(value, at)

    walk(values, "")
    return unknown


def _translate(section: dict, mapping: dict, where: str) -> dict:
    dropped = set(section) - set(mapping)
    assert not dropped, f"the chart does not read {where}.{sorted(dropped)}"
    return {mapping[key]: value for key, value in section.items()}


def _image(image: dict) -> str:
    return f"{image['repository']}:{image['tag']}"


def _dagster_yaml(values: dict) -> dict:
    """The parts of the instance's dagster.yaml the chart writes from our values (its
    configmap-instance.yaml and helpers/instance/*.tpl), in dagster's own keys."""
    launcher_values = values["runLauncher"]
    assert launcher_values["type"] == "K8sRunLauncher"
    k8s = dict(launcher_values["config"]["k8sRunLauncher"])
    if "image" in k8s:
        k8s["image"] = _image(k8s["image"])
    for key in ("envConfigMaps", "envSecrets"):
        if key in k8s:
            k8s[key] = [ref["name"] for ref in k8s[key]]
    launcher = _translate(k8s, K8S_RUN_LAUNCHER, "runLauncher.config.k8sRunLauncher")
    if "run_k8s_config" in launcher:
        launcher["run_k8s_config"] = _translate(
            launcher["run_k8s_config"],
            RUN_K8S_CONFIG,
            "runLauncher.config.k8sRunLauncher.runK8sConfig",
        )
    launcher.update(
        dagster_home=values["global"]["dagsterHome"],
        instance_config_map="vidistill-dagster-instance",
        postgres_password_secret="dagster-postgresql-secret",
        service_account_name="vidistill-dagster",
        job_namespace=launcher.get("job_namespace", "vidistill"),
    )

    daemon = values["dagsterDaemon"]
    coordinator = daemon["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    queued = _translate(
        coordinator["config"]["queuedRunCoordinator"],
        QUEUED_RUN_COORDINATOR,
        "dagsterDaemon.runCoordinator.config.queuedRunCoordinator",
    )
    monitoring = _translate(daemon["runMonitoring"], RUN_MONITORING, "dagsterDaemon.runMonitoring")

    pg = values["postgresql"]
    postgres_db = {
        "hostname": pg["postgresqlHost"],
        "username": pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},  # the chart's secret, as an env var
        "db_name": pg["postgresqlDatabase"],
        "port": pg.get("service", {}).get("port", 5432),
    }
    if "postgresqlParams" in pg:
        postgres_db["params"] = pg["postgresqlParams"]
    if "postgresqlScheme" in pg:
        postgres_db["scheme"] = pg["postgresqlScheme"]
    return {
        "storage": {"postgres": {"postgres_db": postgres_db}},
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": launcher},
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": queued,
        },
        "run_monitoring": monitoring,
    }


def _rehydrate(section: dict):
    from dagster._serdes import ConfigurableClassData

    return ConfigurableClassData(
        section["module"], section["class"], yaml.safe_dump(section["config"])
    ).rehydrate()


@pytest.fixture
def kubeconfig(tmp_path):
    """A kubeconfig naming an unreachable cluster: the launcher loads it, nothing connects."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return str(path)


def test_every_values_key_is_one_the_chart_reads():
    assert _unknown_chart_keys(_values()) == []
    broken = _values()
    broken["dagsterHome"] = "/opt/dagster/dagster_home"  # once ours; the chart reads global.
    broken["dagster-user-deployments"]["deployments"][0]["imagePullPolicy"] = "Always"
    assert _unknown_chart_keys(broken) == [
        "dagster-user-deployments.deployments[].imagePullPolicy",
        "dagsterHome",
    ]


def test_the_instance_config_the_chart_writes_is_valid_for_the_installed_dagster(
    kubeconfig, monkeypatch
):
    """dagster's own schemas: the instance's (run monitoring, storage), the run queue's, the
    K8sRunLauncher's; and the kubernetes client's models for the user deployment's objects."""
    from dagster import Shape
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config_schema
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_k8s.models import k8s_snake_case_dict
    from dagster_postgres.utils import pg_config
    from kubernetes.client import V1EnvVar, V1Volume, V1VolumeMount

    values = _values()
    # the chart's secret holds postgresqlPassword; its pods read it as this variable
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", values["postgresql"]["postgresqlPassword"])
    instance = _dagster_yaml(values)
    result = process_config(Shape(dagster_instance_config_schema()), instance)
    assert result.success, [e.message for e in result.errors]
    result = process_config(pg_config(), instance["storage"]["postgres"])
    assert result.success, [e.message for e in result.errors]
    assert isinstance(_rehydrate(instance["run_coordinator"]), QueuedRunCoordinator)
    assert instance["run_monitoring"]["free_slots_after_run_end_seconds"] > 0  # gpu slots come back
    instance["run_launcher"]["config"].update(
        load_incluster_config=False, kubeconfig_file=kubeconfig
    )
    launcher = _rehydrate(instance["run_launcher"])
    assert launcher.dagster_home == values["global"]["dagsterHome"]

    for deployment in values["dagster-user-deployments"]["deployments"]:
        objects = {"env": V1EnvVar, "volumes": V1Volume, "volumeMounts": V1VolumeMount}
        for key, model in objects.items():
            for item in deployment.get(key, []):
                k8s_snake_case_dict(model, item)
        assert deployment["image"]["pullPolicy"] in {"Always", "IfNotPresent", "Never"}


@pytest.mark.parametrize(
    "broken, message",
    [
        (
            lambda v: v["runLauncher"]["config"]["k8sRunLauncher"].update(envVar=["A=1"]),
            r"the chart does not read runLauncher.config.k8sRunLauncher.\['envVar'\]",
        ),
        (
            lambda v: v["dagsterDaemon"]["runMonitoring"].update(freeSlotsAfterRunEnd=15),
            r"does not read dagsterDaemon.runMonitoring.\['freeSlotsAfterRunEnd'\]",
        ),
        (
            lambda v: v["runLauncher"]["config"]["k8sRunLauncher"].update(envVars="A=1"),
            "Value at path root:env_vars must be list",
        ),
        (
            lambda v: v["runLauncher"]["config"]["k8sRunLauncher"]["volumes"][0].update(
                persistentVolumeClam={"claimName": "x"}
            ),
            "Unexpected keys in model class V1Volume",
        ),
    ],
    ids=["launcher-key-typo", "monitoring-key-typo", "env-vars-not-a-list", "volume-field-typo"],
)
def test_a_values_key_the_chart_or_dagster_would_not_take_fails(broken, message, kubeconfig):
    from dagster_k8s.models import k8s_snake_case_dict
    from kubernetes.client import V1Volume

    values = _values()
    broken(values)
    with pytest.raises(Exception, match=message):
        instance = _dagster_yaml(values)
        instance["run_launcher"]["config"].update(
            load_incluster_config=False, kubeconfig_file=kubeconfig
        )
        launcher = _rehydrate(instance["run_launcher"])
        for volume in launcher.volumes:
            k8s_snake_case_dict(V1Volume, volume)


def _run_worker_job(job_name: str, values: dict, kubeconfig: str):
    """What K8sRunLauncher.launch_run builds for a run of `job_name` (its
    _launch_k8s_job_with_args), from the launcher the chart's config makes; the image is the
    user deployment's, which its code server reports for the runs it serves."""
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import construct_dagster_k8s_job

    from pipelines.definitions import defs

    instance = _dagster_yaml(values)
    instance["run_launcher"]["config"].update(
        load_incluster_config=False, kubeconfig_file=kubeconfig
    )
    launcher = _rehydrate(instance["run_launcher"])
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    image = _image(deployment["image"])
    run_tags = {
        k: v if isinstance(v, str) else json.dumps(v)
        for k, v in defs.get_job_def(job_name).tags.items()
    }  # as a run stores them
    run = DagsterRun(job_name=job_name, run_id="run-1", tags=run_tags)
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=True)
    return image, construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(job_image=image, run_launcher=launcher),
        args=["dagster", "api", "execute_run", "{}"],
        job_name="dagster-run-1",
        component="run_worker",
        user_defined_k8s_config=context.run_k8s_config,
    )


@pytest.mark.parametrize(
    "job_name", ["shard_and_caption", "train_dual_encoder", "video_adaptation"]
)
def test_gpu_jobs_render_to_kubernetes_jobs_with_image_gpu_env_and_data(job_name, kubeconfig):
    values = _values()
    image, job = _run_worker_job(job_name, values, kubeconfig)
    pod = job.spec.template.spec
    container = pod.containers[0]
    assert container.image == image == "registry.example.com/vidistill:0.1.0"
    assert container.resources.limits == {"nvidia.com/gpu": "1"}
    env = {e.name: e.value for e in container.env}
    assert env["VIDISTILL_DATA_ROOT"] == "/data"
    assert env["VIDISTILL_TRACKING_URI"].startswith("postgresql://")
    assert env["DAGSTER_HOME"] == values["global"]["dagsterHome"]
    assert [(m.name, m.mount_path) for m in container.volume_mounts] == [("data", "/data")]
    assert {v.name: v.persistent_volume_claim.claim_name for v in pod.volumes} == {
        "data": "vidistill-data"
    }
    assert [(t.key, t.operator, t.effect) for t in pod.tolerations] == [
        ("nvidia.com/gpu", "Exists", "NoSchedule")
    ]


def test_gpu_counts_come_from_the_environment(monkeypatch):
    from model_code.runtime.settings import TRAIN_GPUS
    from pipelines.jobs import gpu_count, gpu_request

    monkeypatch.setenv("VIDISTILL_TRAIN_GPUS", "4")
    assert gpu_request(gpu_count(TRAIN_GPUS)) == {
        "dagster-k8s/config": {
            "container_config": {"resources": {"limits": {"nvidia.com/gpu": "4"}}}
        }
    }
    assert gpu_request(0) == {}
    monkeypatch.setenv("VIDISTILL_TRAIN_GPUS", "two")
    with pytest.raises(ValueError, match=r"\$VIDISTILL_TRAIN_GPUS must be a whole number"):
        gpu_count(TRAIN_GPUS)


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
        "model_code.training.train_dual_encoder", job_file, 2, {"MLFLOW_RUN_ID": "abc"}, "/data"
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
        "model_code.training.train_dual_encoder",
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
