"""A self-contained HTML report of one evaluation run (``opticam report RUN.sqlite --out report.html``).

Reads the result store that ``opticam evaluate`` writes, through :class:`~opticam.evaluation.store.ResultStore`
(read-only), and writes ONE HTML file, every picture inlined as a base64 PNG, so it can be
mailed or archived alone. Sections:

1. the run: model, layer, target mode, dataset, each method's settings, each metric's settings;
2. the table: per method n and the run's metrics' columns (from their declarations), mean steps of the
   iterative methods, seconds per image; then the methods' diagnostics (passes per map, objectives);
3. insertion and deletion curves averaged per method over the run (from the stored curves);
4. a comparison grid for a few images: the store keeps numbers, not maps, so the maps are **recomputed**
   with the run's own configuration (model, weights, layer, method options, explained class); the titles'
   AD / AG are the stored per-image values;
5. the same images' insertion and deletion curves.

When the grid cannot be recomputed (dataset moved, weights unavailable offline), the report says why and
keeps the rest.

The markup is the Jinja2 template ``templates/report.html.j2`` (package data), rendered with autoescape:
this module only builds its context, plain text, numbers and data URIs (:func:`render_report`), so a method
name or a setting can never inject markup, and the tables are laid out from lists without the template
knowing any metric.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import torch

from ..metrics.registry import METRICS
from ..viz.curves import curves_figure, curves_rows
from ..viz.encode import data_uri, figure_png
from ..viz.grid import GridRow, comparison_grid
from .runner import run_metrics
from .store import ResultStore, StoreError
from .summary import present_metrics, summarize, table_rows


class ReportError(StoreError):
    """The result file is missing, not an opticam store, or has no such run / no results."""


@dataclass
class Run:
    """One run of a result file: its id, configuration and stored rows (dicts keyed by column)."""

    run_id: str
    config: dict[str, Any]
    created: str
    rows: list[dict[str, Any]]
    method_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    store: Path | None = None
    images_root: Path | None = None
    """``report --images-root``: where the run's images are now (instead of the recorded data set path)."""

    def dataset(self) -> tuple[Path, str]:
        """``(folder of the run's images, how it was found)``: ``--images-root`` when given, else the recorded
        path, relative to the result file's folder (runs since schema 2 of the configuration) or absolute."""
        if self.images_root is not None:
            return self.images_root, "rebound with --images-root"
        recorded = Path(self.config.get("dataset", "."))
        if recorded.is_absolute():
            return recorded, "the absolute path the run recorded"
        return (self.base / recorded).resolve(), "recorded relative to the result file"

    @property
    def base(self) -> Path:
        """The folder the run's recorded relative paths (data set, checkpoint, factory file) start from: the
        result file's (the working folder for a run not read from a file)."""
        return self.store.resolve().parent if self.store is not None else Path.cwd()

    @property
    def metrics(self) -> list[str]:
        """The metrics the run scored (:func:`~opticam.evaluation.runner.run_metrics`), and any other that its
        rows hold values of (a hand-made or older store), in registry order."""
        recorded = set(run_metrics(self.config)) | set(present_metrics(self.rows))
        return [name for name in METRICS if name in recorded]

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(r["method"] for r in self.rows))

    @property
    def images(self) -> list[str]:
        return list(dict.fromkeys(r["image"] for r in self.rows))

    def row(self, image: str, method: str) -> dict[str, Any] | None:
        return next((r for r in self.rows if r["image"] == image and r["method"] == method), None)


def _open(path: str | Path) -> ResultStore:
    try:
        return ResultStore(path, readonly=True)
    except StoreError as exc:
        raise ReportError(str(exc)) from None


def list_runs(path: str | Path) -> list[tuple[str, dict[str, Any], str, int]]:
    """``(run_id, config, created, rows)`` for every run in the file, oldest first."""
    with _open(path) as store:
        counts = store.row_counts()
        return [(r, c, t, counts.get(r, 0)) for r, c, t in store.runs()]


