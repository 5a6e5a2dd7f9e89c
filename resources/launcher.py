"""How a training asset runs its trainer: `torchrun` through Dagster Pipes, here or in a pod."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Literal

from dagster import (
    ConfigurableResource,
    Failure,
    MaterializeResult,
    MetadataValue,
    PipesFileMessageReader,
    PipesTempFileMessageReader,
)
from pydantic import Field

from model_code.runtime import settings
from model_code.runtime.files import atomic_write_bytes
from model_code.runtime.with_parent import stop_with_starter
from resources.fields import ImageRef, K8sName

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def torchrun_command(
    module: str,
    job_file: str | Path,
    nproc: int,
    python: str = sys.executable,
    log_dir: str | None = None,
    stops_with_parent: bool = False,
) -> list[str]:
    """`torchrun --standalone --nproc_per_node N [--log-dir D] -m module --job job_file`;
    stops_with_parent: torchrun (and so its ranks) stops when this process, which starts it,
    dies (model_code.runtime.with_parent), for a launch from a step process that can be killed."""
    guard = (
        ["model_code.runtime.with_parent", "--parent", str(os.getpid())]
        if stops_with_parent
        else []
    )
    command = [python, "-m", *guard]
    command += ["torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    if log_dir:
        command += ["--log-dir", log_dir]
    return command + ["-m", module, "--job", str(job_file)]


class WholeLineFileMessageReader(PipesFileMessageReader):
    """Dagster's file reader (1.13) tails the messages file line by line and hands json.loads
    whatever `readline` returns, so a message caught while its writer is still appending it (a
    checkpoint report with its sample tables, on a busy machine) reaches json.loads half-written;
    the reader thread dies, every later message is lost ("did not receive closed message").
    This one keeps the part of a line it has and parses the line once its newline is there."""

    def _reader_thread(self, handler, is_resource_complete) -> None:
        import time

        pending = ""
        try:
            with open(self._path, encoding="utf-8") as stream:
                while True:
                    chunk = stream.readline()
                    pending += chunk
                    if pending.endswith("\n"):
                        handler.handle_message(json.loads(pending))
                        pending = ""
                    elif chunk:  # the rest of the line may be there already
                        continue
                    elif not is_resource_complete.is_set():
                        time.sleep(0.01)
                    elif pending:  # the writer is gone mid-line
                        raise ValueError(f"a Pipes message without its end: {pending[:200]!r}")
                    else:
                        break
        except BaseException:
            handler.report_pipes_framework_exception(
                f"{type(self).__name__} reader thread", sys.exc_info()
            )
            raise


class WholeLineTempFileMessageReader(PipesTempFileMessageReader):
    """PipesTempFileMessageReader with WholeLineFileMessageReader's whole-line parsing."""

    def read_messages(self, handler):
        import contextlib

        @contextlib.contextmanager
        def messages():
            with (
                tempfile.TemporaryDirectory() as folder,
                WholeLineFileMessageReader(
                    os.path.join(folder, "messages"),
                    include_stdio_in_messages=False,
                ).read_messages(handler) as params,
            ):
                yield params

        return messages()


def step_threads() -> int:
    """The intra-op threads this step was given (torch's setting when the step set one, else
    $OMP_NUM_THREADS, else the cores): what its ranks share, so a launched training computes
    with the threads an in-process one would have."""
    if "torch" in sys.modules:
        return sys.modules["torch"].get_num_threads()
    value = settings.OMP_NUM_THREADS.get()
    return int(value) if value.isdigit() and int(value) > 0 else os.cpu_count() or 1


