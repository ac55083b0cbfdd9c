import pytest

from qrewrite.calibration import runner


@pytest.fixture(params=["numpy", "graph"])
def small_tensor_path(request, monkeypatch):
    """Run each test twice: small tensors reduced in numpy, and every tensor in the graph."""
    if request.param == "graph":
        monkeypatch.setattr(runner, "RAW_ELEMENTS", -1)
    return request.param
