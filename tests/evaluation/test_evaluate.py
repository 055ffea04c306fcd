"""The benchmark runner: dataset reading, the SQLite store, resuming (including after SIGKILL), separate
runs for changed configurations, the table/JSON, and a check on the real model and real images."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image

from opticam.cli import main
from opticam.evaluation import (
    DatasetError,
    EvaluationSettings,
    ResultStore,
    config_hash,
    evaluate,
    markdown_table,
    read_dataset,
    run_config,
    summarize,
)
from opticam.methods import create_method
from opticam.metrics import drop_gain_terms
from tests.conftest import sample_rows

pytestmark = pytest.mark.usefixtures("one_thread")


SYNSETS = ["n01440764", "n01443537", "n01484850"]  # ImageNet classes 0, 1, 2


def make_synset_folders(root: Path, per_class: int = 4, size: int = 40) -> Path:
    gen = torch.Generator().manual_seed(0)
    for wnid in SYNSETS:
        (root / wnid).mkdir(parents=True)
        for i in range(per_class):
            pixels = (torch.rand(size, size, 3, generator=gen) * 255).byte().numpy()
            Image.fromarray(pixels).save(root / wnid / f"img{i}.png")
    (root / SYNSETS[0] / "notes.txt").write_text("not an image")
    return root


def test_read_synset_folders(tmp_path):
    root, samples = read_dataset(make_synset_folders(tmp_path / "data"))
    assert root == (tmp_path / "data").resolve()
    assert [s.class_index for s in samples] == [0] * 4 + [1] * 4 + [2] * 4
    assert samples[0].key == "n01440764/img0.png"
    assert len(read_dataset(tmp_path / "data", limit=5)[1]) == 5


def test_read_labels_csv(tmp_path):
    (tmp_path / "labels.csv").write_text("file,class_index,wnid\na.png,3,x\nb.png,7,y\n")
    for source in (tmp_path, tmp_path / "labels.csv"):
        root, samples = read_dataset(source)
        assert [(s.key, s.class_index) for s in samples] == [("a.png", 3), ("b.png", 7)]
        assert samples[0].path == tmp_path / "a.png"


def test_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_dataset(tmp_path / "missing")
    (tmp_path / "bad.csv").write_text("name,label\na.png,3\n")
    with pytest.raises(DatasetError, match="class_index"):
        read_dataset(tmp_path / "bad.csv")
    (tmp_path / "bad2.csv").write_text("file,class_index\na.png,three\n")
    with pytest.raises(DatasetError, match="not an integer"):
        read_dataset(tmp_path / "bad2.csv")
    (tmp_path / "folders" / "cats").mkdir(parents=True)
    with pytest.raises(DatasetError, match="synset"):
        read_dataset(tmp_path / "folders")
    with pytest.raises(DatasetError, match="limit"):
        read_dataset(tmp_path / "bad.csv", limit=0)


def test_config_hash_separates_runs(tmp_path):
    a = {"model": "m", "method_options": {"opticam": {"iterations": 100}}}
    b = {"model": "m", "method_options": {"opticam": {"iterations": 50}}}
    assert config_hash(a) == config_hash(json.loads(json.dumps(a)))
    assert config_hash(a) != config_hash(b)
    with ResultStore(tmp_path / "r.sqlite") as store:
        ra, rb = store.open_run(a), store.open_run(b)
        assert ra != rb and store.open_run(a) == ra
        assert [r[0] for r in store.runs()] == sorted([ra, rb], key=lambda r: [x[0] for x in store.runs()].index(r))


# -- the CLI end to end on a tiny deterministic model (timm's test_efficientnet, fixed weights) ----------

CLI_ARGS = [
    "--model", "test_efficientnet",
    "--methods", "fakecam,gradcam,opticam",
    "--iterations", "4",
    "--batch-size", "2",
    "--insdel-step", "6400",
    "--limit", "8",
    "--device", "cpu",
    "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet")
    torch.save(model.state_dict(), root / "tiny.pth")
    make_synset_folders(root / "data")
    return root


def cli_args(root: Path, db: Path, *extra: str) -> list[str]:
    return ["evaluate", "--images", str(root / "data"), "--db", str(db), "--checkpoint", str(root / "tiny.pth"),
            *CLI_ARGS, *extra]  # fmt: skip


def cli(root: Path, db: Path, *extra: str) -> list[str]:
    """The command line of a separate process (for the run that gets killed)."""
    return [sys.executable, "-m", "opticam", *cli_args(root, db, *extra)]


def run_here(capsys, args: list[str]) -> tuple[int, str, str]:
    """Run the CLI in this process (no interpreter start-up): ``(exit code, stdout, stderr)``."""
    capsys.readouterr()
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}


def stored(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def table_rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return sorted(
            con.execute(
                "SELECT run_id, image, method, label, class_index, predicted, p, o, ad_term, ag_term, ai_term, "
                "insertion, deletion, insertion_curve, deletion_curve, iterations FROM results"
            ).fetchall()
        )


def without_timing(summary_path: Path) -> dict:
    data = json.loads(summary_path.read_text())
    for s in data["methods"].values():
        s.pop("seconds_per_image")
    return data


def test_sigkill_and_restart_gives_the_uninterrupted_table(tiny_setup, tmp_path, capsys):
    root = tiny_setup
    total = 8 * 3
    code, clean_out, _ = run_here(capsys, cli_args(root, tmp_path / "clean.sqlite", "--json", str(tmp_path / "a.json")))
    assert code == 0
    assert stored(tmp_path / "clean.sqlite") == total

    db = tmp_path / "killed.sqlite"
    proc = subprocess.Popen(cli(root, db), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while stored(db) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = stored(db)
    assert 2 <= partial < total, f"the run should have been stopped part-way, it had {partial} of {total} rows"

    code, out, err = run_here(capsys, cli_args(root, db, "--json", str(tmp_path / "b.json")))
    assert code == 0
    assert f"stored {total - partial} new rows" in err
    assert stored(db) == total  # nothing counted twice (the primary key forbids it anyway)
    assert table_rows(db) == table_rows(tmp_path / "clean.sqlite")
    assert without_timing(tmp_path / "b.json") == without_timing(tmp_path / "a.json")
    # The printed table (timing column aside) is the same too.
    strip = lambda text: [line.rsplit("|", 2)[0] for line in text.splitlines() if line.startswith("|")]  # noqa: E731
    assert strip(out) == strip(clean_out) and len(strip(out)) == 2 + 3

    # Once more with the same configuration: everything is done, nothing is added.
    code, _, err = run_here(capsys, cli_args(root, db))
    assert code == 0 and "stored 0 new rows" in err


def test_changed_configuration_is_a_separate_run(tiny_setup, tmp_path, capsys):
    """A changed target is a new run; changed method options are a new method key in the same run (its own
    rows, its settings recorded), so the unchanged methods' rows are kept."""
    root = tiny_setup
    db = tmp_path / "r.sqlite"
    base = cli_args(root, db, "--limit", "2", "--insdel-step", "0")
    base[base.index("fakecam,gradcam,opticam")] = "fakecam,opticam"
    for extra, added in (([], 4), (["--iterations", "2"], 2), (["--target", "pred"], 4)):
        code, out, err = run_here(capsys, base + extra)
        assert code == 0
        assert f"stored {added} new rows" in err
    assert "| opticam(iterations=2) |" not in out  # the last command asked for iterations 4 again
    with sqlite3.connect(db) as con:
        runs = con.execute("SELECT run_id, config FROM runs").fetchall()
        counts = dict(con.execute("SELECT run_id, COUNT(*) FROM results GROUP BY run_id").fetchall())
        keys = con.execute("SELECT method, settings FROM methods").fetchall()
    assert len(runs) == 2 and sorted(counts.values()) == [4, 6]
    configs = [json.loads(c) for _, c in runs]
    assert {c["target"] for c in configs} == {"gt", "pred"}
    assert all("method_options" not in c for c in configs)
    iterations = {m: json.loads(t).get("iterations") for m, t in keys}
    assert iterations["opticam(iterations=2)"] == 2 and iterations["opticam(iterations=4)"] == 4
    # Unknown method: a clear error, nothing stored.
    bad = list(base)
    bad[bad.index("fakecam,opticam")] = "fakecam,nope"
    code, _, err = run_here(capsys, bad)
    assert code == 2 and "unknown method 'nope'" in err