def rank_errors(log_dir: str | Path) -> list[dict]:
    """The errors torchrun's ranks recorded (`record` writes <log_dir>/.../<rank>/error.json),
    the root cause first: the earliest, and a rank that failed on its own before one that only
    lost a peer."""
    errors = []
    for path in Path(log_dir).glob("**/error.json"):
        try:
            body = json.loads(path.read_text())["message"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(body, str):
            body = {"message": body, "extraInfo": {}}
        extra = body.get("extraInfo", {})
        message = str(body.get("message", ""))
        peer = any(
            s in message for s in ("closed by peer", "Connection reset", "NCCL", "Broken pipe")
        )
        errors.append(
            {
                "rank": int(path.parent.name) if path.parent.name.isdigit() else -1,
                "message": message,
                "traceback": str(extra.get("py_callstack", "")),
                "timestamp": int(extra.get("timestamp", 0) or 0),
                "lost_peer": peer,
            }
        )
    return sorted(errors, key=lambda e: (e["lost_peer"], e["timestamp"], e["rank"]))


class TrainingLauncher(ConfigurableResource):
    """Runs a trainer program (model_code.training.train_vlm or train_dual_encoder) under
    `torchrun --nproc_per_node N` through Dagster Pipes: rank 0's logs and its checkpoint's
    materialization come back to the step; a rank that fails fails the step with its error.

    backend "subprocess" (default): torchrun on this machine, pinned to the devices the step
    leased. backend "k8s": one pod per training through PipesK8sClient, requesting N GPUs,
    with the data root on a PersistentVolumeClaim mounted at the same path."""

    backend: Literal["subprocess", "k8s"] = Field(
        default="subprocess", description="subprocess: torchrun here; k8s: torchrun in a pod"
    )
    image: ImageRef = Field(default="", description="k8s: the project's image (deploy/Dockerfile)")
    namespace: K8sName = Field(default="dagster", description="k8s: namespace of the training pods")
    data_volume_claim: K8sName = Field(
        default="",
        description="k8s: PersistentVolumeClaim holding the data root; mounted at the "
        "data root's path in the pod",
    )
    gpus_per_rank: int = Field(
        default=1, ge=0, description="k8s: GPUs requested per rank (0 for CPU pods)"
    )

    def train(
        self,
        context,
        *,
        module: str,
        job: dict,
        name: str,
        store,
        nproc: int,
        device: str,
        accelerators,
        env: dict[str, str] | None = None,
        extra: dict | None = None,
    ) -> MaterializeResult:
        """Write the job file (training_jobs/ under the data root), run the trainer on `nproc`
        ranks, and return the checkpoint's materialization as rank 0 reported it (plus `extra`
        metadata)."""
        job_file = store.training_job(name, context.run_id)
        atomic_write_bytes(job_file, json.dumps(job, indent=1, default=str).encode())
        env = dict(env or {})
        placed = {}
        if self.backend == "k8s":
            result = self._k8s(context, module, job_file, nproc, env, str(store.path()))
        else:
            result, devices = self._subprocess(
                context, module, job_file, nproc, device, accelerators, env
            )
            placed = {"devices": devices}
        metadata = {**(result.metadata or {}), **placed, **(extra or {})}
        if "path" in metadata and isinstance(metadata["path"], str):
            metadata["path"] = MetadataValue.path(metadata["path"])
        return MaterializeResult(metadata=metadata, data_version=result.data_version)

    def _subprocess(self, context, module, job_file, nproc, device, accelerators, env):
        """(rank 0's materialization, where the ranks ran: the leased `cuda:i`s, else the
        device asked for): the metadata says which GPU a checkpoint was trained on."""
        from dagster import PipesSubprocessClient

        env.setdefault("OMP_NUM_THREADS", str(max(1, step_threads() // nproc)))
        # a step process dies with its run worker; torchrun, under model_code.runtime.with_parent,
        # then gets its own SIGTERM and stops its ranks
        stop_with_starter()
        with (
            accelerators.lease(device, count=nproc) as lease,
            tempfile.TemporaryDirectory(prefix="torchrun-") as logs,
        ):
            env.update(lease.env())  # the ranks see only the leased devices
            context.log.info(
                f"training {module} on {nproc} rank(s)"
                + (f", devices {lease.indices}" if lease.indices else "")
            )
            placed = ", ".join(f"cuda:{i}" for i in lease.indices) or (
                "cpu" if device == "auto" else device
            )
            try:
                return (
                    PipesSubprocessClient(
                        cwd=str(PROJECT_ROOT), message_reader=WholeLineTempFileMessageReader()
                    )
                    .run(
                        context=context,
                        command=torchrun_command(
                            module, job_file, nproc, log_dir=logs, stops_with_parent=True
                        ),
                        env=env,
                    )
                    .get_materialize_result()
                ), placed
            except Exception as error:
                errors = rank_errors(logs)
                if not errors:
                    raise
                first = errors[0]
                raise Failure(
                    description=f"rank {first['rank']} of {nproc} failed: {first['message']}",
                    metadata={
                        f"rank {e['rank']}": MetadataValue.text(e["traceback"] or e["message"])
                        for e in errors
                    },
                ) from error

    def pod_spec(self, nproc: int, data_root: str) -> dict:
        """The training pod: N x gpus_per_rank GPUs, the data root's volume, /dev/shm for the
        DataLoader workers and NCCL."""
        container: dict = {"volume_mounts": [{"name": "dshm", "mount_path": "/dev/shm"}]}
        volumes: list[dict] = [{"name": "dshm", "empty_dir": {"medium": "Memory"}}]
        if self.gpus_per_rank:
            gpus = str(nproc * self.gpus_per_rank)
            container["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
        if self.data_volume_claim:
            container["volume_mounts"].append({"name": "data", "mount_path": data_root})
            volumes.append(
                {"name": "data", "persistent_volume_claim": {"claim_name": self.data_volume_claim}}
            )
        return {"containers": [container], "volumes": volumes}

    def k8s_args(
        self, module: str, job_file: Path, nproc: int, env: dict[str, str], data_root: str
    ) -> dict:
        """What PipesK8sClient.run gets (besides the context)."""
        if not self.image:
            raise ValueError(
                "TrainingLauncher.image must name the project's image when backend is k8s"
            )
        return {
            "image": self.image,
            "namespace": self.namespace,
            "command": torchrun_command(module, job_file, nproc, python="python"),
            "env": env,
            "base_pod_spec": self.pod_spec(nproc, data_root),
        }

    def _k8s(self, context, module, job_file, nproc, env, data_root):
        from dagster_k8s import PipesK8sClient

        return (
            PipesK8sClient()
            .run(context=context, **self.k8s_args(module, job_file, nproc, env, data_root))
            .get_materialize_result()
        )
