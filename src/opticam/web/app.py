"""The ``opticam serve`` web application (FastAPI): upload an image, run Opti-CAM, see overlays and top-5.

Endpoints:

* ``GET /``: the page (``static/index.html``, plain HTML + JavaScript, no build step).
* ``GET /api/options``: models, methods, bundled samples, limits and defaults for the page's form.
* ``POST /api/jobs?model=&methods=&iterations=[&sample=][&rank=]``: the request body is the image file's raw bytes
  (or empty with ``sample=``), or a ``multipart/form-data`` form whose first file field is the image (``curl -F
  file=@cat.jpg``). Checks size, type and pixel count, queues a job, answers ``202 {"id": ...}``.
* ``GET /api/jobs/{id}``: state (queued / running / done / error), place in the queue, progress, and when
  done the result: input crop, one overlay and one raw map (``.npy`` data URI) per method with its AD / AG,
  top-5 classes. ``rank`` (1-5, default 1) picks which of the top-5 classes is explained.
* ``GET /api/samples/{name}``: a bundled sample image (for the preview).
* ``GET /api/health``: ``{"ok": true, ...}`` with job counts.

Bounds: the body is read as a stream and refused once it passes ``max_bytes`` (at once when the
Content-Length header says so); the pixel count comes from the image header before decoding; the form
values are range-checked (a value of the wrong type too: 400 ``{"error": ...}`` like every refusal, not
FastAPI's 422); one worker runs jobs in order and at most ``max_waiting`` wait. Uploads live in memory only: the
server writes no files (its scratch folder is a temporary directory, removed on exit).
"""

from __future__ import annotations

import base64
import contextlib
import io
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool

from ..errors import OpticamError, ResourceError, UsageError
from ..evaluation.scoring import explain_with
from ..images import IMAGE_SUFFIXES, load_image, sample_image
from ..methods.registry import check_spec_layers, method_names, parse_method_specs
from ..models.loading import LoadedModel, load_model
from ..models.specs import DEFAULT_MODEL, offline_model_names
from ..viz.encode import data_uri
from ..viz.overlay import overlay, to_pil
from .guard import host_and_origin_guard
from .jobs import JobQueue, QueueFull
from .uploads import UploadRejected, decode_upload, read_upload


def bundled_samples() -> dict[str, Path]:
    """Sample images that ship inside a dependency (matplotlib's Grace Hopper photo)."""
    path = sample_image()
    return {path.name: path} if path.is_file() else {}


def samples_from_folder(folder: str | Path, limit: int = 24) -> dict[str, Path]:
    """Up to ``limit`` image files of ``folder`` (sorted by name), to offer as samples."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder of sample images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UsageError(f"{folder}: the folder holds no image file to offer ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return {p.name: p for p in files[:limit]}


@dataclass
class Settings:
    """What the server offers and how much it accepts."""

    models: list[str] = field(default_factory=offline_model_names)
    methods: list[str] = field(default_factory=method_names)
    default_methods: list[str] = field(default_factory=lambda: ["opticam"])
    samples: dict[str, Path] = field(default_factory=bundled_samples)
    max_bytes: int = 20_000_000
    max_pixels: int = 40_000_000
    max_iterations: int = 200
    default_iterations: int = 50
    max_methods: int = 4
    max_waiting: int = 8
    device: str = "cpu"
    allowed_hosts: list[str] = field(default_factory=list)
    """Host names served besides the loopback ones and the bound address (:mod:`opticam.web.guard`)."""


class ModelCache:
    """Loaded models by name, loaded on first use (only the worker thread asks, one at a time)."""

    def __init__(self, device: str, loader: Callable[..., LoadedModel] = load_model) -> None:
        self.device = device
        self.loader = loader
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> LoadedModel:
        with self._lock:
            if name not in self._models:
                self._models[name] = self.loader(name, device=self.device)
            return self._models[name]


def create_app(settings: Settings | None = None, models: ModelCache | None = None) -> FastAPI:
    """The application; ``settings`` default to the offline models and all registered methods.

    The routes and error handlers are module-level functions (below, registered by :func:`add_routes` and
    :func:`add_error_handlers`); they find this app's settings, job queue and model cache on
    ``request.app.state``, so one module serves any number of apps (the tests make many). The scratch folder
    and the worker live as long as the app (:func:`lifespan` removes them on shutdown).
    """
    settings = settings or Settings()
    models = models or ModelCache(settings.device)
    scratch = Path(tempfile.mkdtemp(prefix="opticam-web-"))
    jobs = JobQueue(max_waiting=settings.max_waiting, user_errors=(OpticamError, ValueError))
    app = FastAPI(title="opticam", summary="Opti-CAM saliency maps in the browser", lifespan=lifespan)
    app.state.settings, app.state.jobs, app.state.models, app.state.scratch = settings, jobs, models, scratch
    app.middleware("http")(host_and_origin_guard(settings.allowed_hosts))
    add_error_handlers(app)
    add_routes(app)
    return app


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """On shutdown, stop the app's worker and remove its scratch folder: the server leaves no files behind."""
    yield
    app.state.jobs.close()
    shutil.rmtree(app.state.scratch, ignore_errors=True)