# -- the real model -------------------------------------------------------------------------------------


def test_runner_on_the_real_model(lite0, tmp_path):
    """Two real images, Fake-CAM and Grad-CAM: the stored p, o and terms match the model directly."""
    rows = sample_rows(2)
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "class_index"])
        w.writerows([(str(p), c) for p, c in rows])
    root, samples = read_dataset(labels)
    settings = EvaluationSettings(target="gt", batch_size=2, metric_options={"insdel": {"step": 0}})
    config = run_config(lite0, dataset_root=str(root), layer=None, settings=settings)
    methods = {n: create_method(n, lite0) for n in ("fakecam", "gradcam")}
    with ResultStore(tmp_path / "r.sqlite") as store:
        run_id = store.open_run(config)
        events = []
        assert evaluate(lite0, samples, methods, store, run_id, settings, progress=False, on_chunk=events.append) == {
            "fakecam": 2,
            "gradcam": 2,
        }
        # one event per stored (chunk, method), in order, with running totals: the callback the Ray pool uses too
        assert [(e.rows, dict(e.added), e.worker, e.total) for e in events] == [
            (2, {"fakecam": 2, "gradcam": 0}, None, 2),
            (2, {"fakecam": 2, "gradcam": 2}, None, 4),
        ]
        assert evaluate(lite0, samples, methods, store, run_id, settings, progress=False, on_chunk=events.append) == {
            "fakecam": 0,
            "gradcam": 0,
        }
        assert len(events) == 2  # nothing stored the second time, so nothing told
        stored_rows = store.rows(run_id)
    x = torch.stack([lite0.preprocess(Image.open(p).convert("RGB")) for p, _ in rows])
    gt = torch.tensor([c for _, c in rows])
    with torch.no_grad():
        p = torch.softmax(lite0.model(x), 1)[torch.arange(2), gt]
        fake = torch.ones(2, 1, 224, 224)
        fake[:, :, 0, 0] = 0
        o = torch.softmax(lite0.model(x * fake), 1)[torch.arange(2), gt]
    fake_rows = [r for r in stored_rows if r["method"] == "fakecam"]
    assert [r["class_index"] for r in fake_rows] == gt.tolist()
    assert [r["p"] for r in fake_rows] == pytest.approx(p.tolist(), abs=1e-5)
    assert [r["o"] for r in fake_rows] == pytest.approx(o.tolist(), abs=1e-5)
    terms = drop_gain_terms(p, o)
    assert [r["ad_term"] for r in fake_rows] == pytest.approx(terms.drop.tolist(), abs=1e-4)
    # The Python API's explain_and_score (compare, the web page) and the runner's declared drop-gain scorer
    # give the same numbers for the same maps: two entry points, one computation underneath.
    from opticam.evaluation import explain_and_score

    for name in ("fakecam", "gradcam"):
        direct = explain_and_score(create_method(name, lite0), lite0.model, x, gt)
        mine = sorted((r for r in stored_rows if r["method"] == name), key=lambda r: r["image"])
        assert [r["p"] for r in mine] == pytest.approx(direct.p.tolist(), abs=1e-5), name
        assert [r["o"] for r in mine] == pytest.approx(direct.o.tolist(), abs=1e-5), name
        assert [r["ag_term"] for r in mine] == pytest.approx(direct.terms.gain.tolist(), abs=1e-5), name
    summary = summarize(stored_rows, ["gradcam", "fakecam"])
    assert list(summary) == ["gradcam", "fakecam"] and summary["fakecam"]["n"] == 2
    assert "insertion" not in summary["fakecam"]  # not scored: insdel_step 0
    assert summary["fakecam"]["metrics"] == ["drop-gain"]
    table = markdown_table(summary)
    assert table.splitlines()[0] == "| method | n | AD↓ | AG↑ | AI↑ | T (s/img) |"
    assert "| fakecam | 2 |" in table


