import pytest
import torch

from album_pipeline.training import compute


def test_precision_and_device_resolution():
    cpu = torch.device("cpu")
    assert compute.resolve_precision("auto", cpu) == ("bf16" if compute.cpu_has_native_bf16() else "fp32")
    assert compute.resolve_precision("fp32", cpu) == "fp32"
    assert compute.resolve_device("cpu") == cpu
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert compute.resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            compute.resolve_device("cuda")
