"""Load ONNX models with validation and save them atomically.

`load_model` reads a model without its external data first, checks that every external
data location is a relative path to an existing file inside the model's folder, and only
then reads the data. `save_model_atomic` writes into a temporary folder next to the
output, runs a verification callback on the written file, and moves the files into place
only when the callback passed, so a failed or interrupted save leaves no partial output.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path, PureWindowsPath
from typing import Protocol

import attrs
import google.protobuf.message
import onnx
import onnx.external_data_helper
import onnx.numpy_helper

from qrewrite.errors import ModelInputError, OutputPathError

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

# Largest protobuf message that can be serialized: 2 GiB - 1 bytes (onnx.checker.MAXIMUM_PROTOBUF).
MAX_PROTOBUF_BYTES = onnx.checker.MAXIMUM_PROTOBUF

# Tensors smaller than this stay inside the .onnx file when saving with external data
# (the same default as onnx.save_model).
EXTERNAL_DATA_SIZE_THRESHOLD = 1024


@attrs.frozen(eq=False)
class LoadedModel:
    """A model read by `load_model`, with every external tensor loaded into memory.

    `proto` is a private copy that callers may change. `folder` is the folder of the model
    file, or None for a ModelProto input. `path` and `data_files` are the model file and
    the external data files it was read from, so that saving can reject an output path
    that would overwrite them.
    """

    proto: onnx.ModelProto
    folder: Path | None
    path: Path | None = None
    data_files: tuple[Path, ...] = ()

    @property
    def source_files(self) -> tuple[Path, ...]:
        """The files the model was read from: the model file and its external data files."""
        if self.path is None:
            return self.data_files
        return (self.path, *self.data_files)


class ModelSource(Protocol):
    """A model read from files, which lists the model file and its external data files."""

    @property
    def source_files(self) -> tuple[Path, ...]: ...


@attrs.frozen
class SourceFiles:
    """The files of a `LoadedModel` without its proto, so the proto can be freed."""

    source_files: tuple[Path, ...] = ()


def load_model(model_input: PathLike | onnx.ModelProto) -> LoadedModel:
    """Read and validate a model from a path or a ModelProto, returning a private copy.

    Raises ModelInputError for a missing or unreadable file, a file that is not an ONNX
    model, a model without a graph or a default-domain opset, and external data that is
    absolute, outside the model's folder or missing. For a path, external data locations
    are checked before any external file is opened.
    """
    if isinstance(model_input, onnx.ModelProto):
        return _load_from_proto(model_input)
    if not isinstance(model_input, (str, os.PathLike)):
        raise ModelInputError(
            f"model input must be a path or an onnx.ModelProto, got {type(model_input).__name__}"
        )

    path = check_input_path(model_input)
    proto = read_model_without_data(path)
    folder = path.parent
    data_files = check_external_data(proto, folder, path)
    _load_external_data(proto, folder, path)
    return LoadedModel(proto=proto, folder=folder, path=path, data_files=data_files)


def check_input_path(model_input: PathLike) -> Path:
    """Return the input path after checking that it names an existing file."""
    path = Path(model_input)
    if not path.exists():
        raise ModelInputError(f"model file not found: {path}; check the path")
    if path.is_dir():
        raise ModelInputError(f"{path} is a folder; give the path of the .onnx model file")
    return path


def read_model_without_data(path: Path) -> onnx.ModelProto:
    """Parse the model file at `path` without reading external data, and check its structure.

    Raises ModelInputError when the file cannot be read or is not a valid ONNX model.
    """
    try:
        proto = onnx.load(os.fspath(path), load_external_data=False)
    except google.protobuf.message.DecodeError as error:
        raise ModelInputError(
            f"{path} is not a valid ONNX model (protobuf decode error: {error}); the file may "
            "be truncated or in another format"
        ) from None
    except OSError as error:
        reason = error.strerror or error
        raise ModelInputError(f"failed to read model file {path}: {reason}") from None
    except (ValueError, RuntimeError) as error:
        raise ModelInputError(f"{path} is not a valid ONNX model: {error}") from None
    _check_structure(proto, str(path))
    return proto


@attrs.frozen
class ModelFileInfo:
    """A model file checked by `inspect_model_file`: its graph inputs and the files it uses.

    `input_names` are the graph inputs that are not initializers, in graph order.
    """

    path: Path
    input_names: tuple[str, ...]
    data_files: tuple[Path, ...]

    @property
    def source_files(self) -> tuple[Path, ...]:
        """The model file and its external data files."""
        return (self.path, *self.data_files)


def inspect_model_file(model_input: PathLike) -> ModelFileInfo:
    """Check a model file as `load_model` does, but without reading its external data.

    Raises ModelInputError for the same problems as `load_model`, except that the
    contents of external data files are not read.
    """
    path = check_input_path(model_input)
    proto = read_model_without_data(path)
    data_files = check_external_data(proto, path.parent, path)
    initializers = {tensor.name for tensor in proto.graph.initializer}
    input_names = tuple(
        value.name for value in proto.graph.input if value.name not in initializers
    )
    return ModelFileInfo(path=path, input_names=input_names, data_files=data_files)


def _check_structure(proto: onnx.ModelProto, source: str) -> None:
    if not proto.HasField("graph"):
        raise ModelInputError(
            f"{source} has no graph; it is empty or not an ONNX model (a truncated file can "
            "look like this)"
        )
    default_domains = ("", "ai.onnx")
    if not any(opset.domain in default_domains for opset in proto.opset_import):
        raise ModelInputError(
            f"{source} has no opset import for the default ONNX domain; add one, for example "
            "with onnx.helper.make_opsetid('', 17)"
        )


def iter_tensors(proto: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Yield every TensorProto of the model that can hold data.

    This covers initializers and sparse initializers, tensor attributes of nodes, the
    subgraphs of If, Loop and Scan nodes at any depth, and the nodes of model functions.
    """
    yield from _graph_tensors(proto.graph)
    for function in proto.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attribute in node.attribute:
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
        if attribute.HasField("sparse_tensor"):
            yield attribute.sparse_tensor.values
            yield attribute.sparse_tensor.indices
        for sparse in attribute.sparse_tensors:
            yield sparse.values
            yield sparse.indices
        if attribute.HasField("g"):
            yield from _graph_tensors(attribute.g)
        for subgraph in attribute.graphs:
            yield from _graph_tensors(subgraph)