def test_a_store_resumes_over_speed_only_opticam_options_and_adds_rows_for_options_that_change_maps(
    capsys, mini, tmp_path
):
    """Speed-only switches (compile, channels_last) and an option spelled at its default resume the stored
    rows: nothing is recomputed. Any option that can change a map (tol, init_mix, precision) is scored again
    under its own name in the same run, and the store records its value; the speed switches are recorded
    nowhere."""
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (40, 32), (150, 90, 40)).save(data / "0.png")
    (data / "labels.csv").write_text("file,class_index\n0.png,3\n")
    db = tmp_path / "r.sqlite"
    base = ["evaluate", "--images", str(data), "--db", str(db), "--metrics", "drop-gain", "--no-progress"]

    def new_rows(spec: str) -> int:
        capsys.readouterr()
        assert main([*base, "--methods", spec]) == 0
        return int(re.search(r"stored (\d+) new rows", capsys.readouterr().err).group(1))

    assert new_rows("opticam(iterations=2)") == 1
    for same in ("compile=true", "channels_last=true", "lr=0.1"):  # lr 0.1: the default, spelled out
        assert new_rows(f"opticam(iterations=2,{same})") == 0, same
    changed = {"tol": 0.0, "init_mix": 0.25, "precision": "bfloat16"}
    for name, value in changed.items():
        assert new_rows(f"opticam(iterations=2,{name}={value})") == 1, name
    with sqlite3.connect(db) as con:
        (runs,) = con.execute("SELECT COUNT(*) FROM runs").fetchone()
        rows = con.execute("SELECT method FROM results").fetchall()
        settings = {m: json.loads(t) for m, t in con.execute("SELECT method, settings FROM methods")}
    assert runs == 1 and len(rows) == 1 + len(changed) == len(settings)
    recorded = list(settings.values())
    for name, value in changed.items():
        assert [r.get(name) for r in recorded].count(value) == 1, name  # in exactly the row that asked for it
    assert not any({"compile", "channels_last"} & set(r) for r in recorded)


