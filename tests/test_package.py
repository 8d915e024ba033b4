import importlib.metadata
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

import instructedit

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["torch", "diffusers", "transformers", "open_clip", "triton", "datasets", "pyarrow"]


def test_version_matches_distribution_metadata():
    assert instructedit.__version__ == importlib.metadata.version("instructedit")


def test_public_names_resolve():
    for name in instructedit.__all__:
        assert getattr(instructedit, name) is not None


def test_import_loads_no_heavy_dependency():
    code = (
        "import sys, instructedit, instructedit.cli;"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""


@pytest.mark.slow
def test_wheel_carries_typing_marker_and_assets_and_imports_in_fresh_venv(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = (tmp_path / "dist").glob("instructedit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "instructedit/py.typed" in names
    assert "instructedit/assets/example.png" in names
    assert "instructedit/testing/__init__.py" in names
    assert not any(name.startswith("tests/") for name in names)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
    )
    # Not editable: the module comes from the fresh venv's site-packages, and importing it
    # needs none of the heavy dependencies (this venv has none of them).
    out = subprocess.run(
        [
            str(python),
            "-c",
            "import instructedit; print(instructedit.__version__, instructedit.__file__)",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.split()
    assert out[0] == instructedit.__version__
    assert str(env_dir) in out[1]


def test_design_card_api_is_importable_from_the_top_level():
    from instructedit import (
        ClipDirectionalFilter,
        DualGuidance,
        EditPipeline,
        PromptToPrompt,
        TrainConfig,
        Trainer,
        load_default,
    )
    from instructedit.clip import ClipDirectionalFilter as FromClip
    from instructedit.p2p import PromptToPrompt as FromP2P
    from instructedit.training import Trainer as FromTraining

    assert (ClipDirectionalFilter, PromptToPrompt, Trainer) == (FromClip, FromP2P, FromTraining)
    assert all(callable(item) for item in (DualGuidance, EditPipeline, TrainConfig, load_default))


def _library_modules():
    package = ROOT / "src" / "instructedit"
    return [
        path for path in package.rglob("*.py") if "testing" not in path.relative_to(package).parts
    ]


def test_library_never_imports_the_test_kit():
    import ast

    offenders = []
    for path in _library_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name.split(".")[:2] == ["instructedit", "testing"] for name in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_modules_stay_readable_in_one_sitting():
    longest = max(_library_modules(), key=lambda path: len(path.read_text().splitlines()))
    assert len(longest.read_text().splitlines()) <= 900, longest


def test_package_speaks_in_the_present_tense():
    import re

    ordinals = (
        "first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|"
        "thirteenth|fourteenth|fifteenth|sixteenth|seventeenth|eighteenth|nineteenth|twentieth"
    )
    history = re.compile(rf"\b({ordinals}) run\b|\b20\d\d-\d\d-\d\d\b", re.IGNORECASE)
    package = ROOT / "src" / "instructedit"
    texts = [*package.rglob("*.py"), *package.rglob("*.md")]
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in texts
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if history.search(line)
    ]
    assert found == []