def add_error_handlers(app: FastAPI) -> None:
    """Answer every refusal as ``{"error": "<one sentence>"}`` with a 4xx / 5xx status, the one shape the page
    shows (and ``curl`` users read), instead of FastAPI's default bodies."""
    app.add_exception_handler(UsageError, usage_error_answer)
    app.add_exception_handler(OpticamError, opticam_error_answer)
    app.add_exception_handler(RequestValidationError, validation_error_answer)


def add_routes(app: FastAPI) -> None:
    """The endpoints listed in the module docstring, in that order (paths and status codes in one place)."""
    app.get("/", response_class=HTMLResponse)(index)
    app.get("/api/options")(options)
    app.get("/api/health")(health)
    app.get("/api/samples/{name}")(sample)
    app.get("/api/jobs/{job_id}")(job_status)
    app.post("/api/jobs", status_code=202)(create_job)


async def usage_error_answer(_request: Request, exc: UsageError) -> JSONResponse:
    """A form value or upload the server will not take (:class:`UploadRejected` included): its sentence, with
    the status the error carries (400, 404, 413, 415, 503)."""
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


async def opticam_error_answer(_request: Request, exc: OpticamError) -> JSONResponse:
    """Any other error opticam raises on purpose about the request (a layer the model lacks): one line,
    400; a resource that ran out is the server's state, 503."""
    return JSONResponse({"error": str(exc)}, status_code=503 if isinstance(exc, ResourceError) else 400)


