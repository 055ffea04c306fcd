"""Ground-truth boxes through the pipeline: reading boxes.csv, carrying boxes through the model's
preprocessing (by hand and on a real image), the store's localization columns (old files upgraded), the
run configuration of a run without boxes unchanged, and ``opticam evaluate`` with boxes end to end."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image, ImageDraw

from opticam.cli import main
from opticam.errors import UsageError
from opticam.evaluation import DatasetError, EvaluationSettings, ResultRow, ResultStore, read_dataset, run_config
from opticam.metrics.localization import box_mask
from opticam.models.loading import Preprocessing
from tests.conftest import SAMPLES

pytestmark = pytest.mark.usefixtures("one_thread")

VAL_BOXES = SAMPLES.parent / "imagenet-val-boxes" / "cropped"


# -- reading ------------------------------------------------------------------------------------------
def write_dataset(root: Path, boxes: str | None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.csv").write_text("file,class_index\na.png,3\nb.png,7\nc.png,1\n")
    if boxes is not None:
        (root / "boxes.csv").write_text(boxes)
    return root


def test_boxes_csv_beside_labels_is_read(tmp_path):
    root = write_dataset(tmp_path / "d", "file,x0,y0,x1,y1\na.png,1,2,3.5,4\nb.png,0,0,5,5\na.png,5,6,7,8\n")
    _, samples = read_dataset(root)
    assert [s.boxes for s in samples] == [((1, 2, 3.5, 4), (5, 6, 7, 8)), ((0, 0, 5, 5),), ()]
    assert all(s.boxes is None for s in read_dataset(root, boxes=None)[1])
    _, plain = read_dataset(write_dataset(tmp_path / "plain", None))
    assert all(s.boxes is None for s in plain)
    # An explicit file wins, wherever it is.
    (tmp_path / "other.csv").write_text("file,x0,y0,x1,y1\nc.png,1,1,2,2\n")
    assert [s.boxes for s in read_dataset(root, boxes=tmp_path / "other.csv")[1]] == [(), (), ((1, 1, 2, 2),)]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("file,x0,y0,x1\na.png,1,2,3\n", "lacks the column"),
        ("file,x0,y0,x1,y1\na.png,1,two,3,4\n", r"boxes.csv:2: box coordinates must be numbers"),
        ("file,x0,y0,x1,y1\na.png,1,2,3,4\na.png,5,2,3,4\n", r"boxes.csv:3: empty or inverted"),
        ("file,x0,y0,x1,y1\na.png,1,2,inf,4\n", "finite"),
        ("file,x0,y0,x1,y1\n,1,2,3,4\n", "empty file name"),
    ],
)
def test_malformed_boxes_are_refused(tmp_path, text, match):
    with pytest.raises(DatasetError, match=match):
        read_dataset(write_dataset(tmp_path / "d", text))


def test_missing_boxes_file_is_refused(tmp_path):
    root = write_dataset(tmp_path / "d", None)
    with pytest.raises(DatasetError, match="does not exist"):
        read_dataset(root, boxes=tmp_path / "nope.csv")


# -- through the preprocessing ---------------------------------------------------------------------------
def test_transform_boxes_by_hand():
    pre = Preprocessing((224, 224), crop_pct=0.875)
    # 400 x 300 (w x h): short side 300 -> 256, long 400 -> int(256 * 400 / 300) = 341; crop 224 at
    # left round(117 / 2) = 58 (half to even), top 16. x scale 341/400, y scale 256/300.
    assert pre.resized_size((400, 300)) == (341, 256)
    sx, sy = 341 / 400, 256 / 300
    (box,) = pre.transform_boxes([(100, 50, 200, 150)], (400, 300))
    assert box == pytest.approx((100 * sx - 58, 50 * sy - 16, 200 * sx - 58, 150 * sy - 16))
    # Clipped to the crop, and a box wholly left of it is dropped.
    (clipped,) = pre.transform_boxes([(0, 0, 400, 300), (0, 0, 60, 300)], (400, 300))
    assert clipped == (0, 0, 224, 224)
    assert pre.transform_boxes([(0, 0, 60, 300)], (400, 300)) == []
    # Portrait: the crop is vertical.
    assert pre.resized_size((300, 400)) == (256, 341)
    (box,) = pre.transform_boxes([(0, 100, 300, 101)], (300, 400))
    assert box == pytest.approx((0, 100 * sx - 58, 224, 101 * sx - 58))


@pytest.mark.parametrize("size", [(224, 224), (260, 260), (200, 240)])
def test_a_painted_box_lands_where_the_transformed_box_says(size):
    """Paint a real image's ground-truth box (and two more at the left edge) in flat green,
    preprocess the painted and the untouched image: the pixels that changed are the transformed boxes'
    pixels, to the 2-pixel blur of the resize's interpolation."""
    labels = VAL_BOXES / "boxes.csv"
    if not labels.is_file():
        pytest.skip(f"ImageNet validation boxes not found at {VAL_BOXES}")
    with labels.open() as f:
        row = next(csv.DictReader(f))
    image = Image.open(VAL_BOXES / row["file"]).convert("RGB")
    # The ground-truth box, one that hangs off the crop's left edge, one wholly cut off by the crop.
    truth = tuple(int(float(row[k])) for k in ("x0", "y0", "x1", "y1"))
    boxes = [truth, (0, 10, 120, image.height - 10), (0, 10, 30, 60)]
    painted = image.copy()
    draw = ImageDraw.Draw(painted)
    for x0, y0, x1, y1 in boxes:
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=(0, 255, 0))  # PIL's rectangle includes its end
    pre = Preprocessing(size, crop_pct=0.875, interpolation="bicubic")
    changed = (pre(painted) - pre(image)).abs().sum(0) > 0.15
    moved = pre.transform_boxes(boxes, image.size)
    height, width = size
    expected = box_mask(moved, height, width)
    inner = expected & ~_dilate(~expected, 2)
    assert changed[inner].all(), "a pixel well inside a transformed box did not change"
    assert not (changed & ~_dilate(expected, 2)).any(), "a pixel well outside the boxes changed"
    assert len(moved) == 2 and moved[1][0] == 0  # the cut-off box is dropped, the hanging one clipped
    assert changed.float().mean() > 0.1


