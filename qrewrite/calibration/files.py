"""Calibration samples stored as numpy files: one `.npz` file, or a folder of sample files.

A sample is a dict from graph input name to an array shaped exactly as the model takes
it, batch axis included. The layouts are:

- One `.npz` file with keys `NAME/INDEX`, such as `x/0`, `x/1`, `mask/0`, `mask/1`.
  Every INDEX is one sample, samples come in increasing INDEX order, and every sample
  must have the same input names. An input name may itself contain "/" because only the
  part after the last "/" is the index. To store a stacked array `data` of N samples
  for input `x` whose batch size is 1, write
  `np.savez(path, **{f"x/{i}": data[i:i + 1] for i in range(len(data))})`.
- One `.npz` file with plain input names as keys (as `np.savez(path, x=x)` writes):
  a single sample.
- A folder in which every `.npz` file is one sample with plain input names as keys, and
  every `.npy` file is one sample of a model with a single input. Files are read in
  natural name order (`2.npz` before `10.npz`), and other files are ignored.

Files are opened with `allow_pickle=False`, so object arrays are rejected. The arrays
are read one sample at a time while iterating, not when the source is opened.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from qrewrite.errors import CalibrationDataError

SAMPLE_SUFFIXES = (".npz", ".npy")


@attrs.frozen
class SampleLocation:
    """The file of one sample and, per input name, the key of its array in that file.

    The key is None for a `.npy` file, which stores a single array.
    """

    file: Path
    arrays: tuple[tuple[str, str | None], ...]


@attrs.frozen
class CalibrationFiles:
    """Calibration samples read from numpy files; iterating yields one dict per sample.

    Every iteration starts again from the first sample, so the pipeline can take
    several passes over the data.
    """

    path: Path
    samples: tuple[SampleLocation, ...]

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        open_file: Path | None = None
        archive: Any = None
        try:
            for location in self.samples:
                if location.file != open_file:
                    if archive is not None:
                        archive.close()
                        archive = None
                    open_file = location.file
                    if location.file.suffix.lower() == ".npz":
                        archive = _open_npz(location.file)
                yield {
                    name: _read_array(location.file, archive, key)
                    for name, key in location.arrays
                }
        finally:
            if archive is not None:
                archive.close()


def read_calibration_data(
    path: str | os.PathLike[str], input_names: Sequence[str] | None = None
) -> CalibrationFiles:
    """Open calibration samples from a `.npz` file, a `.npy` file or a folder of them.

    `input_names` are the model's graph inputs. A `.npy` file needs exactly one, which
    names its array. When `input_names` is given, a sample with an unknown input name or
    without one of the inputs raises CalibrationDataError. This reads only the file
    names and the `.npz` keys, not the arrays.
    """
    path = Path(path)
    if not path.exists():
        raise CalibrationDataError(f"calibration data not found: {path}")

    if path.is_dir():
        samples = _folder_samples(path, input_names)
    elif path.suffix.lower() == ".npz":
        samples = _npz_samples(path)
    elif path.suffix.lower() == ".npy":
        samples = (_npy_sample(path, input_names),)
    else:
        raise CalibrationDataError(
            f"calibration data {path} must be a .npz file, a .npy file or a folder of them, "
            f"got a {path.suffix or 'suffix-less'} file"
        )

    if input_names is not None:
        for index, sample in enumerate(samples):
            _check_names(sample, index, input_names)
    return CalibrationFiles(path=path, samples=samples)


def _npz_samples(path: Path) -> tuple[SampleLocation, ...]:
    keys = _npz_keys(path)
    if not keys:
        raise CalibrationDataError(f"calibration data {path} contains no arrays")

    indexed = [key for key in keys if _split_indexed_key(key) is not None]
    if not indexed:
        return (SampleLocation(path, tuple((key, key) for key in keys)),)
    if len(indexed) != len(keys):
        plain = sorted(set(keys) - set(indexed))
        raise CalibrationDataError(
            f"calibration data {path} mixes NAME/INDEX keys with plain keys {plain}; use "
            "NAME/INDEX keys for every array, or plain input names for a single sample"
        )

    by_index: dict[int, dict[str, str]] = {}
    for key in keys:
        split = _split_indexed_key(key)
        assert split is not None
        name, index = split
        arrays = by_index.setdefault(index, {})
        if name in arrays:
            raise CalibrationDataError(
                f"calibration data {path}: keys {arrays[name]!r} and {key!r} are both input "
                f"{name!r} of sample {index}; keep one"
            )
        arrays[name] = key

    ordered = sorted(by_index)
    expected_names = set(by_index[ordered[0]])
    samples = []
    for index in ordered:
        names = set(by_index[index])
        if names != expected_names:
            missing = sorted(expected_names - names)
            extra = sorted(names - expected_names)
            raise CalibrationDataError(
                f"calibration data {path}: sample {index} has inputs {sorted(names)}, but "
                f"sample {ordered[0]} has {sorted(expected_names)} (missing {missing}, "
                f"extra {extra}); every sample needs the same inputs"
            )
        keys_by_name = tuple(sorted(by_index[index].items()))
        samples.append(SampleLocation(path, keys_by_name))
    return tuple(samples)


def _split_indexed_key(key: str) -> tuple[str, int] | None:
    """Split `NAME/INDEX` into the name and the integer index, or return None."""
    name, separator, index = key.rpartition("/")
    if not separator or not name or not index.isdigit():
        return None
    return name, int(index)


def _npy_sample(path: Path, input_names: Sequence[str] | None) -> SampleLocation:
    if input_names is None or len(input_names) != 1:
        described = "unknown" if input_names is None else f"{list(input_names)}"
        raise CalibrationDataError(
            f"calibration file {path} is a .npy file, which fits only a model with a single "
            f"input (model inputs: {described}); store samples as .npz files keyed by input "
            "name"
        )
    return SampleLocation(path, ((input_names[0], None),))


def _folder_samples(
    folder: Path, input_names: Sequence[str] | None
) -> tuple[SampleLocation, ...]:
    files = sorted(
        (
            entry
            for entry in folder.iterdir()
            if entry.is_file()
            and not entry.name.startswith(".")
            and entry.suffix.lower() in SAMPLE_SUFFIXES
        ),
        key=_natural_key,
    )
    if not files:
        raise CalibrationDataError(
            f"calibration folder {folder} contains no .npz or .npy files; put one sample per "
            "file in it"
        )

    samples = []
    for file in files:
        if file.suffix.lower() == ".npy":
            samples.append(_npy_sample(file, input_names))
            continue
        keys = _npz_keys(file)
        if not keys:
            raise CalibrationDataError(f"calibration file {file} contains no arrays")
        samples.append(SampleLocation(file, tuple((key, key) for key in keys)))
    return tuple(samples)


def _natural_key(path: Path) -> list[Any]:
    """Sort key that orders the digit runs of a file name by value: 2 before 10."""
    parts = re.split(r"(\d+)", path.name)
    return [(0, int(part), part) if part.isdigit() else (1, 0, part) for part in parts]


def _npz_keys(path: Path) -> list[str]:
    with _open_npz(path) as archive:
        return list(archive.files)


def _open_npz(path: Path) -> Any:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise CalibrationDataError(
            f"failed to read calibration file {path}: {error}; it must be a file written by "
            "numpy.savez"
        ) from None


def _read_array(file: Path, archive: Any, key: str | None) -> np.ndarray:
    where = f"{file}" if key is None else f"{file}, array {key!r}"
    try:
        array = np.load(file, allow_pickle=False) if archive is None else archive[key]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
        raise CalibrationDataError(f"failed to read calibration data {where}: {error}") from None
    if not isinstance(array, np.ndarray):
        raise CalibrationDataError(
            f"calibration data {where} is not a single array; .npy files must be written by "
            "numpy.save"
        )
    return array


def _check_names(sample: SampleLocation, index: int, input_names: Sequence[str]) -> None:
    names = {name for name, _ in sample.arrays}
    known = set(input_names)
    unknown = sorted(names - known)
    missing = sorted(known - names)
    if unknown:
        raise CalibrationDataError(
            f"calibration sample {index} ({sample.file}) has inputs {unknown} that the model "
            f"does not have; model inputs: {list(input_names)}"
        )
    if missing:
        raise CalibrationDataError(
            f"calibration sample {index} ({sample.file}) is missing inputs {missing}; model "
            f"inputs: {list(input_names)}"
        )
