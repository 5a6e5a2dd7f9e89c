import pytest

from model_code.runtime.environment import set_environment_defaults

set_environment_defaults()  # before torch loads


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and OpenMP's spinning threads slow
    down many-fold when the two cores are shared with another job. A module takes it with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
