"""Quantized data types: bit width, signedness, integer range and ONNX element type."""

from __future__ import annotations

import enum

import onnx


class DataType(enum.Enum):
    """A data type a tensor can be quantized to."""

    Int4 = "Int4"
    UInt4 = "UInt4"
    Int8 = "Int8"
    UInt8 = "UInt8"
    Int16 = "Int16"
    UInt16 = "UInt16"
    Int32 = "Int32"
    UInt32 = "UInt32"
    BFloat16 = "BFloat16"
    BFP16 = "BFP16"

    @property
    def is_integer(self) -> bool:
        return self not in (DataType.BFloat16, DataType.BFP16)

    @property
    def signed(self) -> bool:
        return not self.value.startswith("U")

    @property
    def bits(self) -> int:
        return _BITS[self]

    @property
    def qmin(self) -> int:
        """Smallest integer of the type."""
        if not self.is_integer:
            raise ValueError(f"{self.value} is not an integer type")
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        """Largest integer of the type."""
        if not self.is_integer:
            raise ValueError(f"{self.value} is not an integer type")
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def onnx_type(self) -> int:
        """The `onnx.TensorProto` element type of the quantized tensor."""
        return _ONNX_TYPES[self]

    @property
    def min_opset(self) -> int:
        """Lowest ONNX opset whose QuantizeLinear and DequantizeLinear accept the type."""
        return (
            21 if self in (DataType.Int4, DataType.UInt4, DataType.Int16, DataType.UInt16) else 10
        )


_BITS = {
    DataType.Int4: 4,
    DataType.UInt4: 4,
    DataType.Int8: 8,
    DataType.UInt8: 8,
    DataType.Int16: 16,
    DataType.UInt16: 16,
    DataType.Int32: 32,
    DataType.UInt32: 32,
    DataType.BFloat16: 16,
    DataType.BFP16: 16,
}

_ONNX_TYPES = {
    DataType.Int4: onnx.TensorProto.INT4,
    DataType.UInt4: onnx.TensorProto.UINT4,
    DataType.Int8: onnx.TensorProto.INT8,
    DataType.UInt8: onnx.TensorProto.UINT8,
    DataType.Int16: onnx.TensorProto.INT16,
    DataType.UInt16: onnx.TensorProto.UINT16,
    DataType.Int32: onnx.TensorProto.INT32,
    DataType.UInt32: onnx.TensorProto.UINT32,
    DataType.BFloat16: onnx.TensorProto.BFLOAT16,
    DataType.BFP16: onnx.TensorProto.FLOAT,
}

Int4 = DataType.Int4
UInt4 = DataType.UInt4
Int8 = DataType.Int8
UInt8 = DataType.UInt8
Int16 = DataType.Int16
UInt16 = DataType.UInt16
Int32 = DataType.Int32
UInt32 = DataType.UInt32
BFloat16 = DataType.BFloat16
BFP16 = DataType.BFP16
