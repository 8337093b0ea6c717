"""What a release carries: licence files, one version, package data, napari metadata, and CI's
check of the built wheel (``scripts/check_wheel.sh`` builds and installs it; these tests are the
fast part that needs no build)."""

from __future__ import annotations

import fnmatch

import pytest
import yaml

import sam2_med
from tests.conftest import ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None

PYPROJECT = tomllib.load((ROOT / "pyproject.toml").open("rb")) if tomllib else {}
needs_tomllib = pytest.mark.skipif(tomllib is None, reason="tomllib needs Python >= 3.11")


def test_license_is_the_full_apache_2_text_and_notice_names_what_ships() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    for heading in ("TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION", "9. Accepting"):
        assert heading in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) > 170
    notice = (ROOT / "NOTICE").read_text(encoding="utf-8")
    assert notice.startswith("sam2-med\n")
    for shipped in ("configs/models/sam2", "configs/models/medsam2.yaml", "intensity.yaml"):
        assert shipped in notice
    assert "synthetic" in notice and "Demo model" in notice


@needs_tomllib
def test_version_is_defined_once_and_the_command_line_prints_it(capsys) -> None:
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    dynamic = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "sam2_med.__version__"}
    from sam2_med.cli import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"sam2-med {sam2_med.__version__}"


@needs_tomllib
def test_package_data_globs_cover_every_config_and_py_typed() -> None:
    """A config file the globs miss would be absent from the wheel (the tests, run from the
    checkout, would not notice)."""
    globs = PYPROJECT["tool"]["setuptools"]["package-data"]["sam2_med"]
    pkg = ROOT / "sam2_med"
    data = [p.relative_to(pkg).as_posix() for p in pkg.rglob("*") if p.is_file()]
    data = [p for p in data if not p.endswith((".py", ".pyc")) and "__pycache__" not in p]
    assert "py.typed" in data and "configs/intensity.yaml" in data
    assert not [p for p in data if not any(fnmatch.fnmatchcase(p, g) for g in globs)]
    assert set(PYPROJECT["project"]["license-files"]) == {"LICENSE", "NOTICE"}
    assert PYPROJECT["project"]["license"] == "Apache-2.0"


def test_changelog_has_an_unreleased_section() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "keepachangelog.com" in text
    assert "\n## [Unreleased]\n" in text
    unreleased = text.split("\n## [Unreleased]\n", 1)[1].split("\n## [", 1)[0]
    assert "\n### Added\n" in unreleased


@needs_tomllib
def test_napari_hub_metadata() -> None:
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(ROOT / "sam2_med" / "napari_plugin" / "napari.yaml")
    assert manifest.name == PYPROJECT["project"]["name"]
    assert manifest.visibility == "public"
    assert manifest.display_name != manifest.name and "SAM 2" in manifest.display_name
    assert {"Segmentation", "IO"} <= {str(c) for c in manifest.categories}
    project = PYPROJECT["project"]
    assert "Framework :: napari" in project["classifiers"]
    assert project["readme"] == "README.md" and 20 < len(project["description"]) < 160


def test_ci_checks_the_wheel_before_the_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").rstrip().splitlines()
    assert "bash scripts/check_wheel.sh" in ci
    assert ci.index("bash scripts/check_wheel.sh") < len(ci) - 1  # the last line runs the tests
    script = (ROOT / "scripts" / "check_wheel.sh").read_text(encoding="utf-8")
    assert "twine check" in script and "torch==2.13.0" in script
    assert "npe2 validate sam2-med" in script and "napari_smoke.py" in script


def test_intensity_presets_come_from_the_package_yaml() -> None:
    from sam2_med.config import package_config_dir
    from sam2_med.intensity import CT_WINDOWS, DEFAULT_CT_WINDOW, DEFAULT_PERCENTILES

    doc = yaml.safe_load((package_config_dir() / "intensity.yaml").read_text(encoding="utf-8"))
    assert list(CT_WINDOWS) == list(doc["ct_windows"])
    assert DEFAULT_CT_WINDOW == doc["default_ct_window"]
    assert list(DEFAULT_PERCENTILES) == doc["default_percentiles"]
