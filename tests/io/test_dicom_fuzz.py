"""Damaged DICOM bytes never escape as a raw exception: a Volume or a VolumeReadError, nothing else.

Real files from ../shared/data (plain, JPEG 2000, RLE, enhanced multi-frame, gzip-wrapped) are
copied into a temporary folder with some bytes overwritten, a run of bytes deleted, or the end cut
off, then read through :func:`sam2_med.io.load_volume`. Mutations are biased towards the first
few kilobytes, where the header lives. Derandomised so CI sees the same 100 examples every run.
"""

from __future__ import annotations

import gzip
import tempfile
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sam2_med.io import VolumeReadError, load_volume
from sam2_med.volume import Volume
from tests.conftest import SHARED_DATA, shared_path

MV = "dicom/multivendor_dicom2nifti"

#: (folder, how many of its files to copy) -- small series so each example reads fast.
SOURCES = [
    (f"{MV}/generic/compressed_j2k/001", 4),
    (f"{MV}/generic/compressed_rle/001", 4),
    (f"{MV}/generic/anatomical/002_non_isotropic", 4),
    (f"{MV}/philips_enhanced/anatomical/001", 1),
    (f"{MV}/hitachi/anatomical/001_implicit", 4),
    ("dicom/mr_t1_sagittal_siemens_gz/series", 3),
]


@cache
def _source_bytes(index: int) -> tuple[tuple[str, bytes], ...]:
    folder, n = SOURCES[index]
    files = sorted(p for p in (SHARED_DATA / folder).iterdir() if p.is_file())[:n]
    return tuple((p.name, p.read_bytes()) for p in files)


@pytest.fixture(autouse=True)
def _need_shared_data() -> None:
    for folder, _ in SOURCES:
        shared_path(folder)  # skips, with the reason, when the folder is absent


_header_offset = st.integers(0, 4096)
_any_fraction = st.floats(0.0, 1.0, allow_nan=False)
mutation = st.one_of(
    st.tuples(
        st.just("set"), st.one_of(_header_offset, _any_fraction), st.binary(min_size=1, max_size=8)
    ),
    st.tuples(st.just("delete"), st.one_of(_header_offset, _any_fraction), st.integers(1, 64)),
    st.tuples(st.just("truncate"), st.one_of(_header_offset, _any_fraction), st.just(0)),
)


def _mutate(data: bytes, how: tuple) -> bytes:
    kind, where, arg = how
    at = int(where * (len(data) - 1)) if isinstance(where, float) else min(where, len(data) - 1)
    if kind == "set":
        return data[:at] + arg + data[at + len(arg) :]
    if kind == "delete":
        return data[:at] + data[at + arg :]
    return data[:at]


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's notes on the damaged values
@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    source=st.integers(0, len(SOURCES) - 1),
    victim=st.integers(0, 3),
    mutations=st.lists(mutation, min_size=1, max_size=3),
    inside_gzip=st.booleans(),
    as_folder=st.booleans(),
)
def test_damaged_files_give_a_volume_or_a_read_error(
    source: int, victim: int, mutations: list, inside_gzip: bool, as_folder: bool
) -> None:
    files = _source_bytes(source)
    victim %= len(files)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "series"
        folder.mkdir()
        for i, (name, data) in enumerate(files):
            if i == victim:
                if inside_gzip and name.endswith(".gz"):
                    inner = gzip.decompress(data)
                    for m in mutations:
                        inner = _mutate(inner, m)
                    data = gzip.compress(inner, mtime=0)
                else:
                    for m in mutations:
                        data = _mutate(data, m)
            (folder / name).write_bytes(data)
        target = folder if as_folder else folder / files[victim][0]
        try:
            result = load_volume(target)
        except VolumeReadError as exc:
            assert str(exc).startswith(str(Path(tmp)))
            # The reader's last-resort wrapper must never be what caught it: every damage
            # is expected to be recognised where it happens.
            assert "unexpected" not in str(exc), str(exc)
        else:
            assert isinstance(result, Volume)