def _external_tensors(proto: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    for tensor in iter_tensors(proto):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            yield tensor


def _external_field(tensor: onnx.TensorProto, key: str) -> str | None:
    for entry in tensor.external_data:
        if entry.key == key:
            return entry.value
    return None


def check_external_data(
    proto: onnx.ModelProto, folder: Path, model_path: Path
) -> tuple[Path, ...]:
    """Check every external data reference and return the external files, without reading them.

    A location must be relative, must resolve inside `folder` after following symbolic
    links, and must name an existing regular file large enough for the tensor's offset and
    length. Raises ModelInputError naming the tensor and the location otherwise.
    """
    real_folder = os.path.realpath(folder)
    files: dict[str, Path] = {}
    for tensor in _external_tensors(proto):
        location = _external_field(tensor, "location")
        where = f"{model_path}: tensor {tensor.name!r}"
        if not location:
            raise ModelInputError(
                f"{where} is stored as external data but has no location; re-export the model"
            )
        if _is_absolute_location(location):
            raise ModelInputError(
                f"{where} has the absolute external data location {location!r}; external data "
                "must be a relative path inside the model's folder"
            )
        if "\0" in location:
            raise ModelInputError(
                f"{where} has an external data location with a NUL character; re-export "
                "the model"
            )

        real_location = os.path.realpath(os.path.join(real_folder, location))
        if os.path.commonpath([real_folder, real_location]) != real_folder:
            raise ModelInputError(
                f"{where} has external data location {location!r}, which resolves outside the "
                f"model's folder {folder}; move the data file next to the model"
            )
        if os.path.isdir(real_location):
            raise ModelInputError(
                f"{where} has external data location {location!r}, which is a folder; "
                "re-export the model"
            )
        if not os.path.isfile(real_location):
            raise ModelInputError(
                f"{where} refers to the external data file {location!r}, which is missing from "
                f"{folder}; copy it next to the model"
            )
        _check_external_bounds(tensor, where, location, real_location)
        files.setdefault(real_location, folder / location)
    return tuple(files.values())


def _is_absolute_location(location: str) -> bool:
    """Return True for POSIX and Windows absolute paths and drive-relative Windows paths."""
    windows_path = PureWindowsPath(location)
    return (
        os.path.isabs(location)
        or location.startswith(("/", "\\"))
        or bool(windows_path.drive)
        or windows_path.is_absolute()
    )


def _check_external_bounds(
    tensor: onnx.TensorProto, where: str, location: str, real_location: str
) -> None:
    try:
        offset = int(_external_field(tensor, "offset") or 0)
        length_text = _external_field(tensor, "length")
        length = None if length_text is None else int(length_text)
    except ValueError:
        raise ModelInputError(
            f"{where} has a non-integer external data offset or length; re-export the model"
        ) from None
    if offset < 0 or (length is not None and length < 0):
        raise ModelInputError(f"{where} has a negative external data offset or length")
    end = offset + (length or 0)
    size = os.path.getsize(real_location)
    if end > size:
        raise ModelInputError(
            f"{where} needs bytes {offset} to {end} of {location!r}, but the file has only "
            f"{size} bytes; the data file is truncated or belongs to another model"
        )


def _load_external_data(proto: onnx.ModelProto, folder: Path, model_path: Path) -> None:
    for tensor in _external_tensors(proto):
        try:
            onnx.external_data_helper.load_external_data_for_tensor(tensor, os.fspath(folder))
        except (OSError, ValueError) as error:
            raise ModelInputError(
                f"{model_path}: failed to read the external data of tensor {tensor.name!r}: {error}"
            ) from None


def _load_from_proto(model: onnx.ModelProto) -> LoadedModel:
    proto = onnx.ModelProto()
    proto.CopyFrom(model)
    _check_structure(proto, "the input ModelProto")
    for tensor in _external_tensors(proto):
        if tensor.HasField("raw_data"):
            # The data is inline even though the tensor is marked external, which is the
            # state onnx.external_data_helper leaves before writing the data file.
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]
            continue
        location = _external_field(tensor, "location")
        raise ModelInputError(
            f"the input ModelProto refers to external data ({location!r} for tensor "
            f"{tensor.name!r}) without its bytes; load it with onnx.load(path), which reads "
            "external data, or pass the model's file path instead"
        )
    return LoadedModel(proto=proto, folder=None)


