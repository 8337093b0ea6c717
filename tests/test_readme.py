"""The README's promises: two set-up commands, CI running the second, and a Python example that
runs as printed (with a random-weight checkpoint in place of the downloaded model)."""

from __future__ import annotations

import json
import re
import shlex

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_two_setup_commands_and_ci_runs_the_test_one() -> None:
    setup = _section("Set up and run (fresh machine, Python >= 3.10)").split("\n### ")[0]
    install, tests = (b.strip() for b in _blocks(setup, "bash"))
    assert "\n" not in install and "\n" not in tests
    assert tests == "bash scripts/test.sh"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ci.rstrip().splitlines()[-1] == tests
    # every step of the install command exists: the scripts it runs and the files it names
    steps = [shlex.split(step) for step in install.split("&&")]
    assert ["pip", "install", "torch==2.13.0"] in steps  # the CPU build, before the project
    assert ["python", "sample_data/make_phantom.py"] in steps
    (segment,) = [s for s in steps if s[:2] == ["sam2-med", "segment"]]
    from sam2_med.phantom import PHANTOM_OUTPUTS

    generated = {f"sample_data/generated/{name}" for name in PHANTOM_OUTPUTS.values()}
    assert segment[2] in generated
    assert segment[segment.index("--prompts") + 1] in generated
    # the main job runs offline: the model ships inside the package; it prints Dice against
    # the phantom's own labels
    from sam2_med.models import get_spec

    assert get_spec(segment[segment.index("--model") + 1]).local_file is not None
    assert segment[segment.index("--compare") + 1] == "sample_data/generated/phantom_labels.nii.gz"


@pytest.fixture
def readme_example() -> str:
    (code,) = _blocks(_section("Python API"), "python")
    return code


def test_python_example_runs_as_printed(readme_example, tmp_path, monkeypatch) -> None:
    """Run the README's example in a folder holding a freshly generated phantom; only the model
    argument is swapped for a random tiny checkpoint in Meta's format (no weights here)."""
    from sam2_med.models import TINY_ARCH, random_model, save_meta_checkpoint, tiny_config
    from sam2_med.phantom import write_phantom

    write_phantom(tmp_path / "sample_data" / "generated")
    save_meta_checkpoint(random_model(tiny_config(), seed=0), tmp_path / "tiny.pt")
    (tmp_path / "arch.json").write_text(json.dumps(TINY_ARCH))
    model_line = 'model="sam2.1_hiera_tiny",'
    assert readme_example.count(model_line) == 1
    code = readme_example.replace(model_line, 'checkpoint="tiny.pt", arch="arch.json",')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SAM2_MED_OFFLINE", "1")
    monkeypatch.setenv("SAM2_MED_CACHE", str(tmp_path / "cache"))
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result.labels.names == {1: "liver", 2: "spleen"}
    image = nib.load(tmp_path / "sample_data" / "generated" / "phantom_ct.nii.gz")
    saved = nib.load(tmp_path / "phantom_api.nii.gz")
    assert saved.shape == image.shape == (112, 96, 40)
    np.testing.assert_allclose(saved.affine, image.affine, atol=1e-5)
    assert len(result.scores[1]) == 40 and np.isfinite(result.scores[1]).all()


def _departures(text: str) -> dict[str, str]:
    """The numbered list after "departures from Meta": ``{bold title: its text}``."""
    start = text.index("departures from Meta")
    items = re.findall(
        r"^\s*\d+\. \*\*(.+?)\*\*(.*?)(?=^\s*\d+\. \*\*|^\s*$)",
        text[start:] + "\n\n",
        flags=re.S | re.M,
    )
    out: dict[str, str] = {}
    for title, body in items:
        if title in out:
            break  # past the list
        out[title] = " ".join(body.split())
    return out


def test_readme_and_session_docstring_list_the_same_departures_from_meta() -> None:
    """One short list, the same in both places, each item with its reason; the parity tests
    emulate each departure on Meta's side (tests/test_parity_session.py)."""
    import inspect

    from sam2_med.session import Session

    readme = _departures(_section("How sam2-med runs SAM 2"))
    doc = _departures(inspect.getdoc(Session) or "")
    assert len(readme) >= 5, readme
    assert list(readme) == list(doc)
    for title in readme:
        for where, text in (("README", readme[title]), ("Session docstring", doc[title])):
            # a departure says what Meta does and why ours differs
            assert "Meta" in text and len(text.split()) >= 20, (where, title, text)
    expected = {
        "Nearest-anchor stretches.",
        "A fresh memory bank per run.",
        "Exact mask prompts.",
        "An anchor is refined the way it was made.",
        "Frames stay in float",
    }
    assert set(readme) == expected
