"""The model registry as data: shipped YAML files, a user's own, and schema errors naming file+key."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sam2_med.errors import ConfigError, Sam2MedError
from sam2_med.models import (
    TINY_ARCH,
    ChecksumError,
    WeightsNotFoundError,
    arch_to_config,
    cached_weights,
    get_spec,
    list_models,
    load_model,
    random_model,
    registry,
    save_meta_checkpoint,
    tiny_config,
    verify_cache,
)

SHIPPED = [
    *(f"sam2.1_hiera_{s}" for s in ("tiny", "small", "base_plus", "large")),
    *(f"sam2_hiera_{s}" for s in ("tiny", "small", "base_plus", "large")),
    "medsam2",
    "sam2med_demo_phantom",  # last: the napari picker opens on the first (SAM 2.1-tiny)
]


@pytest.fixture(scope="module")
def tiny_pt(tmp_path_factory) -> Path:
    return save_meta_checkpoint(
        random_model(tiny_config(), seed=3), tmp_path_factory.mktemp("w") / "tiny.pt"
    )


def _entry(tiny_pt: Path, **overrides) -> dict:
    """A valid user model entry for the random tiny checkpoint, as a YAML document."""
    arch = {k: v for k, v in TINY_ARCH.items() if k != "image_size"}
    doc = {
        "family": "sam2.1",
        "size": "tiny",
        "description": "random tiny test model",
        "image_size": TINY_ARCH["image_size"],
        "arch": arch,
        "weights": {
            "file": str(tiny_pt),
            "sha256": hashlib.sha256(tiny_pt.read_bytes()).hexdigest(),
        },
        "licence": "test-only",
        "licence_text": "random weights made by the test suite",
    }
    for key, value in overrides.items():
        *parents, last = key.split(".")
        d = doc
        for p in parents:
            d = d[p]
        if value is _DELETE:
            del d[last]
        else:
            d[last] = value
    return doc


_DELETE = object()


@pytest.fixture
def user_dir(tmp_path, monkeypatch) -> Path:
    """An empty user config folder; the registry is read again after the test."""
    folder = tmp_path / "config"
    (folder / "models").mkdir(parents=True)
    monkeypatch.setenv("SAM2_MED_CONFIG_DIR", str(folder))
    yield folder / "models"
    monkeypatch.undo()
    registry.reload_models()


def _write(folder: Path, name: str, doc: dict | str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


# ------------------------------------------------------------------------------ shipped files
def test_shipped_models_come_from_package_yaml_files() -> None:
    assert list_models() == SHIPPED
    folder = registry.package_config_dir() / "models"
    assert sorted(p.name for p in folder.glob("*.yaml")) == sorted(f"{n}.yaml" for n in SHIPPED)
    for name in SHIPPED:
        spec = get_spec(name)
        assert spec.config_file == folder / f"{name}.yaml"
        assert registry.read_model_config(spec.config_file) == spec  # full check incl. build
        # MedSAM2's reported results come from its published CT script (issue 16)
        declared = ("medsam2", "sitk") if name == "medsam2" else ("sam2", "radiological")
        shipped = registry.package_config_dir().parent / "weights" / f"{name}.pt"
        local = shipped if name == "sam2med_demo_phantom" else None  # weights in the package
        assert (spec.protocol, spec.slice_layout, spec.local_file) == (*declared, local)
        config = arch_to_config(spec.arch_dict())
        assert config.image_size == spec.image_size


def test_shipped_values_that_tell_the_models_apart() -> None:
    large20, large21 = get_spec("sam2_hiera_large"), get_spec("sam2.1_hiera_large")
    assert large20.arch["stages"] == large21.arch["stages"] == [2, 6, 36, 4]
    assert large20.arch["window_spec"] == [8, 4, 16, 8]
    assert not large20.arch["no_obj_embed_spatial"] and large21.arch["no_obj_embed_spatial"]
    assert get_spec("sam2.1_hiera_base_plus").arch["window_pos_embed_bkg_spatial_size"] == [14, 14]
    assert get_spec("sam2.1_hiera_tiny").sources[1].url == (
        "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt"
    )
    assert get_spec("sam2.1_hiera_tiny").sources[1].hub_filename is None
    assert get_spec("sam2_hiera_small").sources[0].hub_repo == "facebook/sam2-hiera-small"
    assert get_spec("sam2.1_hiera_large").sha256 == (
        "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318"
    )
    assert get_spec("medsam2").arch["image_size"] == 512 and len(get_spec("medsam2").notes) == 2


# ------------------------------------------------------------------------------ a user's model
def test_user_yaml_registers_a_model_in_process(user_dir, tiny_pt, tmp_path, capsys) -> None:
    _write(user_dir, "my_tiny", _entry(tiny_pt, protocol="medsam2", slice_layout="sitk"))
    assert registry.reload_models() == [*SHIPPED, "my_tiny"]  # default order: after shipped
    spec = get_spec("my_tiny")
    assert (spec.protocol, spec.slice_layout) == ("medsam2", "sitk")
    assert spec.local_file == tiny_pt and spec.filename == "tiny.pt" and spec.sources == ()
    assert spec.where_to_get() == str(tiny_pt)

    cache = tmp_path / "cache"  # empty, offline: the file named by the YAML is used in place
    lm = load_model("my_tiny", cache_dir=cache, offline=True)
    assert (lm.name, lm.image_size, lm.licence) == ("my_tiny", 128, spec.licence_text)
    assert str(tiny_pt) in lm.source and not cache.exists()
    # sessions use the declared protocol and layout unless another protocol is asked for
    assert (lm.protocol, lm.slice_layout) == ("medsam2", "sitk")
    asked = load_model("my_tiny", cache_dir=cache, offline=True, protocol="sam2")
    assert (asked.protocol, asked.slice_layout) == ("sam2", "sitk")
    (entry,) = [e for e in cached_weights(cache) if e.name == "my_tiny"]
    assert (entry.path, entry.status) == (tiny_pt, "local file")
    (entry,) = [e for e in verify_cache(cache) if e.name == "my_tiny"]
    assert entry.status == "verified"

    from sam2_med.cli import main

    assert main(["weights", "list", "--cache-dir", str(cache)]) == 0
    listing = capsys.readouterr().out
    assert f"your model files (YAML): {user_dir}" in listing
    assert "my_tiny: random tiny test model" in listing and "licence: test-only" in listing
    assert f"weights: local file {tiny_pt}" in listing


def test_user_yaml_order_and_relative_file(user_dir, tiny_pt) -> None:
    (user_dir / "w").mkdir()
    (user_dir / "w" / "t.pt").write_bytes(tiny_pt.read_bytes())
    _write(user_dir, "first", _entry(tiny_pt, order=0, **{"weights.file": "w/t.pt"}))
    assert registry.reload_models()[0] == "first"
    assert get_spec("first").local_file == (user_dir / "w" / "t.pt").resolve()


def test_local_weights_are_checked_against_the_yaml_digest(user_dir, tiny_pt, tmp_path) -> None:
    _write(user_dir, "bad_sha", _entry(tiny_pt, **{"weights.sha256": "0" * 64}))
    missing = _entry(tiny_pt, **{"weights.file": str(tmp_path / "gone.pt")})
    _write(user_dir, "missing", missing)
    registry.reload_models()
    with pytest.raises(ChecksumError):
        load_model("bad_sha", offline=True)
    with pytest.raises(WeightsNotFoundError, match=r"gone\.pt"):
        load_model("missing", offline=True)


def test_package_file_weights_resolve_inside_the_package(
    user_dir, tiny_pt, tmp_path, monkeypatch
) -> None:
    """``package_file`` is how weights shipped in the wheel are named (a demo model)."""
    fake_pkg = tmp_path / "pkg"
    (fake_pkg / "weights").mkdir(parents=True)
    (fake_pkg / "weights" / "demo.pt").write_bytes(tiny_pt.read_bytes())
    monkeypatch.setattr(registry, "package_dir", lambda: fake_pkg)
    doc = _entry(tiny_pt)
    doc["weights"] = {"package_file": "weights/demo.pt", "sha256": doc["weights"]["sha256"]}
    _write(user_dir, "demo", doc)
    registry.reload_models()
    assert get_spec("demo").local_file == fake_pkg / "weights" / "demo.pt"
    assert load_model("demo", offline=True, cache_dir=tmp_path / "c").image_size == 128


@pytest.mark.slow  # ~20 s, mostly importing torch in the new process
def test_a_fresh_process_registers_the_yaml_and_segments(tiny_pt, tmp_path) -> None:
    """No code touched: a YAML in $SAM2_MED_CONFIG_DIR/models, then ``sam2-med segment --model``
    in a new process; the mask's sidecar names the model and its licence."""
    from sam2_med.phantom import write_phantom

    phantom = write_phantom(tmp_path / "phantom")
    models = tmp_path / "config" / "models"
    models.mkdir(parents=True)
    _write(models, "my_finetune", _entry(tiny_pt))
    exe = Path(sys.executable).with_name("sam2-med")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sam2_med"]
    env = {
        **os.environ,
        "SAM2_MED_CONFIG_DIR": str(tmp_path / "config"),
        "SAM2_MED_OFFLINE": "1",
        "SAM2_MED_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    out = tmp_path / "out" / "mask.nii.gz"
    args = ["segment", phantom["image"], "--point", "35,42,21", "--out", out]
    proc = subprocess.run(
        [*cmd, *map(str, args), "--model", "my_finetune"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    run = json.loads(out.with_name("mask.json").read_text())["extra"]["sam2_med_run"]
    assert run["model"] == "my_finetune"
    assert run["model_licence"] == "random weights made by the test suite"


# ------------------------------------------------------------------------------ schema errors
_BAD = [
    ("slice_layot", "sitk", "slice_layot", "unknown key"),
    ("slice_layout", "coronal", "slice_layout", "'radiological', 'sitk'"),
    ("protocol", "sam3", "protocol", "'sam2', 'medsam2'"),
    ("licence", _DELETE, "licence", "required key missing"),
    ("image_size", 100, "image_size", "multiple of 32"),
    ("image_size", "128", "image_size", "an integer"),
    ("name", "someone_else", "name", "file name"),
    ("order", 1.5, "order", "an integer"),
    ("notes", "one note", "notes", "list of non-empty strings"),
    ("arch.embed_dim", "16", "arch.embed_dim", "positive integer"),
    ("arch.stages", 2, "arch.stages", "list of integers"),
    ("arch.no_obj_embed_spatial", "yes", "arch.no_obj_embed_spatial", "true or false"),
    ("arch.image_size", 128, "arch.image_size", "top-level image_size"),
    ("arch.embedding_dim", 16, "arch.embedding_dim", "unknown architecture key"),
    ("arch.d_model", 100, "arch", "multiple of mem_dim"),
    ("weights.sha256", "abc", "weights.sha256", "64 hexadecimal"),
    ("weights.file", _DELETE, "weights", "exactly one of 'sources'"),
    ("weights.sources", [{"url": "https://x.org/a.pt"}], "weights", "exactly one of"),
    ("weights.package_file", "../../etc/x.pt", "weights", "exactly one of"),
    ("weights.filename", "a/b.pt", "weights.filename", "without folders"),
    ("weights.extra", 1, "weights.extra", "unknown key"),
]


@pytest.mark.parametrize(("key", "value", "named", "says"), _BAD, ids=[b[0] for b in _BAD])
def test_malformed_yaml_is_refused_naming_file_and_key(
    user_dir, tiny_pt, key, value, named, says
) -> None:
    good = _write(user_dir, "good", _entry(tiny_pt))
    before = registry.reload_models()
    good.unlink()
    path = _write(user_dir, "entry", _entry(tiny_pt, **{key: value}))
    with pytest.raises(ConfigError) as info:
        registry.reload_models()
    err = info.value
    assert isinstance(err, Sam2MedError) and err.path == str(path) and err.key == named
    assert str(err).startswith(f"{path}: key {named!r}: ") and says in str(err)
    assert list_models() == before  # a failed reload leaves the registry as it was


@pytest.mark.parametrize(
    ("sources", "named", "says"),
    [
        ([{"url": "http://example.org/a.pt"}], "weights.sources[0].url", "https://"),
        ([{"hub": "not a repo"}], "weights.sources[0].hub", "owner/name"),
        ([{"hub": "a/b", "url": "https://x.org/a.pt"}], "weights.sources[0]", "exactly one"),
        ([{"url": "https://x.org/a.pt", "hub_file": "a.pt"}], "weights.sources[0].hub_file", ""),
        ("https://x.org/a.pt", "weights.sources", "list of mappings"),
    ],
)
def test_bad_sources_name_the_source(user_dir, tiny_pt, sources, named, says) -> None:
    doc = _entry(tiny_pt)
    doc["weights"] = {"filename": "a.pt", "sha256": None, "sources": sources}
    path = _write(user_dir, "src", doc)
    with pytest.raises(ConfigError, match="^" + re.escape(f"{path}: key '{named}': ")) as info:
        registry.reload_models()
    assert info.value.key == named and says in str(info.value)


def test_package_file_needs_a_digest_and_must_stay_in_the_package(user_dir, tiny_pt) -> None:
    doc = _entry(tiny_pt)
    doc["weights"] = {"package_file": "weights/demo.pt"}
    _write(user_dir, "p", doc)
    with pytest.raises(ConfigError, match=r"key .weights\.sha256.: .*need their sha256"):
        registry.reload_models()
    doc["weights"] = {"package_file": "../outside.pt", "sha256": "a" * 64}
    _write(user_dir, "p", doc)
    with pytest.raises(ConfigError, match=r"key .weights\.package_file.: .*inside the sam2_med"):
        registry.reload_models()


def test_not_yaml_and_not_a_mapping_name_the_file(user_dir) -> None:
    path = _write(user_dir, "broken", "name: x\nweights: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"^{path}: not valid YAML at line \d+, column \d+"):
        registry.reload_models()
    path.unlink()
    path = _write(user_dir, "listed", "- a\n- b\n")
    with pytest.raises(ConfigError, match=rf"^{path}: the file must hold a mapping"):
        registry.reload_models()


def test_a_name_registered_twice_names_both_files(user_dir, tiny_pt) -> None:
    path = _write(user_dir, "sam2.1_hiera_tiny", _entry(tiny_pt))
    shipped = get_spec("sam2.1_hiera_tiny").config_file
    with pytest.raises(
        ConfigError, match=f"^{path}: key 'name': .*already registered by {shipped}"
    ):
        registry.reload_models()


def test_command_line_reports_a_bad_user_yaml_in_one_line(tiny_pt, tmp_path) -> None:
    models = tmp_path / "config" / "models"
    models.mkdir(parents=True)
    path = _write(models, "typo", _entry(tiny_pt, protocol="MedSAM2"))
    env = {**os.environ, "SAM2_MED_CONFIG_DIR": str(tmp_path / "config")}
    proc = subprocess.run(
        [sys.executable, "-m", "sam2_med", "weights", "list"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"sam2-med: error: {path}: key 'protocol': must be one of")


def test_unknown_model_says_where_models_are_added(user_dir) -> None:
    with pytest.raises(Sam2MedError, match=f"add one with a YAML file in {user_dir}"):
        get_spec("sam3")


def test_the_readme_example_is_a_valid_model_file(tmp_path) -> None:
    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```yaml\n(# ~/.config/sam2-med/models/.*?)```", readme, flags=re.S)
    name = re.match(r"# ~/.config/sam2-med/models/(\S+)\.yaml", block).group(1)
    path = _write(tmp_path, name, block)
    spec = registry.read_model_config(path)
    assert spec.name == name == "liver_finetune"
    assert spec.local_file == tmp_path / "liver_finetune.pt" and spec.sha256 is None
    assert spec.arch_dict() == get_spec("sam2.1_hiera_tiny").arch_dict()