def external_data_name(output_path: PathLike) -> str:
    """Return the external data file name for an output model: `OUT.onnx` -> `OUT.onnx.data`."""
    return Path(output_path).name + ".data"


def check_output_path(model_output: PathLike, source: ModelSource | None = None) -> Path:
    """Return the output path after checking that the model can be saved there.

    The folder must exist, the path must not be a folder, and neither the output nor its
    external data file may be one of the files `source` was read from. Raises
    OutputPathError otherwise.
    """
    path = Path(model_output)
    folder = path.parent
    if not folder.exists():
        raise OutputPathError(f"output folder {folder} does not exist; create it first")
    if not folder.is_dir():
        raise OutputPathError(f"output folder {folder} is not a folder")
    if path.is_dir():
        raise OutputPathError(
            f"output path {path} is a folder; give a file name such as model.onnx"
        )

    if source is not None:
        written = (path, folder / external_data_name(path))
        for target in written:
            for protected in source.source_files:
                if _same_file(target, protected):
                    raise OutputPathError(
                        f"output {target} would overwrite the input file {protected}; "
                        "choose another output path"
                    )
    return path


def _same_file(first: Path, second: Path) -> bool:
    if first.exists() and second.exists():
        return os.path.samefile(first, second)
    return os.path.realpath(first) == os.path.realpath(second)


