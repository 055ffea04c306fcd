"""The web server's bounds and jobs, over real HTTP against a live uvicorn server (no browser here).

Upload checks (size, type, pixel count from the header), parameter checks, the one-worker queue, and one
real Opti-CAM job on the pretrained model whose top-5 is checked against an independent forward pass.
"""

from __future__ import annotations

import http.client
import io
import json
import struct
import threading
import time
import urllib.parse
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from opticam.web.app import ModelCache, Settings, create_app  # noqa: E402
from opticam.web.jobs import JobQueue, QueueFull  # noqa: E402
from opticam.web.server import background  # noqa: E402
from opticam.web.uploads import UploadRejected, decode_upload  # noqa: E402


# -- helpers (the browser test imports these too) ----------------------------------------------------
def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(side: int = 20000) -> bytes:
    """A valid ``side x side`` 1-bit black PNG of a few tens of kilobytes (zlib on a constant row)."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def png_of(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def request(url: str, method: str, path: str, body=None, headers=None) -> tuple[int, dict]:
    """One HTTP request with http.client (no Expect: 100-continue, like most clients); JSON answer."""
    parsed = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def wait_for_job(url: str, job_id: str, timeout: float = 300) -> tuple[dict, list[dict]]:
    """Poll until the job is done or failed; returns the last status and every status seen."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = request(url, "GET", f"/api/jobs/{job_id}")
        assert status == 200, body
        seen.append(body)
        if body["state"] in ("done", "error"):
            return body, seen
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {seen[-1]}")


@pytest.fixture(scope="module")
def server(lite0):
    """A live server on the session's pretrained model (no second load), small limits for the tests."""
    settings = Settings(
        models=["efficientnet_lite0"],
        methods=["opticam", "fakecam"] if _has_fakecam() else ["opticam"],
        max_bytes=5_000_000,
        max_pixels=4_000_000,
        max_iterations=20,
        default_iterations=2,
    )
    app = create_app(settings, ModelCache("cpu", loader=lambda name, device: lite0))
    with background(app) as url:
        yield url, app


def _has_fakecam() -> bool:
    from opticam.methods import method_names

    return "fakecam" in method_names()


def assert_alive(url: str) -> None:
    status, body = request(url, "GET", "/api/health")
    assert status == 200 and body["ok"] is True


# -- decoding -------------------------------------------------------------------------------------
def test_decode_refuses_a_bomb_from_the_header_alone():
    data = bomb_png()
    assert len(data) < 200_000  # cheap to send: the danger is only in decoding
    with pytest.raises(UploadRejected, match="20000 x 20000") as info:
        decode_upload(data, max_pixels=40_000_000)
    assert info.value.status == 413


def test_decode_pixel_limit_below_pils_own_check():
    """3000 x 2000 = 6 MP is far below PIL's bomb threshold; our limit of 4 MP must still refuse it."""
    data = png_of(Image.new("RGB", (3000, 2000)))
    with pytest.raises(UploadRejected, match="3000 x 2000 = 6 megapixels; the limit is 4 megapixels"):
        decode_upload(data, max_pixels=4_000_000)
    assert decode_upload(data, max_pixels=6_000_000).size == (3000, 2000)


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"", 400, "empty"),
        (b"%PDF-1.4 not an image at all", 415, "not an image"),
        (png_of(Image.new("RGB", (64, 64)))[:60], 400, "corrupt or truncated"),
    ],
)
def test_decode_rejects_bad_files_with_a_message(data, status, message):
    with pytest.raises(UploadRejected, match=message) as info:
        decode_upload(data, max_pixels=1_000_000)
    assert info.value.status == status


def test_decode_converts_to_rgb():
    rgba = Image.new("RGBA", (5, 4), (255, 0, 0, 0))  # fully transparent -> white
    image = decode_upload(png_of(rgba), max_pixels=100)
    assert image.mode == "RGB" and image.size == (5, 4) and image.getpixel((0, 0)) == (255, 255, 255)