def load_run(path: str | Path, run_id: str | None = None) -> Run:
    """A run's configuration and rows; ``run_id`` may be a unique prefix, ``None`` = the latest run with rows."""
    runs = list_runs(path)
    if not runs:
        raise ReportError(f"{path}: the file has no runs yet")
    if run_id is None:
        with_rows = [r for r in runs if r[3] > 0]
        if not with_rows:
            raise ReportError(f"{path}: no run has stored results yet")
        chosen = with_rows[-1]
    else:
        matches = [r for r in runs if r[0].startswith(run_id)]
        if len(matches) != 1:
            known = ", ".join(f"{r[0]} ({r[3]} rows)" for r in runs)
            what = "no run" if not matches else "several runs"
            raise ReportError(f"{path}: {what} matching {run_id!r}; runs in the file: {known}")
        chosen = matches[0]
    with _open(path) as store:
        rows = store.rows(chosen[0])
        settings = store.method_settings(chosen[0])
    if not rows:
        raise ReportError(f"{path}: run {chosen[0]} has no stored results")
    return Run(
        run_id=chosen[0], config=chosen[1], created=chosen[2], rows=rows, method_settings=settings, store=Path(path)
    )


# -- the numbers ----------------------------------------------------------------------------------------
def summary_table(run: Run) -> dict[str, dict[str, Any]]:
    """Per method: n, the run's metrics' numbers, seconds per image, diagnostics (the evaluation's summary)."""
    return summarize(run.rows, run.methods, run.metrics)


def curves_of(rows: Sequence[dict[str, Any]], methods: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """``{method: {"insertion": [N, T], "deletion": [N, T]}}`` from the stored JSON curves (rows without
    curves are left out)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        kinds = {}
        for kind in ("insertion", "deletion"):
            values = [json.loads(r[f"{kind}_curve"]) for r in mine if r.get(f"{kind}_curve")]
            if values:
                kinds[kind] = np.asarray(values, dtype=np.float64)
        if kinds:
            out[method] = kinds
    return out


def curve_fractions(config: dict[str, Any]) -> np.ndarray | None:
    """The x values of the run's curves (the ``insdel`` metric's recorded fractions), or ``None``."""
    insdel = run_metrics(config).get("insdel") or {}
    return np.asarray(insdel["fractions"], dtype=np.float64) if insdel.get("fractions") else None


# -- the grid (recomputed maps) --------------------------------------------------------------------------
def recompute_grid(
    run: Run, images: Sequence[str], methods: Sequence[str], loaded: Any = None, progress: bool = True
) -> list[GridRow]:
    """Grid rows for ``images``: each method's map recomputed with the run's configuration.

    ``loaded`` (a :class:`~opticam.models.LoadedModel`) skips loading the model again; it must be the
    run's model. Scores in the titles are the stored ones.
    """
    from ..models.factory import resolve_recorded_name
    from ..models.loading import load_model
    from .dataset import image_for_key

    config = run.config
    root, _ = run.dataset()
    if loaded is None:
        checkpoint = config.get("checkpoint")
        if checkpoint and not Path(checkpoint).is_absolute():
            checkpoint = str((run.base / checkpoint).resolve())
        model = resolve_recorded_name(config["model"], run.base)  # a factory file is recorded relative to the store
        loaded = load_model(model, pretrained=not config.get("random_weights", False), checkpoint=checkpoint)
    elif loaded.name != config["model"]:
        raise ReportError(f"the run used {config['model']}, not {loaded.name}")
    xs, classes = [], []
    for image in images:
        row = next(r for r in run.rows if r["image"] == image)
        xs.append(loaded.preprocess(image_for_key(root, image)))
        classes.append(int(row["class_index"]))
    x = torch.stack(xs)
    targets = torch.tensor(classes)
    maps: dict[str, torch.Tensor] = {}
    bar = _bar(len(methods), progress)
    for method in methods:
        if bar is not None:
            bar.set_postfix(method=method)
        cam = method_from_settings(run, method, loaded)
        with torch.inference_mode(False):
            maps[method] = cam.explain(x, targets).maps.detach()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    rows = []
    for i, image in enumerate(images):
        c = classes[i]
        stored = {m: run.row(image, m) for m in methods}
        rows.append(
            GridRow(
                image=x[i],
                label=f"{Path(image).name}\n{loaded.class_name(c)} ({c})",
                maps={m: maps[m][i, 0] for m in methods},
                scores={m: _cell_scores(r) for m, r in stored.items() if r},
            )
        )
    return rows


def _cell_scores(row: dict[str, Any]) -> dict[str, float]:
    """A grid cell's title numbers from a stored row: AD / AG (when scored) and the method's steps."""
    scores = {"AD": 100 * row["ad_term"], "AG": 100 * row["ag_term"]} if row.get("ad_term") is not None else {}
    if row.get("iterations") is not None:
        scores["steps"] = row["iterations"]
    return scores


def method_from_settings(run: Run, method: str, loaded: Any):
    """The method behind ``method``'s rows, rebuilt from what the run recorded of it (its ``methods`` settings;
    for a method without recorded settings, its key as a spec)."""
    from ..methods.registry import create_method, method_entry

    settings = dict(run.method_settings.get(method) or {})
    if not settings:
        return create_method(method, loaded, layer=run.config.get("layer"))
    name = settings.pop("method", method)
    layer = settings.pop("layer", None) or run.config.get("layer")
    declared = {o.name for o in method_entry(name).options}  # what the run records beyond them (a head's digest)
    return create_method(name, loaded, layer=layer, **{k: v for k, v in settings.items() if k in declared})


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="report: recomputing maps for the grid", unit="method", file=sys.stderr)


# -- the page -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReportOptions:
    """What :func:`build_report` shows of the run (``opticam report``'s flags); the defaults show every method
    and a grid of the run's first three images. Frozen: the same options can render several runs."""

    grid_images: int = 3
    """How many of the run's images get a grid row (its first ones); 0 (or less) = no grid."""
    images: Sequence[str] | None = None
    """The grid's images by their stored names, instead of the first ``grid_images``."""
    methods: Sequence[str] | None = None
    """The methods shown, in this order (default: all in the run, in stored order)."""
    images_root: str | Path | None = None
    """Where the run's images are now, when not where the run recorded them (the grid reads them)."""
    progress: bool = True
    """A progress bar on stderr while the grid's maps are recomputed."""
    trust_code: bool = False
    """Let the grid import the run's model when it is code (``FILE.py:factory``, ``package.module:factory``):
    a result file someone sent you then runs their file. Without it such a run's report has no grid, and asking
    for one is a :class:`ReportError`."""

    def __post_init__(self) -> None:  # lists given (as the command line makes them) are kept as tuples
        for name in ("images", "methods"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))