def save_model_atomic(
    proto: onnx.ModelProto,
    path: PathLike,
    *,
    use_external_data: bool,
    verify: Callable[[Path], None],
    source: ModelSource | None = None,
) -> None:
    """Write `proto` to `path` only after `verify` accepted the written file.

    The model (and with `use_external_data` its data file, named `<output name>.data`)
    is written into a new temporary folder inside the output folder, `verify` is called
    with the temporary model path, and the files are then moved into place with
    os.replace. On any exception, KeyboardInterrupt included, the temporary folder is
    removed and the output path is left as it was. A model over 2 GiB is saved with
    external data even when `use_external_data` is False. `proto` is not modified.

    NOTE: the data file is moved before the model file, so a crash between the two moves
    can leave an older model at `path` next to the new data file. A process killed
    without cleanup (SIGKILL, power loss) leaves the hidden temporary folder behind.
    """
    output = check_output_path(path, source)
    if not use_external_data and proto.ByteSize() > MAX_PROTOBUF_BYTES:
        logger.info(
            "The model is %.1f GiB, over the 2 GiB protobuf limit; saving its weights as "
            "external data in %s",
            proto.ByteSize() / 2**30,
            external_data_name(output),
        )
        use_external_data = True

    try:
        temp_folder = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    except OSError as error:
        raise OutputPathError(
            f"failed to create a temporary folder in {output.parent}: "
            f"{error.strerror or error}; check that the folder is writable"
        ) from None

    try:
        temp_model = temp_folder / output.name
        data_name = external_data_name(output)
        try:
            _write_model(proto, temp_model, data_name if use_external_data else None)
        except OSError as error:
            raise OutputPathError(
                f"failed to write the model to {output.parent}: {error.strerror or error}"
            ) from None

        verify(temp_model)

        temp_data = temp_folder / data_name
        try:
            if temp_data.exists():
                os.replace(temp_data, output.parent / data_name)
            os.replace(temp_model, output)
        except OSError as error:
            raise OutputPathError(
                f"failed to move the model into place at {output}: {error.strerror or error}"
            ) from None
    finally:
        shutil.rmtree(temp_folder, ignore_errors=True)
    logger.debug("Saved the model to %s", output)


def _write_model(proto: onnx.ModelProto, path: Path, data_name: str | None) -> None:
    """Serialize `proto` to `path`, with tensor data in `data_name` next to it when given."""
    if data_name is None:
        path.write_bytes(proto.SerializeToString(deterministic=True))
        return

    # onnx.external_data_helper.convert_model_to_external_data is not used because in
    # onnx 1.23 it fails when a file named like the location exists in the working
    # directory. Initializers are marked here, and onnx writes the marked ones.
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for tensor in _initializers(copy.graph):
        _move_to_raw_data(tensor)
        if len(tensor.raw_data) >= EXTERNAL_DATA_SIZE_THRESHOLD:
            onnx.external_data_helper.set_external_data(tensor, data_name)
    onnx.external_data_helper.write_external_data_tensors(copy, os.fspath(path.parent))
    path.write_bytes(copy.SerializeToString(deterministic=True))

    # onnx creates the data file with mode 0600. Give it the model file's mode, which
    # follows the umask, so every user who can read the model can read its weights.
    data_path = path.parent / data_name
    if data_path.exists():
        shutil.copymode(path, data_path)


def _initializers(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Yield the initializers of `graph` and of its subgraphs at any depth."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _initializers(attribute.g)
            for subgraph in attribute.graphs:
                yield from _initializers(subgraph)


# Typed TensorProto fields that numpy_helper can move into raw_data.
_TYPED_DATA_FIELDS = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data")


def _move_to_raw_data(tensor: onnx.TensorProto) -> None:
    """Move a tensor's values from a typed field such as float_data into raw_data.

    Only raw_data can be written as external data.
    """
    if tensor.HasField("raw_data") or tensor.data_type == onnx.TensorProto.STRING:
        return
    if not any(len(getattr(tensor, field)) for field in _TYPED_DATA_FIELDS):
        return
    raw_data = onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(tensor)).raw_data
    for field in _TYPED_DATA_FIELDS:
        tensor.ClearField(field)
    tensor.raw_data = raw_data