# -- the queue --------------------------------------------------------------------------------------
def test_queue_runs_one_job_at_a_time_in_order_and_bounds_the_waiting():
    jobs = JobQueue(max_waiting=2, user_errors=(ValueError,))
    release = threading.Event()
    running, peak, order = [0], [0], []
    lock = threading.Lock()

    def work(name, block=False):
        def run(progress):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            progress(0.5, f"{name} half way")
            if block:
                assert release.wait(10)
            order.append(name)
            with lock:
                running[0] -= 1
            return {"name": name}

        return run

    first = jobs.submit(work("a", block=True))
    deadline = time.monotonic() + 10
    while jobs.status(first.id)["state"] != "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert jobs.status(first.id)["message"] == "a half way"
    second, third = jobs.submit(work("b")), jobs.submit(work("c"))
    assert jobs.status(second.id)["ahead"] == 1 and jobs.status(third.id)["ahead"] == 2
    assert jobs.status(third.id)["message"] == "waiting: 2 jobs ahead in the queue"
    with pytest.raises(QueueFull):
        jobs.submit(work("d"))
    release.set()
    for job in (first, second, third):
        while jobs.status(job.id)["state"] != "done" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert jobs.status(job.id)["result"] == {"name": job_name(job, first, second)}
    assert order == ["a", "b", "c"] and peak[0] == 1
    jobs.close()


def job_name(job, first, second) -> str:
    return "a" if job is first else "b" if job is second else "c"


def test_queue_survives_failing_jobs():
    jobs = JobQueue(user_errors=(ValueError,))

    def bad_input(progress):
        raise ValueError("the image is not usable")

    def bug(progress):
        raise KeyError("oops")

    a, b = jobs.submit(bad_input), jobs.submit(bug)
    c = jobs.submit(lambda progress: {"ok": True})
    deadline = time.monotonic() + 10
    while jobs.status(c.id)["state"] != "done" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert jobs.status(a.id)["error"] == "the image is not usable"
    assert jobs.status(b.id)["error"].startswith("internal error: KeyError")
    assert jobs.status(c.id)["result"] == {"ok": True}
    jobs.close()


# -- the HTTP bounds ----------------------------------------------------------------------------------
def test_options_and_page(server):
    url, _ = server
    status, options = request(url, "GET", "/api/options")
    assert status == 200
    assert options["models"] == ["efficientnet_lite0"] and "opticam" in options["methods"]
    assert options["max_bytes"] == 5_000_000 and options["samples"] == ["grace_hopper.jpg"]
    parsed = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    conn.request("GET", "/")
    page = conn.getresponse().read().decode()
    assert 'id="file"' in page and "/api/jobs" in page


def test_too_large_upload_gets_413_and_the_server_keeps_serving(server):
    url, _ = server
    status, body = request(url, "POST", "/api/jobs", body=b"\0" * 100_000_000, headers={"Content-Type": "image/png"})
    assert status == 413
    assert body["error"] == "The upload is 100 MB; the limit is 5.0 MB. Choose a smaller image."
    assert_alive(url)


def test_too_large_chunked_upload_without_length_is_cut_off(server):
    url, _ = server

    def chunks():
        for _ in range(8):
            yield b"\0" * 1_000_000

    parsed = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    conn.request("POST", "/api/jobs", body=chunks(), encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 413
    assert "the limit is 5.0 MB" in json.loads(response.read())["error"]
    conn.close()
    assert_alive(url)


def test_bomb_png_gets_a_clear_error_and_the_server_keeps_serving(server):
    url, _ = server
    status, body = request(url, "POST", "/api/jobs", body=bomb_png())
    assert status == 413
    assert body["error"].startswith("The image is 20000 x 20000 = 400 megapixels; the limit is 4 megapixels")
    assert_alive(url)


def test_non_image_is_rejected(server):
    url, _ = server
    status, body = request(url, "POST", "/api/jobs", body=b"#!/bin/sh\necho this is a script\n")
    assert status == 415 and "not an image" in body["error"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("model=resnet50", "unknown model 'resnet50'"),
        ("methods=nosuch", "choose methods among"),
        ("iterations=0", "iterations must be between 1 and 20"),
        ("iterations=21", "iterations must be between 1 and 20"),
        ("sample=../../etc/passwd", "no sample named"),
        ("rank=6", "rank must be between 1 and 5"),
    ],
)
def test_bad_form_values_are_rejected(server, query, message):
    url, _ = server
    status, body = request(url, "POST", f"/api/jobs?{query}", body=png_of(Image.new("RGB", (32, 32))))
    assert status in (400, 404) and message in body["error"]


def test_unknown_job_is_404(server):
    url, _ = server
    status, body = request(url, "GET", "/api/jobs/nope")
    assert status == 404 and "no such job" in body["error"]


