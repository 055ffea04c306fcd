"""``opticam serve``: a small web page to run Opti-CAM on an uploaded or bundled image (FastAPI + uvicorn)."""

from .app import Settings, create_app

__all__ = ["Settings", "create_app"]
