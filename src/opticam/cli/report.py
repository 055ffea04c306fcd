"""``opticam report``: one self-contained HTML file from a run's SQLite results (table, curves, a grid)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UsageError
from ..evaluation.report import ReportOptions, list_runs, write_report
from .paths import check_output_file
from .progress import add_progress_argument, show_progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="self-contained HTML report of an `opticam evaluate` run")
    p.add_argument("db", metavar="RUN.sqlite", help="the result file `opticam evaluate --db` wrote")
    p.add_argument("--out", default="report.html", help="output HTML file (default report.html)")
    p.add_argument("--run", help="run id or unique prefix (default: the latest run with results)")
    p.add_argument("--list", action="store_true", help="list the runs in the file and exit")
    p.add_argument("--grid-images", type=int, default=3, help="images in the comparison grid (default 3; 0 = none)")
    # --images elsewhere names a data set folder; here it was the grid's image names: --show-images says so.
    p.add_argument(
        "--show-images",
        "--images",
        dest="show_images",
        metavar="NAMES",
        help="comma-separated image names (as stored) for the grid instead of the first --grid-images "
        "(--images: the old name; default: none, the first --grid-images)",
    )
    p.add_argument("--methods", help="comma-separated methods to show (default: all in the run)")
    p.add_argument(
        "--trust-code",
        action="store_true",
        help="let the grid import the run's model when it is a FILE.py:factory (it runs that file; default: refuse)",
    )
    p.add_argument(
        "--images-root",
        metavar="DIR",
        help="where the run's images are now, for the grid (default: the data set path the run recorded, "
        "relative to the result file)",
    )
    add_progress_argument(p)
    p.set_defaults(func=report_command)


def report_command(args: argparse.Namespace) -> int:
    if args.list:
        for run_id, config, created, rows in list_runs(args.db):
            print(f"{run_id}  {created}  {rows:6d} rows  {config.get('model')}  target {config.get('target')}")
        return 0
    if args.grid_images < 0:
        raise UsageError("--grid-images must be >= 0")
    if args.images_root is not None and not Path(args.images_root).is_dir():
        raise UsageError(f"--images-root {args.images_root}: no such folder")
    check_output_file(args.out, "--out", (".html", ".htm"))
    options = ReportOptions(
        grid_images=args.grid_images,
        images=[i for i in args.show_images.split(",") if i] if args.show_images else None,
        methods=[m for m in args.methods.split(",") if m] if args.methods else None,
        images_root=args.images_root,
        progress=show_progress(args),
        trust_code=args.trust_code,
    )
    out = write_report(args.db, args.out, args.run, options=options)
    print(f"wrote {out}")
    return 0
