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
