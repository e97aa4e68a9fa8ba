from __future__ import annotations

import pytest

from latency_models import Kernel


def test_conv_shapes_params_macs():
    k = Kernel("conv", (16, 32, 32), out_channels=32, kernel_size=3, stride=2, groups=1, bits=8, activation="relu")
    assert k.output_shape == (32, 16, 16)
    assert k.params == 32 * 16 * 9 + 32
    assert k.macs == 32 * 16 * 16 * 16 * 9
    assert k.weight_bytes == 32 * 16 * 9 + 4 * 32 + 4 * 32


def test_depthwise_and_linear():
    dw = Kernel("conv", (24, 15, 15), out_channels=24, kernel_size=5, stride=2, groups=24)
    assert dw.output_shape == (24, 8, 8)
    assert dw.params == 24 * 25 + 24
    fc = Kernel("linear", (1504,), out_channels=100)
    assert fc.params == 1504 * 100 + 100 and fc.output_shape == (100,)


def test_round_trip_and_key():
    k = Kernel("channel_shuffle", (64, 8, 8), groups=2)
    assert Kernel.from_dict(k.to_dict()) == k
    assert k.key() != Kernel("channel_shuffle", (64, 8, 8), groups=4).key()


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(op="conv3d", input_shape=(3, 8, 8)), "op"),
        (dict(op="conv", input_shape=(3, 8), out_channels=4), "input_shape"),
        (dict(op="conv", input_shape=(3, 8, 8), out_channels=4, bits=6), "bits"),
        (dict(op="conv", input_shape=(6, 8, 8), out_channels=4, groups=4), "groups"),
        (dict(op="add", input_shape=(3, 8, 8), activation="gelu"), "activation"),
    ],
)
def test_bad_kernels_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Kernel(**kwargs)


def test_unknown_field_in_dict():
    with pytest.raises(ValueError, match="unknown field"):
        Kernel.from_dict({"op": "add", "input_shape": [3, 4, 4], "colour": "red"})