async def validation_error_answer(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """A query value of the wrong type (``iterations=abc``): 400 and one sentence, like every other refusal,
    rather than FastAPI's 422 with a list of error objects."""
    return JSONResponse({"error": validation_message(exc)}, status_code=400)


# The routes (registered by add_routes); their docstrings are the descriptions at /docs.


def app_state(request: Request) -> tuple[Settings, JobQueue, ModelCache]:
    """The settings, job queue and model cache of the app that received ``request``."""
    state = request.app.state
    return state.settings, state.jobs, state.models


def sample_path(settings: Settings, name: str) -> Path:
    """The file of the bundled sample ``name``; 404 when the server offers no sample by that name."""
    if name not in settings.samples:
        raise UploadRejected(f"no sample named {name!r}", status=404)
    return settings.samples[name]


def index() -> HTMLResponse:
    """The page: one static HTML file with its JavaScript (no build step)."""
    page = resources.files("opticam.web").joinpath("static/index.html").read_text(encoding="utf-8")
    return HTMLResponse(page)


def options(request: Request) -> dict[str, Any]:
    """What the page's form offers: models, methods, samples, and the limits and defaults it checks against."""
    settings, _jobs, _models = app_state(request)
    return {
        "models": settings.models,
        "default_model": DEFAULT_MODEL if DEFAULT_MODEL in settings.models else settings.models[0],
        "methods": settings.methods,
        "default_methods": settings.default_methods,
        "samples": list(settings.samples),
        "max_bytes": settings.max_bytes,
        "max_pixels": settings.max_pixels,
        "max_iterations": settings.max_iterations,
        "default_iterations": settings.default_iterations,
        "max_methods": settings.max_methods,
    }


def health(request: Request) -> dict[str, Any]:
    """Whether the server answers, with how many jobs are queued, running, done and failed."""
    _settings, jobs, _models = app_state(request)
    return {"ok": True, "jobs": jobs.counts()}


def sample(request: Request, name: str) -> FileResponse:
    """A bundled sample image, for the page's preview before the job runs."""
    settings, _jobs, _models = app_state(request)
    return FileResponse(sample_path(settings, name))


def job_status(request: Request, job_id: str) -> dict[str, Any]:
    """A job's state, place in the queue and progress, with its result once done; 404 once it is forgotten."""
    _settings, jobs, _models = app_state(request)
    status = jobs.status(job_id)
    if status is None:
        raise UploadRejected("no such job (finished jobs are forgotten after a while)", status=404)
    return status


async def create_job(
    request: Request,
    model: str | None = None,
    methods: str | None = None,
    iterations: int | None = None,
    sample: str | None = None,
    rank: int | None = None,
) -> dict[str, Any]:
    """Check the form values, then the image, and queue the job (202 with its status); every check comes
    before the queue so that a bad request never waits for a turn, and a full queue answers 503."""
    settings, jobs, models = app_state(request)
    chosen_model = model or DEFAULT_MODEL
    if chosen_model not in settings.models:
        raise UploadRejected(f"unknown model {chosen_model!r}; choose one of {', '.join(settings.models)}")
    specs = parse_method_specs(methods or ",".join(settings.default_methods), allowed=settings.methods)
    if len(specs) > settings.max_methods:
        raise UploadRejected(f"choose at most {settings.max_methods} methods at once")
    if any("layer" in spec.options for spec in specs):  # checked on the model now, not inside the job
        await run_in_threadpool(check_spec_layers, specs, await run_in_threadpool(models.get, chosen_model))
    chosen = [spec.key for spec in specs]
    steps = settings.default_iterations if iterations is None else iterations
    if not 1 <= steps <= settings.max_iterations:
        raise UploadRejected(f"iterations must be between 1 and {settings.max_iterations}")
    chosen_rank = 1 if rank is None else rank
    if not 1 <= chosen_rank <= 5:
        raise UploadRejected("rank must be between 1 and 5 (which of the top-5 classes to explain)")
    image, source = await job_image(request, settings, sample)
    work = make_work(models, image, chosen_model, chosen, steps, settings.device, source, chosen_rank)
    try:
        job = jobs.submit(work)
    except QueueFull as exc:
        raise UploadRejected(f"The server is busy: {exc}", status=503) from None
    return jobs.status(job.id) or {"id": job.id}


async def job_image(request: Request, settings: Settings, sample: str | None) -> tuple[Image.Image, str]:
    """The image a job explains and its source: the bundled ``sample`` (404 when there is none by that name),
    else the upload in the request body, read within the byte limit and decoded within the pixel limit
    (off the event loop: decoding takes a while)."""
    if sample:
        return await run_in_threadpool(load_image, sample_path(settings, sample)), sample
    data = await read_upload(request, settings.max_bytes)
    return await run_in_threadpool(decode_upload, data, settings.max_pixels), "upload"


def npy_data_uri(saliency: torch.Tensor) -> str:
    """A map ``[H, W]`` as a ``.npy`` file (float32) in a data URI: the page's "raw map" download."""
    buffer = io.BytesIO()
    np.save(buffer, saliency.detach().float().cpu().numpy().astype(np.float32))
    return "data:application/octet-stream;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def validation_message(exc: RequestValidationError) -> str:
    """FastAPI's validation errors as one sentence: ``iterations: Input should be a valid integer (got 'abc')``."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(x) for x in error.get("loc", ()) if x not in ("query", "body", "path"))
        got = f" (got {error['input']!r})" if "input" in error and error["input"] is not None else ""
        parts.append(f"{where or 'request'}: {error.get('msg', 'invalid value')}{got}")
    return "; ".join(parts) or "invalid request"


def make_work(
    models: ModelCache,
    image: Image.Image,
    model_name: str,
    methods: list[str],
    iterations: int,
    device: str,
    source: str,
    rank: int = 1,
) -> Callable[[Callable[[float, str], None]], dict[str, Any]]:
    """The job: load the model (cached), explain the image's top-``rank`` class with each method, and
    encode the pictures and the raw maps (``.npy`` as data URIs, for the page's download links)."""

    def work(progress: Callable[[float, str], None]) -> dict[str, Any]:
        progress(0.0, f"loading {model_name}")
        loaded = models.get(model_name)
        x = loaded.preprocess(image)[None].to(device)

        def on_step(step: int, total: int, index: int, count: int) -> None:
            name = methods[index]
            what = "running" if total == 0 else "done" if step == total == 1 else f"step {step} of {total}"
            progress((index + step / max(total, 1)) / count, f"{name} ({index + 1} of {count}): {what}")

        if rank > len(loaded.class_names):
            raise UploadRejected(f"rank {rank}: {loaded.name} has only {len(loaded.class_names)} classes")
        with torch.no_grad():
            target = int(loaded.model(x)[0].topk(rank).indices[-1])
        with torch.inference_mode(False):
            results = explain_with(loaded, x, methods, [target], iterations=iterations, progress=on_step)
        first = results[methods[0]]
        c = int(first.classes[0])
        return {
            "source": source,
            "model": loaded.name,
            "class_index": c,
            "class_name": loaded.class_name(c),
            "rank": rank,
            "top5": loaded.top_k(first.logits[0]),
            "image": data_uri(to_pil(x[0])),
            "methods": [
                {
                    "name": name,
                    "overlay": data_uri(overlay(x[0], r.maps[0, 0])),
                    "map": npy_data_uri(r.maps[0, 0]),
                    "AD": round(r.scores[0]["AD"], 2),
                    "AG": round(r.scores[0]["AG"], 2),
                    "p": round(float(r.p[0]), 4),
                    "o": round(float(r.o[0]), 4),
                    "seconds": round(r.seconds, 3),
                    "iterations": None if r.iterations is None else int(r.iterations[0]),
                    "diagnostics": r.result.record(0),
                }
                for name, r in results.items()
            ],
        }

    return work