@dataclass
class _Shown:
    """The part of the run the page shows: the whole run (its settings, its images for the grid), the methods
    shown and their rows, the grid's images, and the x values of the run's curves."""

    run: Run
    methods: list[str]
    rows: list[dict[str, Any]]
    images: list[str]
    fractions: np.ndarray | None

    @property
    def shown_run(self) -> Run:
        """The run restricted to the shown methods' rows, for the table and the diagnostics."""
        return replace(self.run, rows=self.rows)


def build_report(
    path: str | Path,
    run_id: str | None = None,
    *,
    options: ReportOptions = ReportOptions(),
    loaded: Any = None,
    grid: Callable[..., list[GridRow]] = recompute_grid,
) -> str:
    """The report's HTML text for one run of the result file ``path``.

    Args:
        run_id: the run, or a unique prefix of its id (default: the latest run with results).
        options: what to show (:class:`ReportOptions`).
        loaded: the run's model, already loaded (saves loading it again for the grid).
        grid: computes the grid's rows (default :func:`recompute_grid`; the tests pass a stand-in).
    """
    shown = _select(path, run_id, options)
    if shown.images and loaded is None and not options.trust_code:
        _refuse_code(shown.run)
    sections = [_mean_curves_section(shown), _diagnostics_section(summary_table(shown.shown_run))]
    if shown.images:
        sections.append(_grid_section(shown, grid, loaded, options.progress))
        sections += _image_curves_sections(shown)
    context = {
        "title": f"opticam report: run {shown.run.run_id}",
        "settings": _run_settings(shown.run, path),
        "results": _results_table(shown.shown_run),
        "sections": sections,
    }
    return render_report(context)


