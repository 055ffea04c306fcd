"""A store written by an older opticam resumes with no rerun (issue 27: "existing keys stay byte-identical").

``tests/fixtures/legacy-store/store.sqlite`` was written at commit 4452c2c, before method and metric options
were declared as data (its README says how). Here its two command lines run again through today's code, with
the old flags and with the new ``name(k=v)`` spellings of the same settings: every run id, method key and
recorded method settings must come out the same, so nothing is computed again and no row changes.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from opticam.cli import main

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "legacy-store"
METHODS = (
    "opticam(iterations=2),opticam-fast,opticam-tenth,fakecam,gradcam,gradcampp,xgradcam,layercam,hirescam,"
    "eigencam,gradcamelementwise,kpcacam(kernel=rbf),finercam(alpha=0.5),scorecam,ablationcam,"
    "gradcam(layer=conv_stem),opticam(objective=diff,normalization=max,iterations=3)"
)
OLD_FLAGS = [
    "--methods", METHODS, "--batch-size", "2", "--metrics", "drop-gain,insdel,localization,road",
    "--insdel-step", "64", "--cam-batch-size", "16",
]  # fmt: skip
NEW_SPELLING = [
    "--methods", METHODS.replace("scorecam,ablationcam", "scorecam(batch_size=16),ablationcam(batch_size=16)"),
    "--batch-size", "2", "--metrics", "drop-gain,insdel(step=64),localization,road(seed=0)",
]  # fmt: skip
SECOND_RUN = [
    "--methods", "opticam(iterations=2),fakecam", "--target", "pred", "--no-boxes", "--insdel-step", "0",
    "--iterations", "4",
]  # fmt: skip


@pytest.fixture
def legacy(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "legacy")
    return tmp_path / "legacy"


def snapshot(db: Path) -> tuple[list, list, list]:
    with sqlite3.connect(db) as conn:
        runs = conn.execute("SELECT run_id, config FROM runs ORDER BY run_id").fetchall()
        methods = conn.execute("SELECT run_id, method, settings FROM methods ORDER BY 1, 2").fetchall()
        rows = conn.execute("SELECT run_id, image, method, ad_term, insertion, road FROM results ORDER BY 1, 2, 3")
        return runs, methods, rows.fetchall()


@pytest.mark.parametrize("first", [OLD_FLAGS, NEW_SPELLING], ids=["old flags", "declared options"])
def test_a_store_from_before_declared_options_resumes_with_nothing_computed(capsys, mini, legacy, first):
    db = legacy / "store.sqlite"
    before = snapshot(db)
    for extra in (first, SECOND_RUN):
        argv = ["evaluate", "--images", str(legacy / "data"), "--db", str(db), "--no-progress", *extra]
        assert main(argv) == 0, capsys.readouterr().err
        err = capsys.readouterr().err
        assert "stored 0 new rows" in err, err
    assert snapshot(db) == before


def test_a_run_that_recorded_a_found_layer_as_null_resumes(tmp_path):
    """Before found layers were recorded by name, a run on a model without a usual layer stored ``"layer": null``;
    the same run today names the layer found, and must open the old run rather than start a new one."""
    from opticam.evaluation.evaluate_job import resumable_config
    from opticam.evaluation.store import ResultStore, config_hash

    new = {"schema": 2, "model": "torchvision:mobilenet_v2", "layer": "features", "target": "gt"}
    old = {**new, "layer": None}
    with ResultStore(tmp_path / "old.sqlite") as store:
        store.open_run(old)
        assert resumable_config(store, new, found=True) == old
        assert resumable_config(store, new, found=False) == new  # a layer the user named is never rewritten
        store.open_run(new)
        assert resumable_config(store, new, found=True) == new  # once the named run exists, it is the run
    with ResultStore(tmp_path / "fresh.sqlite") as store:
        assert resumable_config(store, new, found=True) == new
        assert config_hash(new) != config_hash(old)