def _dilate(mask: torch.Tensor, r: int) -> torch.Tensor:
    m = mask.float()[None, None]
    return torch.nn.functional.max_pool2d(m, 2 * r + 1, stride=1, padding=r)[0, 0] > 0


# -- the store and the run configuration --------------------------------------------------------------------
# The results table of schema 1 (opticam before localization), as those files have it.
SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (run_id TEXT PRIMARY KEY, config TEXT NOT NULL, created TEXT NOT NULL);
CREATE TABLE results (
    run_id TEXT NOT NULL REFERENCES runs(run_id), image TEXT NOT NULL, method TEXT NOT NULL,
    label INTEGER NOT NULL, class_index INTEGER NOT NULL, predicted INTEGER NOT NULL, p REAL NOT NULL,
    o REAL NOT NULL, ad_term REAL NOT NULL, ag_term REAL NOT NULL, ai_term INTEGER NOT NULL, insertion REAL,
    deletion REAL, insertion_curve TEXT, deletion_curve TEXT, seconds REAL NOT NULL, iterations INTEGER,
    extra TEXT, device TEXT NOT NULL, created TEXT NOT NULL, PRIMARY KEY (run_id, image, method)
);
"""


def test_old_store_files_are_upgraded_keeping_rows_and_runs(tmp_path):
    """A schema-1 file: read-only, its missing columns read None; opened for writing, it is rebuilt to schema
    3 (metric columns nullable, the methods table filled from the run's recorded options), rows and run ids
    kept."""
    path = tmp_path / "old.sqlite"
    config = {"schema": 1, "layer": "bn2", "method_options": {"opticam": {"iterations": 7, "lr": 0.1}}}
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA_1)
        db.execute("INSERT INTO runs VALUES ('r', ?, 'now')", (json.dumps(config),))
        for method in ("gradcam", "opticam", "opticam-fast"):
            db.execute(
                "INSERT INTO results VALUES ('r', 'a.png', ?, 1, 1, 1, .5, .4, .2, 0, 0, NULL, NULL, NULL, NULL, "
                "1.0, NULL, NULL, 'cpu', 'now')",
                (method,),
            )
    with ResultStore(path, readonly=True) as store:  # read-only: no upgrade, the new keys read None
        rows = store.rows("r")
        assert rows[0]["n_boxes"] is None and rows[0]["box_ious"] is None and rows[0]["road"] is None
        assert store.method_settings("r")["opticam"]["iterations"] == 7  # from the old configuration
    with ResultStore(path) as store:
        rows = store.rows("r")
        assert [r["method"] for r in rows] == ["gradcam", "opticam", "opticam-fast"]
        assert rows[0]["pointing_game"] is None and rows[0]["p"] == 0.5 and rows[0]["ad_term"] == 0.2
        assert [r[0] for r in store.runs()] == ["r"]
        version = store.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        assert version == "3"
        settings = store.method_settings("r")
        assert settings["opticam"]["iterations"] == 7 and settings["opticam"]["layer"] == "bn2"
        assert settings["opticam-fast"]["iterations"] == 32 and settings["opticam-fast"]["objective"] == "log-prob"
        # The metric columns are nullable now: a run that scores only ROAD stores rows without p or o.
        store.add("r", [ResultRow("b.png", "gradcam", 1, 1, 1, 1.0, None, None, "cpu", values={"road": 0.1})])
        assert store.rows("r", images=["b.png"])[0]["p"] is None
    with ResultStore(path) as store:  # opening again changes nothing
        assert len(store.rows("r")) == 4


class _Loaded:
    name = "m"
    target_layer = "bn2"
    input_size = (224, 224)
    weights = None

    def resolved_layer(self) -> str:
        return self.target_layer


def test_the_run_configuration_records_the_metrics():
    """The run's identity: model, layer, target, data set, boxes file and each selected metric's recorded
    settings; localization only where there are boxes (unless asked for, which is then an error)."""
    settings = EvaluationSettings(metric_options={"insdel": {"step": 0}}).for_dataset(False)
    config = run_config(_Loaded(), dataset_root="/d", layer=None, settings=settings)  # type: ignore[arg-type]
    assert config == {
        "schema": 2,
        "model": "m",
        "checkpoint": None,
        "random_weights": False,
        "layer": "bn2",
        "input_size": [224, 224],
        "target": "gt",
        "dataset": "/d",
        "boxes": None,
        "metrics": {"drop-gain": {}},
    }
    boxed = EvaluationSettings(metric_options={"insdel": {"step": 0}}).for_dataset(True)
    with_boxes = run_config(_Loaded(), dataset_root="/d", layer=None, settings=boxed, boxes="/d/boxes.csv")  # type: ignore[arg-type]
    assert with_boxes["boxes"] == "/d/boxes.csv"
    assert with_boxes["metrics"]["localization"]["pointing_tolerance"] == 15.0
    assert {k: v for k, v in with_boxes.items() if k not in ("boxes", "metrics")} == {
        k: v for k, v in config.items() if k not in ("boxes", "metrics")
    }
    with pytest.raises(UsageError, match="needs ground-truth boxes"):
        EvaluationSettings(metrics=("localization",)).for_dataset(False)


# -- end to end on the tiny model ------------------------------------------------------------------------
def test_evaluate_with_boxes_end_to_end(tmp_path, capsys):
    torch.manual_seed(0)
    torch.save(timm.create_model("test_efficientnet").state_dict(), tmp_path / "tiny.pth")
    data = tmp_path / "data"
    data.mkdir()
    gen = torch.Generator().manual_seed(0)
    rows, boxes = ["file,class_index"], ["file,x0,y0,x1,y1"]
    for i in range(4):
        pixels = (torch.rand(60, 80, 3, generator=gen) * 255).byte().numpy()
        Image.fromarray(pixels).save(data / f"img{i}.png")
        rows.append(f"img{i}.png,{i}")
    boxes += ["img0.png,10,10,50,40", "img0.png,60,5,80,20", "img1.png,0,0,80,60", "img2.png,0,0,3,3"]
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    (data / "boxes.csv").write_text("\n".join(boxes) + "\n")
    args = ["evaluate", "--images", str(data), "--db", str(tmp_path / "r.sqlite"), "--checkpoint",
            str(tmp_path / "tiny.pth"), "--model", "test_efficientnet", "--methods", "fakecam,gradcam",
            "--insdel-step", "0", "--device", "cpu", "--no-progress", "--json", str(tmp_path / "s.json")]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| n box | PG↑ | EPG↑ | MaxBoxAcc↑ | Top1Loc↑ |" in out
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["config"]["boxes"] == "data/boxes.csv"  # relative to the result file
    assert "localization" in summary["config"]["metrics"]
    for s in summary["methods"].values():
        # img2's box is in the corner the crop cuts off (or too small to survive), img3 has none.
        assert s["n_boxes"] in (2, 3)
        for key in ("pointing_game", "energy_pointing_game", "max_box_acc", "top1_loc"):
            assert 0 <= s[key] <= 100
    with sqlite3.connect(tmp_path / "r.sqlite") as db:
        got = dict(db.execute("SELECT image, n_boxes FROM results WHERE method = 'gradcam'").fetchall())
    assert got["img0.png"] == 2 and got["img1.png"] == 1 and got["img3.png"] == 0
    # --no-boxes: a separate run, without the localization key, and a table without the columns.
    assert main([*args[:-2], "--no-boxes"]) == 0
    assert "PG↑" not in capsys.readouterr().out
    # --boxes pointing nowhere is a one-line error.
    assert main([*args, "--boxes", str(tmp_path / "none.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_summary_of_localization_rows_by_hand():
    from opticam.evaluation import markdown_table, summarize

    base = {"method": "m", "ad_term": 0.1, "ag_term": 0.0, "ai_term": 0, "insertion": None, "deletion": None,
            "seconds": 1.0, "label": 1}  # fmt: skip
    ious_a = [0.8] * 50 + [0.4] * 50  # image a: IoU 0.8 at low thresholds, 0.4 above 0.5
    ious_b = [0.2] * 50 + [0.6] * 50  # image b: the other way round
    rows = [
        {**base, "predicted": 1, "n_boxes": 2, "pointing_game": 1, "energy_pointing_game": 0.5,
         "box_ious": json.dumps(ious_a)},
        {**base, "predicted": 2, "n_boxes": 1, "pointing_game": 0, "energy_pointing_game": 0.3,
         "box_ious": json.dumps(ious_b)},
        {**base, "predicted": 1, "n_boxes": 0, "pointing_game": None, "energy_pointing_game": None, "box_ious": None},
    ]  # fmt: skip
    s = summarize(rows)["m"]
    assert s["n"] == 3 and s["n_boxes"] == 2
    assert s["pointing_game"] == 50 and s["energy_pointing_game"] == pytest.approx(40)
    # IoU 0.3: t < 0.5 -> 1/2, t >= 0.5 -> 2/2; IoU 0.5: 1/2 both (first wins: t = 0); IoU 0.7: 1/2 at t = 0.
    assert s["box_acc"] == pytest.approx({"0.3": 100, "0.5": 50, "0.7": 50})
    assert s["max_box_acc"] == pytest.approx(200 / 3)
    assert s["top1_loc"] == 50  # image a: right class, IoU 0.8 at t = 0
    table = markdown_table({"m": s}, timing=False)
    assert (
        table.splitlines()[2] == "| m | 3 | 10.0 | 0.0 | 0.0 | 2 | 50.0 | 40.0 | 66.7 | 50.0 |"
    )  # no I / D: not scored


# -- edited inputs never bring back an old number; stores move with their data --------------------------------
def _boxed_dataset(tmp_path: Path) -> tuple[Path, list[str]]:
    tmp_path.mkdir(exist_ok=True)
    torch.manual_seed(0)
    torch.save(timm.create_model("test_efficientnet").state_dict(), tmp_path / "tiny.pth")
    data = tmp_path / "data"
    data.mkdir()
    gen = torch.Generator().manual_seed(1)
    for i in range(2):
        pixels = (torch.rand(64, 64, 3, generator=gen) * 255).byte().numpy()
        Image.fromarray(pixels).save(data / f"img{i}.png")
    (data / "labels.csv").write_text("file,class_index\nimg0.png,0\nimg1.png,1\n")
    (data / "boxes.csv").write_text("file,x0,y0,x1,y1\nimg0.png,0,0,64,64\nimg1.png,0,0,64,64\n")
    args = ["evaluate", "--images", str(data), "--db", str(tmp_path / "r.sqlite"), "--checkpoint",
            str(tmp_path / "tiny.pth"), "--model", "test_efficientnet", "--methods", "fakecam,gradcam",
            "--insdel-step", "0", "--device", "cpu", "--no-progress"]  # fmt: skip
    return data, args


def _pointing(db: Path) -> dict[tuple[str, str], tuple[int, float]]:
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT image, method, pointing_game, energy_pointing_game FROM results").fetchall()
    return {(i, m): (pg, epg) for i, m, pg, epg in rows}


def test_an_edited_box_label_or_image_is_computed_again(tmp_path, capsys):
    data, args = _boxed_dataset(tmp_path)
    assert main(args) == 0
    first = _pointing(tmp_path / "r.sqlite")
    assert all(pg == 1 for pg, _ in first.values())  # a box over the whole image: every maximum is in it
    # Shrink img0's box to its centre: the same --db, the same run, new rows for img0 only.
    (data / "boxes.csv").write_text("file,x0,y0,x1,y1\nimg0.png,24,24,40,40\nimg1.png,0,0,64,64\n")
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "stored 2 new rows" in err and "older version of their image, label or boxes" in err
    second = _pointing(tmp_path / "r.sqlite")
    assert second[("img1.png", "gradcam")] == first[("img1.png", "gradcam")]
    for method in ("fakecam", "gradcam"):  # less of each map's energy falls in the smaller box
        assert second[("img0.png", method)][1] < first[("img0.png", method)][1] == pytest.approx(1.0)
    # A changed label and a replaced image are computed again too; nothing else is.
    (data / "labels.csv").write_text("file,class_index\nimg0.png,0\nimg1.png,2\n")
    assert main(args) == 0 and "stored 2 new rows" in capsys.readouterr().err
    Image.fromarray((torch.rand(64, 64, 3) * 255).byte().numpy()).save(data / "img0.png")
    assert main(args) == 0 and "stored 2 new rows" in capsys.readouterr().err
    assert main(args) == 0 and "stored 0 new rows" in capsys.readouterr().err
    with sqlite3.connect(tmp_path / "r.sqlite") as con:
        assert con.execute("SELECT COUNT(DISTINCT run_id), COUNT(*) FROM results").fetchone() == (1, 4)
        assert con.execute("SELECT label FROM results WHERE image = 'img1.png'").fetchall() == [(2,), (2,)]


def test_a_store_moved_with_its_data_still_draws_its_grid(tmp_path, capsys):
    """The run records the data set relative to the result file; ``report --images-root`` rebinds it."""
    import shutil

    from opticam.evaluation.report import ReportOptions, build_report

    _, args = _boxed_dataset(tmp_path / "a")
    assert main(args) == 0
    config = json.loads(sqlite3.connect(tmp_path / "a" / "r.sqlite").execute("SELECT config FROM runs").fetchone()[0])
    assert config["dataset"] == "data" and config["checkpoint"] == "tiny.pth" and config["boxes"] == "data/boxes.csv"
    shutil.move(tmp_path / "a", tmp_path / "b")  # store, data and checkpoint move together
    page = build_report(tmp_path / "b" / "r.sqlite", options=ReportOptions(grid_images=1, progress=False))
    assert "id='grid'" in page and "recorded relative to the result file" in page
    shutil.move(tmp_path / "b" / "data", tmp_path / "elsewhere")
    page = build_report(tmp_path / "b" / "r.sqlite", options=ReportOptions(grid_images=1, progress=False))
    assert "grid-error" in page
    options = ReportOptions(grid_images=1, progress=False, images_root=tmp_path / "elsewhere")
    rebound = build_report(tmp_path / "b" / "r.sqlite", options=options)
    assert "id='grid'" in rebound and "rebound with --images-root" in rebound


def test_each_file_is_read_once_per_chunk_and_its_fingerprint_is_of_the_bytes_decoded(tmp_path, capsys, monkeypatch):
    """An image replaced after the run was planned, just before its chunk reads it: the row's numbers and its
    fingerprint both come from that one read (the new pixels), so the next run finds nothing stale, and the
    stored numbers equal a fresh run's on the new file. Each file is read once per chunk, not once per
    method (two here)."""
    from opticam.evaluation import dataset

    data, args = _boxed_dataset(tmp_path)
    original = dataset.read_image_file
    reads: list[str] = []

    def replace_then_read(path):
        path = Path(path)
        if path.name == "img0.png" and not reads:
            Image.fromarray((torch.rand(64, 64, 3) * 255).byte().numpy()).save(path)
        reads.append(path.name)
        return original(path)

    monkeypatch.setattr(dataset, "read_image_file", replace_then_read)
    assert main(args) == 0
    assert sorted(reads) == ["img0.png", "img1.png"]
    monkeypatch.setattr(dataset, "read_image_file", original)
    capsys.readouterr()
    assert main(args) == 0
    assert "stored 0 new rows" in capsys.readouterr().err  # the fingerprint names the pixels it was computed from
    fresh = [*args]
    fresh[fresh.index("--db") + 1] = str(tmp_path / "fresh.sqlite")
    assert main(fresh) == 0

    def numbers(db: Path) -> list[tuple]:
        with sqlite3.connect(db) as con:
            return con.execute("SELECT image, method, p, o, input_hash FROM results ORDER BY image, method").fetchall()

    assert numbers(tmp_path / "r.sqlite") == numbers(tmp_path / "fresh.sqlite")
