"""Tests of model loading, external data checks, atomic saving and model verification."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import onnx
import onnx.external_data_helper
import pytest
from onnx import TensorProto, helper, numpy_helper

from qrewrite.errors import ModelInputError, OutputPathError
from qrewrite.model import io
from qrewrite.model.io import LoadedModel, load_model, save_model_atomic
from qrewrite.model.verify import ModelVerificationError, verify_model_file, verify_model_proto

WEIGHT_SHAPE = (16, 16)


def make_model(weight: np.ndarray | None = None) -> onnx.ModelProto:
    """Build y = x @ W with a float32 weight initializer large enough for external data."""
    if weight is None:
        weight = np.arange(np.prod(WEIGHT_SHAPE), dtype=np.float32).reshape(WEIGHT_SHAPE)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="matmul")],
        "matmul_graph",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WEIGHT_SHAPE[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, WEIGHT_SHAPE[1]])],
        initializer=[numpy_helper.from_array(weight, "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def point_to_external(tensor: onnx.TensorProto, location: str, length: int = 16) -> None:
    """Mark `tensor` as stored at `location` and drop its inline bytes."""
    onnx.external_data_helper.set_external_data(tensor, location, offset=0, length=length)
    tensor.data_location = TensorProto.EXTERNAL
    tensor.ClearField("raw_data")


def write_model_file(proto: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(proto.SerializeToString())
    return path


@pytest.fixture
def forbid_external_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any external data file is read."""
    block_external_reads(monkeypatch)