def _refuse_code(run: Run) -> None:
    """A grid would import the run's model; refuse when that model is code (a factory), before anything runs."""
    from ..models.factory import is_factory_name

    if is_factory_name(run.config.get("model")):
        raise ReportError(
            f"run {run.run_id}'s model is code ({run.config['model']}): drawing its grid would run that file; pass "
            "--trust-code if you trust it, or --grid-images 0 for the report without a grid"
        )


def _select(path: str | Path, run_id: str | None, options: ReportOptions) -> _Shown:
    """Load the run and pick what ``options`` asks for; a method or an image the run does not have is a
    :class:`ReportError` here, before any figure is drawn or any map recomputed."""
    run = load_run(path, run_id)
    if options.images_root is not None:
        run = replace(run, images_root=Path(options.images_root))
    methods = list(options.methods) if options.methods else run.methods
    unknown = [m for m in methods if m not in run.methods]
    if unknown:
        raise ReportError(f"run {run.run_id} has no results for {', '.join(unknown)}; it has {', '.join(run.methods)}")
    picked = list(options.images) if options.images else run.images[: max(options.grid_images, 0)]
    missing = [i for i in picked if i not in run.images]
    if missing:
        raise ReportError(f"run {run.run_id} has no image {missing[0]!r}")
    rows = [r for r in run.rows if r["method"] in methods]
    return _Shown(run, methods, rows, picked, curve_fractions(run.config))


def _mean_curves_section(shown: _Shown) -> dict[str, Any]:
    """Insertion and deletion averaged per method over the run, or a line saying the run did not score them."""
    curves = curves_of(shown.rows, shown.methods)
    if not curves:
        return _text_section("Insertion and deletion", "This run did not score them (metric insdel).")
    n = len(shown.run.images)
    title = f"mean over {n} image{'s' if n != 1 else ''} (band: 25-75 %)"
    fig = curves_figure(curves, title=title, x=shown.fractions)
    return _figure_section("Insertion and deletion, averaged per method", fig, "curves-mean")


def _grid_section(shown: _Shown, grid: Callable[..., list[GridRow]], loaded: Any, progress: bool) -> dict[str, Any]:
    """The comparison grid of the picked images. Its maps are recomputed (the store keeps numbers only), which
    can fail (data moved, weights offline): then the section says why, since the rest of the report is still
    worth having."""
    try:
        rows = grid(shown.run, shown.images, shown.methods, loaded=loaded, progress=progress)
    except Exception as exc:
        message = f"The maps could not be recomputed: {type(exc).__name__}: {exc}"
        return _text_section("Comparison grid", message, css="note", ident="grid-error")
    note = "Maps recomputed with the run's configuration; AD / AG in the titles are the stored per-image values."
    return _figure_section("Comparison grid", comparison_grid(rows, shown.methods), "grid", note)


def _image_curves_sections(shown: _Shown) -> list[dict[str, Any]]:
    """The grid images' own insertion and deletion curves (from the store, so drawn even when the grid's maps
    could not be recomputed); none when no picked image has stored curves."""
    per_image = [
        (Path(i).name, curves_of([r for r in shown.rows if r["image"] == i], shown.methods)) for i in shown.images
    ]
    per_image = [(title, curves) for title, curves in per_image if curves]
    if not per_image:
        return []
    return [_figure_section("The same images' curves", curves_rows(per_image, x=shown.fractions), "curves-images")]


def render_report(context: dict[str, Any]) -> str:
    """The page from its context (keys ``title``, ``settings``, ``results``, ``sections``; the template's
    header comment says their shapes), through ``templates/report.html.j2`` with every value escaped."""
    return _templates().get_template("report.html.j2").render(context)


