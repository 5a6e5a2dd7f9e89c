"""A trainer program whose rank 1 raises (torchrun runs it): what the launcher must report."""

import sys

from model_code.training.job import read_job, run_job


def train(job: dict, report) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo")
    if dist.get_rank() == 1:
        raise ValueError(f"rank 1 cannot read {job['pairs']}")
    dist.barrier()


if __name__ == "__main__":
    sys.exit(run_job(train, read_job(sys.argv[sys.argv.index("--job") + 1])))