# -- a real job ---------------------------------------------------------------------------------------
def test_real_job_reports_progress_and_matches_the_model(server, lite0, samples_dir, tmp_path, monkeypatch):
    """Opti-CAM, 2 steps, on a real ImageNet image: the top-5 equals an independent forward pass."""
    url, _ = server
    monkeypatch.chdir(tmp_path)
    path = samples_dir / "n01440764_tench.JPEG"
    data = path.read_bytes()
    status, body = request(url, "POST", "/api/jobs?methods=opticam&iterations=2", body=data)
    assert status == 202 and body["state"] in ("queued", "running")
    final, seen = wait_for_job(url, body["id"])
    assert final["state"] == "done", final
    result = final["result"]
    x = lite0.preprocess(Image.open(io.BytesIO(data)).convert("RGB"))[None]
    with torch.no_grad():
        probs = torch.softmax(lite0.model(x), dim=1)[0]
    top = probs.topk(5)
    assert [t["class_index"] for t in result["top5"]] == top.indices.tolist()
    assert [t["prob"] for t in result["top5"]] == pytest.approx(top.values.tolist(), abs=1e-5)
    assert result["class_index"] == int(top.indices[0]) and result["class_name"] == lite0.class_name(
        result["class_index"]
    )
    (method,) = result["methods"]
    assert method["name"] == "opticam" and 1 <= method["iterations"] <= 2
    # AD/AG shown are this image's terms of the paper's averages, from p and o.
    p, o = method["p"], method["o"]
    assert method["AD"] == pytest.approx(100 * max(p - o, 0) / p, abs=0.02)
    assert method["AG"] == pytest.approx(100 * max(o - p, 0) / (1 - p), abs=0.02)
    for uri in (result["image"], method["overlay"]):
        assert uri.startswith("data:image/png;base64,")
    import base64

    picture = Image.open(io.BytesIO(base64.b64decode(method["overlay"].split(",", 1)[1])))
    assert picture.size == (224, 224)
    assert [s["fraction"] for s in seen] == sorted(s["fraction"] for s in seen)  # progress never goes back
    assert list(Path(tmp_path).iterdir()) == []  # the server wrote nothing in the working folder


def test_bundled_sample_job(server):
    """A sample picked by name (no upload) runs like an upload and says where the image came from."""
    url, _ = server
    status, body = request(url, "POST", "/api/jobs?sample=grace_hopper.jpg&iterations=1&methods=opticam")
    assert status == 202
    final, _ = wait_for_job(url, body["id"])
    assert final["state"] == "done" and final["result"]["source"] == "grace_hopper.jpg"
    assert len(final["result"]["top5"]) == 5 and final["result"]["methods"][0]["iterations"] == 1


def test_serve_flags_become_settings():
    import argparse

    from opticam.cli.serve import register, settings_from_args
    from opticam.errors import OpticamError

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["serve", "--max-mb", "2.5", "--max-megapixels", "10", "--iterations", "7"])
    assert args.host == "127.0.0.1"  # local only unless asked
    settings = settings_from_args(args)
    assert (settings.max_bytes, settings.max_pixels, settings.default_iterations) == (2_500_000, 10_000_000, 7)
    with pytest.raises(OpticamError, match="--iterations must be between 1 and --max-iterations"):
        settings_from_args(parser.parse_args(["serve", "--iterations", "300"]))
    with pytest.raises(OpticamError, match="unknown method 'nope'"):
        settings_from_args(parser.parse_args(["serve", "--methods", "nope"]))


def test_concurrent_http_requests_wait_their_turn(server):
    """Four clients at once: all accepted, all finish, and no two jobs ever ran at the same time."""
    url, _ = server
    answers: list[tuple[int, dict]] = []

    def client():
        answers.append(request(url, "POST", "/api/jobs?sample=grace_hopper.jpg&iterations=1&methods=opticam"))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [status for status, _ in answers] == [202] * 4
    finals = [wait_for_job(url, body["id"])[0] for _, body in answers]
    assert all(f["state"] == "done" for f in finals)
    spans = sorted((f["started_at"], f["finished_at"]) for f in finals)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False))
    assert_alive(url)


