from unittest import mock

import numpy as np
import pyro
import pytest
import torch

from pyro_contrast import _validation
from pyro_contrast._validation import as_float_tensor, check_finite, is_validation_enabled


def test_switch_is_pyros():
    assert is_validation_enabled()
    with pyro.validation_enabled(False):
        assert not is_validation_enabled()
    assert is_validation_enabled()
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        assert not is_validation_enabled()
    finally:
        pyro.enable_validation(True)


def test_check_finite_reads_no_value_when_off():
    bad = torch.tensor([1.0, float("nan")])
    with pytest.raises(ValueError, match=r"x contains NaN values \(first at index \(1,\)\)"):
        check_finite(bad, "x")
    with pytest.raises(ValueError, match="contains inf values .*: hint"):
        check_finite(torch.tensor([float("inf")]), "x", hint=": hint")
    with pyro.validation_enabled(False), mock.patch.object(torch, "isfinite") as isfinite:
        assert check_finite(bad, "x") is bad
        isfinite.assert_not_called()
    # an explicit validate (a distribution's validate_args) wins over the global switch
    with pytest.raises(ValueError):
        with pyro.validation_enabled(False):
            check_finite(bad, "x", validate=True)
    assert check_finite(bad, "x", validate=False) is bad


@pytest.mark.parametrize(
    "value, dtype",
    [
        (np.ones(2, dtype=np.float16), torch.float32),
        (torch.ones(2, dtype=torch.bfloat16), torch.float32),
        (torch.ones(2, dtype=torch.int64), torch.float32),
        (np.ones(2), torch.float64),
    ],
)
def test_as_float_tensor(value, dtype):
    assert as_float_tensor(value, "x").dtype == dtype


def test_as_float_tensor_refuses():
    with pytest.raises(TypeError, match="x must be real-valued"):
        as_float_tensor(torch.ones(2, dtype=torch.complex128), "x")
    with pytest.raises(TypeError, match="x must hold numbers"):
        as_float_tensor(np.array(["a"]), "x")
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        as_float_tensor("abc", "x")
    assert _validation.check_rows(torch.ones(2, 3), "x", dim=3).shape == (2, 3)
