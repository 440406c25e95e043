import pytest
import torch

from mpifl.config import ConfigError
from mpifl.placement import block, choose_device, client_blocks


def test_blocks_are_contiguous_near_equal_and_in_client_order():
    assert [list(block(6, 4, i)) for i in range(4)] == [[0, 1], [2, 3], [4], [5]]
    assert [len(block(20, 20, i)) for i in range(20)] == [1] * 20


def test_client_blocks_per_rank():
    assert client_blocks(5, 1) == [range(5)]
    assert client_blocks(6, 3) == [range(0), range(0, 3), range(3, 6)]
    assert client_blocks(20, 21)[1:] == [range(j, j + 1) for j in range(20)]


def test_fewer_clients_than_client_ranks_is_an_error():
    with pytest.raises(ConfigError, match="clients=2 is fewer than the 3 client ranks of this 4-rank job"):
        client_blocks(2, 4)


def test_device_is_cpu_without_gpus_and_cuda_request_fails_clearly():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert choose_device("auto", 3) == torch.device("cpu")
    with pytest.raises(ConfigError, match="train.device=cuda but no CUDA device is visible"):
        choose_device("cuda", 0)
