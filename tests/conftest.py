import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """A test that sets torch's thread count (helpers, CLIs run in-process) must not change the next test's
    kernels: some CPU kernels (e.g. bilinear resize) round differently on 1 and 2 threads."""
    n = torch.get_num_threads()
    yield
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def single_thread():
    """For tests of many tiny steps: one intra-op thread avoids BLAS thread hand-offs, which on a
    shared 2-core machine cost milliseconds per matmul (measured: 100x slower steps under load)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