def test_sample_job_explains_the_chosen_top5_class_and_offers_the_raw_map(server):
    """rank=2 explains the second most probable class; each method's raw map is a float32 .npy."""
    import base64

    import numpy as np

    url, _ = server
    status, body = request(url, "POST", "/api/jobs?sample=grace_hopper.jpg&iterations=1&methods=opticam&rank=2")
    assert status == 202
    final, _ = wait_for_job(url, body["id"])
    result = final["result"]
    assert final["state"] == "done" and result["rank"] == 2
    assert result["class_index"] == result["top5"][1]["class_index"]
    uri = result["methods"][0]["map"]
    assert uri.startswith("data:application/octet-stream;base64,")
    saliency = np.load(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert saliency.dtype == np.float32 and saliency.shape == (224, 224)


def test_sample_folder_offers_the_image_files_the_cli_reads(tmp_path):
    """The page's sample folder takes the same file endings as data sets and `opticam explain DIR` (PPM
    included, which the page once lacked), in name order, and nothing else."""
    from opticam.web.app import samples_from_folder

    for name in ("b.ppm", "a.JPG", "c.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name, format="PPM" if name.endswith("ppm") else None)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "d.jpeg").mkdir()  # a folder with an image's name is not a sample
    assert list(samples_from_folder(tmp_path)) == ["a.JPG", "b.ppm", "c.png"]
    assert list(samples_from_folder(tmp_path, limit=1)) == ["a.JPG"]


# -- the edges: wrong types, forms, wording, progress ---------------------------------------------------
def multipart(fields: dict[str, tuple[str | None, bytes]], boundary: str = "opticam-test-boundary") -> bytes:
    """A ``multipart/form-data`` body as curl -F writes it: ``{name: (filename or None, content)}``."""
    parts = []
    for name, (filename, content) in fields.items():
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        kind = "Content-Type: application/octet-stream\r\n" if filename else ""
        parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{kind}\r\n".encode() + content + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


FORM = {"Content-Type": "multipart/form-data; boundary=opticam-test-boundary"}


def test_a_value_of_the_wrong_type_is_a_400_with_one_readable_error(server):
    """FastAPI's own 422 {"detail": [...]} would break the documented {"error": ...} contract."""
    url, _ = server
    status, body = request(url, "POST", "/api/jobs?iterations=abc", body=png_of(Image.new("RGB", (32, 32))))
    assert status == 400 and set(body) == {"error"}
    assert body["error"].startswith("iterations: ") and "'abc'" in body["error"] and "\n" not in body["error"]


def test_a_multipart_form_upload_is_accepted_like_a_raw_body(server):
    """curl -F file=@cat.png: the first file field is the image (a text field before it is ignored)."""
    url, _ = server
    image = png_of(Image.new("RGB", (40, 32), (200, 120, 40)))
    body = multipart({"note": (None, b"hello"), "file": ("cat.png", image)})
    status, answer = request(url, "POST", "/api/jobs?methods=fakecam&iterations=1", body=body, headers=FORM)
    assert status == 202, answer
    final, _ = wait_for_job(url, answer["id"])
    assert final["state"] == "done" and final["result"]["source"] == "upload"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (multipart({"file": ("big.png", b"\0" * 5_100_000)}), 413, "the limit is 5.0 MB"),
        (multipart({"file": ("notes.txt", b"just text")}), 415, "not an image"),
        (b"--opticam-test-boundary--\r\n", 400, "no file"),
        (multipart({"note": (None, b"hello")}), 400, "no file"),  # only a text field: not an upload at all
    ],
)
def test_a_multipart_form_keeps_the_upload_checks(server, body, status, message):
    url, _ = server
    got, answer = request(url, "POST", "/api/jobs", body=body, headers=FORM)
    assert got == status and message in answer["error"], answer
    assert_alive(url)


def test_a_truncated_jpeg_says_so_once():
    """The page words the kind of failure once and adds PIL's reason, never the decoder's whole message."""
    buffer = io.BytesIO()
    Image.effect_noise((256, 256), 60).convert("RGB").save(buffer, format="JPEG")
    with pytest.raises(UploadRejected) as info:
        decode_upload(buffer.getvalue()[:3000], max_pixels=1_000_000)
    message = str(info.value)
    assert info.value.status == 400 and message.startswith("The image is corrupt or truncated (")
    assert message.count("corrupt or truncated") == 1 and "the upload:" not in message


