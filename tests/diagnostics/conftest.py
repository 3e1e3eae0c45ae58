import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """Run on one thread: these tests loop over many small matrices, where a second thread
    only adds synchronization cost (and oversubscribes a busy CI machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