@functools.cache
def _templates() -> jinja2.Environment:
    """The report's templates, shipped as package data; autoescape on, and a missing context key is an
    error rather than an empty cell."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("opticam.evaluation", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def write_report(
    path: str | Path,
    out: str | Path,
    run_id: str | None = None,
    *,
    options: ReportOptions = ReportOptions(),
    **kwargs: Any,
) -> Path:
    """Write :func:`build_report` to ``out`` (folders created); returns the path. ``kwargs``: its ``loaded``
    and ``grid``."""
    text = build_report(path, run_id, options=options, **kwargs)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


def _run_settings(run: Run, path: str | Path) -> list[tuple[str, str]]:
    """The run settings table: ``(what, value)`` rows, as text."""
    c = run.config
    metrics = run_metrics(c)
    insdel = metrics.get("insdel")
    if insdel:
        blur = insdel.get("insertion_start", {})
        steps = len(insdel.get("fractions", [])) - 1
        insdel_text = (
            f"{steps} steps of {insdel.get('step')} pixels; deletion to {insdel.get('deletion_baseline', 'zeros')}, "
            f"insertion from a Gaussian blur (kernel {blur.get('kernel')}, sigma {blur.get('sigma')})"
        )
    else:
        insdel_text = "not computed"
    items = [
        ("result file", str(path)),
        ("run", f"{run.run_id} (created {run.created})"),
        ("model", c.get("model", "?") + (" (random weights)" if c.get("random_weights") else "")),
        ("checkpoint", c.get("checkpoint") or "-"),
        ("layer", c.get("layer", "?")),
        ("explained class", {"gt": "ground truth", "pred": "predicted"}.get(c.get("target"), str(c.get("target")))),
        ("dataset", f"{c.get('dataset', '?')} ({len(run.images)} images)"),
        ("images read from", "{} ({})".format(*run.dataset())),
        ("metrics", ", ".join(metrics)),
        ("insertion / deletion", insdel_text),
    ]
    items += [
        (f"method {name}", json.dumps({k: v for k, v in settings.items() if k != "method"}, sort_keys=True))
        for name, settings in run.method_settings.items()
        if name in run.methods
    ]
    return [(k, str(v)) for k, v in items]


def _results_table(run: Run) -> dict[str, Any]:
    """The results table as text: ``{"columns": [header], "rows": [[cell]], "note": text}``, one row per
    method (its name first, then numbers), laid out by :func:`~opticam.evaluation.summary.table_rows` from
    the metric declarations, like the Markdown table; the template lays out any such table."""
    summary = summary_table(run)
    columns, rows = table_rows(summary)
    notes = [METRICS[m].note for m in run.metrics if m in METRICS and METRICS[m].note]
    notes.append("steps: mean optimizer steps per image of the iterative methods; T: seconds per image.")
    return {"columns": columns, "rows": rows, "note": " ".join(notes)}


DIAGNOSTIC_NAMES = {
    "iterations": "steps",
    "passes_per_map": "model passes per map",
    "objective_initial": "objective before",
    "objective_final": "objective after",
}


def _diagnostics_section(summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What each method measured while computing its maps (means over the run's images), the same fields for
    every method, one paragraph each."""
    paragraphs = []
    for method, s in summary.items():
        values = s.get("diagnostics") or {}
        text = ", ".join(f"{DIAGNOSTIC_NAMES.get(k, k)} {v:.4g}" for k, v in values.items()) or "nothing recorded"
        paragraphs.append({"text": f"{method}: {text}", "css": None, "id": None})
    return {"title": "What the methods measured (means per image)", "paragraphs": paragraphs, "figure": None}


def _figure_section(title: str, fig: Any, ident: str, note: str | None = None) -> dict[str, Any]:
    """A section showing the matplotlib figure ``fig`` inline (a PNG data URI) as the image ``#ident``."""
    paragraphs = [{"text": note, "css": "note", "id": None}] if note else []
    return {
        "title": title,
        "paragraphs": paragraphs,
        "figure": {"id": ident, "uri": data_uri(figure_png(fig), "image/png")},
    }


def _text_section(title: str, text: str, *, css: str | None = None, ident: str | None = None) -> dict[str, Any]:
    """A section with one paragraph and no figure (a part of the report that could not be drawn, and why)."""
    return {"title": title, "paragraphs": [{"text": text, "css": css, "id": ident}], "figure": None}