def test_progress_names_the_second_method_while_it_runs(server):
    """explain_with reports each method's start, so the status moves on to 'opticam (2 of 2)' as soon as
    Fake-CAM is done, not only at Opti-CAM's first step."""
    url, _ = server
    status, body = request(url, "POST", "/api/jobs?sample=grace_hopper.jpg&iterations=8&methods=fakecam,opticam")
    assert status == 202
    final, seen = wait_for_job(url, body["id"])
    assert final["state"] == "done"
    running = [s["message"] for s in seen if s["state"] == "running"]
    assert any(m.startswith("opticam (2 of 2): ") for m in running), running
    assert not any(m.startswith("fakecam (1 of 2): step") for m in running)  # Fake-CAM has no steps


# -- every declared bad option, on the API -------------------------------------------------------------
@pytest.fixture(scope="module")
def every_method_server(lite0):
    """A server offering every registered method (the main fixture offers two), for the spec matrix."""
    from opticam.methods import method_names

    settings = Settings(models=["efficientnet_lite0"], methods=method_names(), max_iterations=20, default_iterations=1)
    app = create_app(settings, ModelCache("cpu", loader=lambda name, device: lite0))
    with background(app) as url:
        yield url, app


def _bad_method_specs() -> list[str]:
    from tests.cli.test_option_matrix import METHOD_SPECS

    return METHOD_SPECS


@pytest.mark.parametrize("spec", _bad_method_specs())
def test_every_declared_bad_option_is_a_400(every_method_server, spec):
    """The matrix of tests/cli/test_option_matrix.py on ``POST /api/jobs``: refused at once with one line
    (``kpcacam(kernel=bad)`` was accepted with 202 and failed inside the job; a layer without feature maps
    too), and no job is queued."""
    url, app = every_method_server
    query = urllib.parse.urlencode({"methods": spec})
    status, body = request(url, "POST", f"/api/jobs?{query}", body=png_of(Image.new("RGB", (32, 32))))
    assert status == 400, (spec, status, body)
    assert set(body) == {"error"} and body["error"] and "\n" not in body["error"], body
    assert "Traceback" not in body["error"]


def test_a_good_layer_option_is_accepted_by_the_api(every_method_server):
    """The layer check refuses what has no feature maps, not every layer: a real block is queued (202)."""
    url, _ = every_method_server
    query = urllib.parse.urlencode({"methods": "gradcam(layer=blocks.5)"})
    status, body = request(url, "POST", f"/api/jobs?{query}", body=png_of(Image.new("RGB", (32, 32))))
    assert status == 202, body
    done, _ = wait_for_job(url, body["id"])
    assert done["state"] == "done", done


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/api/options", {"Host": "evil.example"}, 421),  # DNS rebinding: a foreign name for 127.0.0.1
        ("GET", "/", {"Host": "evil.example:8000"}, 421),
        ("POST", "/api/jobs", {"Origin": "http://evil.example", "Content-Type": "text/plain"}, 403),
        ("POST", "/api/jobs", {"Origin": "null", "Content-Type": "text/plain"}, 403),
    ],
)
def test_foreign_hosts_and_cross_origin_posts_are_refused(server, method, path, headers, status):
    url, _ = server
    got, answer = request(url, method, path, body=b"x" if method == "POST" else None, headers=headers)
    assert got == status and "error" in answer, answer
    assert_alive(url)


def test_the_servers_own_page_and_scripts_without_origin_pass(server):
    url, _ = server
    own = urllib.parse.urlparse(url).netloc
    got, _ = request(url, "GET", "/api/options", headers={"Host": f"localhost:{urllib.parse.urlparse(url).port}"})
    assert got == 200
    got, answer = request(url, "POST", "/api/jobs", body=b"not an image", headers={"Origin": f"http://{own}"})
    assert got == 415, answer  # past the guard: the upload itself is what is refused
    got, answer = request(url, "POST", "/api/jobs", body=b"not an image")
    assert got == 415, answer


def test_allowed_hosts_are_served():
    from opticam.web.guard import allowed_names, check_request

    names = allowed_names("0.0.0.0", ["opticam.lab"])
    assert "0.0.0.0" not in names and check_request("GET", "opticam.lab:8000", None, names) is None
    assert check_request("GET", "[::1]:8000", None, names) is None
    assert check_request("GET", None, None, names)[0] == 421
    assert check_request("POST", "opticam.lab:8000", "http://opticam.lab:8000", names) is None
    assert check_request("POST", "opticam.lab:8000", "http://opticam.lab:9000", names)[0] == 403
