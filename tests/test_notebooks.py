"""The notebooks: committed without outputs, and each one runs top to bottom on the synthetic default."""

import json

import pytest
from conftest import REPO

from market_regimes import notebook

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
EXPECTED = ["01_regime_pipeline", "02_asset_groups", "03_pre_move_patterns", "04_feature_regime_baseline"]


def test_committed_notebooks_have_no_outputs():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED
    for path in NOTEBOOKS:
        book = json.loads(path.read_text())
        code = [c for c in book["cells"] if c["cell_type"] == "code"]
        assert code, path.name
        for i, cell in enumerate(code):
            assert cell.get("outputs") == [], f"{path.name}: code cell {i} has outputs; clear them before committing"
            assert cell.get("execution_count") is None, f"{path.name}: code cell {i} has an execution count"


def test_notebook_helpers_choose_data_and_outputs(monkeypatch, tmp_path):
    monkeypatch.setenv(notebook.ARTIFACTS_ENV, str(tmp_path / "art"))
    monkeypatch.setenv(notebook.REAL_DATA_ENV, str(tmp_path / "real"))
    monkeypatch.setenv(notebook.DATA_ENV, "real")
    assert not notebook.use_real_data()  # asked for, but the folder is missing: synthetic
    (tmp_path / "real").mkdir()
    assert notebook.use_real_data()
    monkeypatch.delenv(notebook.DATA_ENV)
    assert not notebook.use_real_data()
    with pytest.raises(FileNotFoundError, match="SOURCES.md"):
        notebook.real_file("nope.parquet")
    monkeypatch.chdir(tmp_path)  # composes from any working directory
    cfg = notebook.compose_config("feature_regimes", ["data.n_bars=900"], run_name="x")
    assert cfg.paths.artifacts_dir == str(tmp_path / "art") and cfg.paths.run_dir == str(tmp_path / "art" / "runs" / "x")
    assert cfg.data.n_bars == 900 and cfg.model.encoder == "features"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("ipykernel")
    repo_artifacts = REPO / "artifacts" / "notebooks"
    before = sorted(repo_artifacts.rglob("*")) if repo_artifacts.exists() else None
    art = tmp_path / "artifacts"
    monkeypatch.setenv(notebook.ARTIFACTS_ENV, str(art))
    monkeypatch.delenv(notebook.DATA_ENV, raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # The kernel is a new process: one OpenMP thread, as two spin against each other on a busy 2-core
    # runner (the tiny training of notebook 01 measured 57 s with two threads, 0.9 s with one).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    book = nbformat.read(path, as_version=4)
    work = tmp_path / "work"
    work.mkdir()
    nbclient.NotebookClient(book, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(work)}}).execute()
    nbformat.write(book, work / path.name)  # the executed copy stays in the temp dir
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    images = [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the notebook shows its figures"
    assert any((art / "runs").iterdir()), "outputs go under MARKET_REGIMES_ARTIFACTS"
    assert (sorted(repo_artifacts.rglob("*")) if repo_artifacts.exists() else None) == before, "wrote into the repo"
    assert json.loads(path.read_text())["cells"][1].get("outputs") == []  # the committed file is untouched