def test_metric_spec_and_old_flag_are_one_run_with_the_same_numbers(capsys, mini, tmp_path):
    """`--metrics "insdel(step=224)"` and the old `--insdel-step 224` alias: the same run id, the same rows."""
    import sqlite3

    from PIL import Image

    from opticam.cli import main

    data = tmp_path / "data"
    data.mkdir()
    for i, colour in enumerate([(150, 90, 40), (40, 90, 150)]):
        Image.new("RGB", (40, 32), colour).save(data / f"{i}.png")
    (data / "labels.csv").write_text("file,class_index\n0.png,3\n1.png,7\n")
    base = ["evaluate", "--images", str(data), "--methods", "fakecam,gradcam", "--no-progress"]
    old = [*base, "--db", str(tmp_path / "old.sqlite"), "--metrics", "drop-gain,insdel", "--insdel-step", "224"]
    new = [*base, "--db", str(tmp_path / "new.sqlite"), "--metrics", "drop-gain,insdel(step=224)"]
    stored = []
    for argv in (old, new):
        assert main(argv) == 0, capsys.readouterr().err
        with sqlite3.connect(argv[argv.index("--db") + 1]) as db:
            runs = db.execute("SELECT run_id, config FROM runs").fetchall()
            rows = db.execute(
                "SELECT image, method, insertion, deletion, ad_term FROM results ORDER BY 1, 2"
            ).fetchall()
        stored.append((runs, rows))
    assert stored[0] == stored[1]
    assert len(stored[0][1]) == 4 and all(r[2] is not None for r in stored[0][1])
    assert main([*new, "--insdel-batch", "7"]) == 0  # a speed-only option: the same run, nothing recomputed
    assert "stored 0 new rows" in capsys.readouterr().err