def block_external_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every read of an external data file through onnx fail the test."""

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("external data was read before the location was checked")

    monkeypatch.setattr(onnx.external_data_helper, "load_external_data_for_tensor", fail)
    # onnx 1.23 opens every external data file through this private helper.
    monkeypatch.setattr(onnx.external_data_helper, "_open_external_data_fd", fail)


def accept(path: Path) -> None:
    """A verify callback that accepts every model."""


# Loading from a path


def test_load_path_returns_model_and_folder(tmp_path: Path) -> None:
    path = write_model_file(make_model(), tmp_path / "model.onnx")

    loaded = load_model(path)

    assert loaded.proto == make_model()
    assert loaded.folder == tmp_path
    assert loaded.path == path
    assert loaded.data_files == ()


def test_load_accepts_str_path(tmp_path: Path) -> None:
    path = write_model_file(make_model(), tmp_path / "model.onnx")

    assert load_model(str(path)).proto.graph.name == "matmul_graph"


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelInputError, match="not found") as caught:
        load_model(tmp_path / "absent.onnx")
    assert "absent.onnx" in str(caught.value)


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelInputError, match="is a folder"):
        load_model(tmp_path)


def test_load_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")

    with pytest.raises(ModelInputError, match="has no graph") as caught:
        load_model(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
def test_load_truncated_file(tmp_path: Path, fraction: float) -> None:
    data = make_model().SerializeToString()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: int(len(data) * fraction)])

    with pytest.raises(ModelInputError) as caught:
        load_model(path)
    assert str(path) in str(caught.value)


def test_load_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\n" * 20)

    with pytest.raises(ModelInputError, match=re.escape("notes.onnx")):
        load_model(path)


def test_load_model_without_default_opset(tmp_path: Path) -> None:
    proto = make_model()
    del proto.opset_import[:]
    proto.opset_import.append(helper.make_opsetid("com.example", 1))
    path = write_model_file(proto, tmp_path / "model.onnx")

    with pytest.raises(ModelInputError, match="no opset import for the default ONNX domain"):
        load_model(path)


def test_load_unreadable_type() -> None:
    with pytest.raises(ModelInputError, match=re.escape("path or an onnx.ModelProto")):
        load_model(42)  # type: ignore[arg-type]


# Loading a ModelProto


def test_load_proto_returns_copy() -> None:
    original = make_model()
    before = original.SerializeToString()

    loaded = load_model(original)
    loaded.proto.graph.node[0].name = "changed"

    assert original.SerializeToString() == before
    assert loaded.folder is None
    assert loaded.path is None


def test_load_proto_without_graph() -> None:
    with pytest.raises(ModelInputError, match="has no graph"):
        load_model(onnx.ModelProto())


def test_load_proto_with_external_reference() -> None:
    proto = make_model()
    point_to_external(proto.graph.initializer[0], "weights.bin")

    with pytest.raises(ModelInputError, match=re.escape("weights.bin")):
        load_model(proto)


def test_load_proto_with_inline_external_data() -> None:
    proto = make_model()
    tensor = proto.graph.initializer[0]
    onnx.external_data_helper.set_external_data(tensor, "weights.bin")
    tensor.data_location = TensorProto.EXTERNAL

    loaded = load_model(proto)

    loaded_tensor = loaded.proto.graph.initializer[0]
    assert loaded_tensor.data_location == TensorProto.DEFAULT
    assert len(loaded_tensor.external_data) == 0
    np.testing.assert_array_equal(
        numpy_helper.to_array(loaded_tensor),
        numpy_helper.to_array(make_model().graph.initializer[0]),
    )


# External data


def test_load_external_data_inside_folder(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    onnx.save_model(
        make_model(), path, save_as_external_data=True, location="model.onnx.data",
        size_threshold=0,
    )

    loaded = load_model(path)

    tensor = loaded.proto.graph.initializer[0]
    assert tensor.data_location == TensorProto.DEFAULT
    np.testing.assert_array_equal(
        numpy_helper.to_array(tensor), numpy_helper.to_array(make_model().graph.initializer[0])
    )
    assert loaded.data_files == (tmp_path / "model.onnx.data",)


def test_load_external_data_in_subfolder(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    (tmp_path / "weights").mkdir()
    onnx.save_model(
        make_model(), path, save_as_external_data=True, location="weights/w.bin", size_threshold=0
    )

    loaded = load_model(path)

    assert loaded.proto.graph.initializer[0].data_location == TensorProto.DEFAULT


@pytest.mark.usefixtures("forbid_external_reads")
def test_load_rejects_parent_location(tmp_path: Path) -> None:
    (tmp_path / "outside.bin").write_bytes(b"\0" * 2048)
    proto = make_model()
    point_to_external(proto.graph.initializer[0], "../outside.bin")
    path = write_model_file(proto, tmp_path / "model" / "model.onnx")

    with pytest.raises(ModelInputError, match="resolves outside the model's folder") as caught:
        load_model(path)
    assert "../outside.bin" in str(caught.value)
    assert "'W'" in str(caught.value)


@pytest.mark.usefixtures("forbid_external_reads")
@pytest.mark.parametrize("location", ["/etc/passwd", "\\\\server\\share\\w.bin", "C:\\w.bin"])
def test_load_rejects_absolute_location(tmp_path: Path, location: str) -> None:
    proto = make_model()
    point_to_external(proto.graph.initializer[0], location)
    path = write_model_file(proto, tmp_path / "model.onnx")

    with pytest.raises(ModelInputError, match="absolute external data location"):
        load_model(path)


@pytest.mark.usefixtures("forbid_external_reads")
def test_load_rejects_absolute_location_of_existing_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 2048)
    proto = make_model()
    point_to_external(proto.graph.initializer[0], str(secret))
    path = write_model_file(proto, tmp_path / "model" / "model.onnx")

    with pytest.raises(ModelInputError, match="absolute external data location"):
        load_model(path)


@pytest.mark.usefixtures("forbid_external_reads")
def test_load_rejects_symlink_outside(tmp_path: Path) -> None:
    (tmp_path / "outside.bin").write_bytes(b"\0" * 2048)
    model_folder = tmp_path / "model"
    model_folder.mkdir()
    (model_folder / "link.bin").symlink_to(tmp_path / "outside.bin")
    proto = make_model()
    point_to_external(proto.graph.initializer[0], "link.bin")
    path = write_model_file(proto, model_folder / "model.onnx")

    with pytest.raises(ModelInputError, match="resolves outside"):
        load_model(path)


@pytest.mark.usefixtures("forbid_external_reads")
def test_load_rejects_location_in_subgraph(tmp_path: Path) -> None:
    (tmp_path / "outside.bin").write_bytes(b"\0" * 2048)
    constant = numpy_helper.from_array(np.ones(4, dtype=np.float32), "c")
    point_to_external(constant, "../outside.bin")
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["c_out"], value=constant)],
        "branch",
        [],
        [helper.make_tensor_value_info("c_out", TensorProto.FLOAT, [4])],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)],
        "if_graph",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = write_model_file(proto, tmp_path / "model" / "model.onnx")

    with pytest.raises(ModelInputError, match="resolves outside"):
        load_model(path)


@pytest.mark.usefixtures("forbid_external_reads")
def test_load_rejects_location_in_function(tmp_path: Path) -> None:
    constant = numpy_helper.from_array(np.ones(4, dtype=np.float32), "c")
    point_to_external(constant, "/etc/passwd")
    function = helper.make_function(
        "com.example",
        "AddConstant",
        ["x"],
        ["y"],
        [
            helper.make_node("Constant", [], ["c"], value=constant),
            helper.make_node("Add", ["x", "c"], ["y"]),
        ],
        [helper.make_opsetid("", 17)],
    )
    graph = helper.make_graph(
        [helper.make_node("AddConstant", ["x"], ["y"], domain="com.example")],
        "function_graph",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
        functions=[function],
    )
    path = write_model_file(proto, tmp_path / "model.onnx")

    with pytest.raises(ModelInputError, match="absolute external data location"):
        load_model(path)


@pytest.mark.usefixtures("forbid_external_reads")
def test_load_rejects_missing_data_file(tmp_path: Path) -> None:
    proto = make_model()
    point_to_external(proto.graph.initializer[0], "missing.bin")
    path = write_model_file(proto, tmp_path / "model.onnx")

    with pytest.raises(ModelInputError, match=re.escape("missing.bin")) as caught:
        load_model(path)
    assert "is missing" in str(caught.value)


@pytest.mark.usefixtures("forbid_external_reads")
@pytest.mark.parametrize(
    ("location", "message"),
    [("w\0.bin", "NUL character"), (".", "is a folder"), ("sub", "is a folder")],
)
def test_load_rejects_odd_locations(tmp_path: Path, location: str, message: str) -> None:
    (tmp_path / "sub").mkdir()
    proto = make_model()
    point_to_external(proto.graph.initializer[0], location)
    path = write_model_file(proto, tmp_path / "model.onnx")

    with pytest.raises(ModelInputError, match=message):
        load_model(path)


@pytest.mark.usefixtures("forbid_external_reads")
def test_load_rejects_short_data_file(tmp_path: Path) -> None:
    (tmp_path / "w.bin").write_bytes(b"\0" * 10)
    proto = make_model()
    point_to_external(proto.graph.initializer[0], "w.bin", length=1024)
    path = write_model_file(proto, tmp_path / "model.onnx")

    with pytest.raises(ModelInputError, match="only 10 bytes"):
        load_model(path)


@pytest.mark.usefixtures("forbid_external_reads")
def test_load_rejects_tensor_without_location(tmp_path: Path) -> None:
    proto = make_model()
    tensor = proto.graph.initializer[0]
    tensor.data_location = TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    path = write_model_file(proto, tmp_path / "model.onnx")

    with pytest.raises(ModelInputError, match="has no location"):
        load_model(path)


def test_inspect_skips_initializer_inputs(tmp_path: Path) -> None:
    proto = make_model()
    proto.graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, WEIGHT_SHAPE))
    path = write_model_file(proto, tmp_path / "model.onnx")

    info = io.inspect_model_file(path)

    assert info.input_names == ("x",)
    assert info.source_files == (path,)


def test_inspect_lists_data_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.onnx"
    onnx.save_model(make_model(), path, save_as_external_data=True, location="w.bin",
                    size_threshold=0)
    block_external_reads(monkeypatch)

    info = io.inspect_model_file(path)

    assert info.data_files == (tmp_path / "w.bin",)


@pytest.mark.usefixtures("forbid_external_reads")
def test_inspect_rejects_outside_location(tmp_path: Path) -> None:
    (tmp_path / "outside.bin").write_bytes(b"\0" * 2048)
    proto = make_model()
    point_to_external(proto.graph.initializer[0], "../outside.bin")
    path = write_model_file(proto, tmp_path / "model" / "model.onnx")

    with pytest.raises(ModelInputError, match="resolves outside"):
        io.inspect_model_file(path)


def test_output_check_uses_inspected_files(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    onnx.save_model(make_model(), path, save_as_external_data=True, location="out.onnx.data",
                    size_threshold=0)
    info = io.inspect_model_file(path)

    with pytest.raises(OutputPathError, match="would overwrite the input"):
        io.check_output_path(path, info)
    with pytest.raises(OutputPathError, match="would overwrite the input"):
        io.check_output_path(tmp_path / "out.onnx", info)
    assert io.check_output_path(tmp_path / "other.onnx", info) == tmp_path / "other.onnx"


# Saving


def test_save_writes_model(tmp_path: Path) -> None:
    output = tmp_path / "out.onnx"

    save_model_atomic(make_model(), output, use_external_data=False, verify=accept)

    assert onnx.load(output) == make_model()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]


def test_save_twice_byte_identical(tmp_path: Path) -> None:
    first = tmp_path / "first.onnx"
    second = tmp_path / "second.onnx"

    save_model_atomic(make_model(), first, use_external_data=False, verify=accept)
    save_model_atomic(make_model(), second, use_external_data=False, verify=accept)

    assert first.read_bytes() == second.read_bytes()


def test_save_external_twice_byte_identical(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = tmp_path / "a" / "out.onnx"
    second = tmp_path / "b" / "out.onnx"

    save_model_atomic(make_model(), first, use_external_data=True, verify=accept)
    save_model_atomic(make_model(), second, use_external_data=True, verify=accept)

    assert first.read_bytes() == second.read_bytes()
    assert (tmp_path / "a" / "out.onnx.data").read_bytes() == (
        tmp_path / "b" / "out.onnx.data"
    ).read_bytes()


def test_save_external_data_named_after_output(tmp_path: Path) -> None:
    output = tmp_path / "out.onnx"
    seen: list[Path] = []

    def record(path: Path) -> None:
        seen.append(path)
        assert (path.parent / "out.onnx.data").is_file()
        verify_model_file(path)

    save_model_atomic(make_model(), output, use_external_data=True, verify=record)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx", "out.onnx.data"]
    assert seen[0].parent.parent == tmp_path
    assert seen[0].name == "out.onnx"
    tensor = onnx.load(output, load_external_data=False).graph.initializer[0]
    assert onnx.external_data_helper.uses_external_data(tensor)
    assert tensor.external_data[0].value == "out.onnx.data"
    np.testing.assert_array_equal(
        numpy_helper.to_array(load_model(output).proto.graph.initializer[0]),
        numpy_helper.to_array(make_model().graph.initializer[0]),
    )


def test_save_data_file_mode_matches_model(tmp_path: Path) -> None:
    output = tmp_path / "out.onnx"

    save_model_atomic(make_model(), output, use_external_data=True, verify=accept)

    model_mode = output.stat().st_mode & 0o777
    data_mode = (tmp_path / "out.onnx.data").stat().st_mode & 0o777
    assert data_mode == model_mode


def test_save_external_ignores_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "out.onnx.data").write_bytes(b"unrelated file")
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(cwd)

    save_model_atomic(make_model(), tmp_path / "out" / "out.onnx", use_external_data=True,
                      verify=verify_model_file)

    assert (tmp_path / "out" / "out.onnx.data").is_file()
    assert (cwd / "out.onnx.data").read_bytes() == b"unrelated file"


def test_save_external_typed_data_fields(tmp_path: Path) -> None:
    weight = np.arange(np.prod(WEIGHT_SHAPE), dtype=np.float32).reshape(WEIGHT_SHAPE)
    proto = make_model()
    proto.graph.initializer[0].CopyFrom(
        helper.make_tensor("W", TensorProto.FLOAT, WEIGHT_SHAPE, weight.flatten().tolist())
    )
    shape = np.arange(512, dtype=np.int64)
    proto.graph.initializer.append(
        helper.make_tensor("shape_values", TensorProto.INT64, [512], shape.tolist())
    )
    output = tmp_path / "out.onnx"

    save_model_atomic(proto, output, use_external_data=True, verify=accept)

    stored = onnx.load(output, load_external_data=False).graph.initializer
    assert all(onnx.external_data_helper.uses_external_data(tensor) for tensor in stored)
    loaded = load_model(output).proto.graph.initializer
    np.testing.assert_array_equal(numpy_helper.to_array(loaded[0]), weight)
    np.testing.assert_array_equal(numpy_helper.to_array(loaded[1]), shape)


def test_save_external_keeps_small_tensors_inline(tmp_path: Path) -> None:
    proto = make_model()
    proto.graph.initializer.append(numpy_helper.from_array(np.ones(4, dtype=np.float32), "b"))
    output = tmp_path / "out.onnx"

    save_model_atomic(proto, output, use_external_data=True, verify=accept)

    stored = {tensor.name: tensor for tensor in onnx.load(output, load_external_data=False)
              .graph.initializer}
    assert onnx.external_data_helper.uses_external_data(stored["W"])
    assert not onnx.external_data_helper.uses_external_data(stored["b"])


def test_save_does_not_modify_proto(tmp_path: Path) -> None:
    proto = make_model()
    before = proto.SerializeToString()

    save_model_atomic(proto, tmp_path / "out.onnx", use_external_data=True, verify=accept)

    assert proto.SerializeToString() == before


def test_save_failed_verify_leaves_nothing(tmp_path: Path) -> None:
    def reject(path: Path) -> None:
        raise ModelVerificationError("rejected for the test")

    for use_external_data in (False, True):
        with pytest.raises(ModelVerificationError):
            save_model_atomic(
                make_model(), tmp_path / "out.onnx", use_external_data=use_external_data,
                verify=reject,
            )
        assert list(tmp_path.iterdir()) == []


def test_save_interrupt_leaves_nothing(tmp_path: Path) -> None:
    def interrupt(path: Path) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_model_atomic(make_model(), tmp_path / "out.onnx", use_external_data=True,
                          verify=interrupt)

    assert list(tmp_path.iterdir()) == []


def test_save_failed_verify_keeps_old_output(tmp_path: Path) -> None:
    output = tmp_path / "out.onnx"
    output.write_bytes(b"previous output")

    def reject(path: Path) -> None:
        raise ModelVerificationError("rejected for the test")

    with pytest.raises(ModelVerificationError):
        save_model_atomic(make_model(), output, use_external_data=False, verify=reject)

    assert output.read_bytes() == b"previous output"
    assert [p.name for p in tmp_path.iterdir()] == ["out.onnx"]


def test_save_replaces_existing_output(tmp_path: Path) -> None:
    output = tmp_path / "out.onnx"
    output.write_bytes(b"previous output")

    save_model_atomic(make_model(), output, use_external_data=False, verify=accept)

    assert onnx.load(output) == make_model()


def test_save_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(OutputPathError, match="does not exist"):
        save_model_atomic(make_model(), tmp_path / "absent" / "out.onnx",
                          use_external_data=False, verify=accept)


def test_save_to_folder_path(tmp_path: Path) -> None:
    (tmp_path / "out.onnx").mkdir()

    with pytest.raises(OutputPathError, match="is a folder"):
        save_model_atomic(make_model(), tmp_path / "out.onnx", use_external_data=False,
                          verify=accept)


def test_save_rejects_input_path(tmp_path: Path) -> None:
    path = write_model_file(make_model(), tmp_path / "model.onnx")
    before = path.read_bytes()
    loaded = load_model(path)

    with pytest.raises(OutputPathError, match="would overwrite the input"):
        save_model_atomic(loaded.proto, tmp_path / "." / "model.onnx", use_external_data=False,
                          verify=accept, source=loaded)

    assert path.read_bytes() == before


def test_save_rejects_input_data_file(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    onnx.save_model(make_model(), path, save_as_external_data=True, location="out.onnx.data",
                    size_threshold=0)
    loaded = load_model(path)

    with pytest.raises(OutputPathError, match=re.escape("out.onnx.data")):
        save_model_atomic(loaded.proto, tmp_path / "out.onnx", use_external_data=True,
                          verify=accept, source=loaded)


def test_save_write_failure_is_output_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail_write(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io, "_write_model", fail_write)

    with pytest.raises(OutputPathError, match="No space left on device"):
        save_model_atomic(make_model(), tmp_path / "out.onnx", use_external_data=False,
                          verify=accept)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_save_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputPathError, match="writable"):
            save_model_atomic(make_model(), folder / "out.onnx", use_external_data=False,
                              verify=accept)
    finally:
        folder.chmod(0o755)


def test_save_large_model_uses_external_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(io, "MAX_PROTOBUF_BYTES", 100)
    output = tmp_path / "out.onnx"

    with caplog.at_level(logging.INFO, logger="qrewrite"):
        save_model_atomic(make_model(), output, use_external_data=False, verify=accept)

    assert (tmp_path / "out.onnx.data").is_file()
    assert "external data" in caplog.text


def test_save_writes_nothing_to_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(cwd)
    path = write_model_file(make_model(), tmp_path / "in" / "model.onnx")

    loaded = load_model(path)
    save_model_atomic(loaded.proto, tmp_path / "out" / "model.onnx", use_external_data=True,
                      verify=verify_model_file, source=loaded)

    assert list(cwd.iterdir()) == []


def test_loaded_model_is_frozen(tmp_path: Path) -> None:
    loaded = LoadedModel(proto=make_model(), folder=None)

    with pytest.raises(AttributeError):
        loaded.folder = tmp_path  # type: ignore[misc]


# Verification


def test_verify_accepts_valid_model(tmp_path: Path) -> None:
    path = write_model_file(make_model(), tmp_path / "model.onnx")

    verify_model_file(path)
    verify_model_proto(make_model())


def bad_model() -> onnx.ModelProto:
    """A model whose Add mixes float and int64 inputs, which the checker rejects."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "n"], ["y"])],
        "bad",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("n", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_verify_rejects_bad_model_file(tmp_path: Path) -> None:
    path = write_model_file(bad_model(), tmp_path / "bad.onnx")

    with pytest.raises(ModelVerificationError, match="onnx checker rejected") as caught:
        verify_model_file(path)
    assert "inconsistent type" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_verify_rejects_bad_model_proto() -> None:
    with pytest.raises(ModelVerificationError, match="inconsistent type"):
        verify_model_proto(bad_model())


def test_verify_error_is_not_user_error() -> None:
    from qrewrite.errors import QrewriteError

    assert not issubclass(ModelVerificationError, QrewriteError)


def test_verify_rejects_model_onnxruntime_cannot_load(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], domain="com.example")],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    path = write_model_file(proto, tmp_path / "custom.onnx")

    with pytest.raises(ModelVerificationError):
        verify_model_file(path)


def test_verify_checks_saved_file(tmp_path: Path) -> None:
    with pytest.raises(ModelVerificationError):
        save_model_atomic(bad_model(), tmp_path / "bad.onnx", use_external_data=False,
                          verify=verify_model_file)

    assert list(tmp_path.iterdir()) == []
    assert not os.listdir(tmp_path)
