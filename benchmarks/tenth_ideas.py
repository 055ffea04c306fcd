"""Issue 11's ideas that are not ``OptiCAM`` options, measured on the sample images (docs/speed.md, "A tenth").

Every study explains the **ground-truth** class of the first ``--limit`` samples of ``labels.csv`` (the
``screen`` set of ``benchmarks/quality.py``: its Adam-100 baseline is there) with nine optimizer steps or
their equivalent, and prints AD / AG / AI from ``opticam.metrics``.

    PYTHONPATH=src python benchmarks/tenth_ideas.py eg          # mirror descent on the simplex
    PYTHONPATH=src python benchmarks/tenth_ideas.py lbfgs       # torch.optim.LBFGS, strong-Wolfe line search
    PYTHONPATH=src python benchmarks/tenth_ideas.py surrogate   # a start optimized through the head only
    PYTHONPATH=src python benchmarks/tenth_ideas.py mapspace    # steps taken on the 7 x 7 map, then fitted
    PYTHONPATH=src python benchmarks/tenth_ideas.py collect --start 200 --stop 600   # for `channels`
    PYTHONPATH=src python benchmarks/tenth_ideas.py channels    # can a learned start predict the weights?
"""

from __future__ import annotations

import argparse
import csv
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from opticam import OptiCAM, load_image, load_model, tune_cpu_allocator
from opticam.methods.opticam import lr_factor
from opticam.methods.opticam_maths import combine, normalize, objective, saliency_mask, upsample
from opticam.metrics import average_drop_gain_increase

SAMPLES = Path(os.environ.get("OPTICAM_SAMPLES", Path(__file__).resolve().parents[2] / "shared/data/imagenet-samples"))
COLLECTED = Path(__file__).resolve().parent / "results" / "tenth-weights"


def batches(start: int, stop: int, loaded, size: int = 8) -> Iterator[tuple[list[str], torch.Tensor, torch.Tensor]]:
    with (SAMPLES / "labels.csv").open() as f:
        rows = list(csv.DictReader(f))[start:stop]
    for i in range(0, len(rows), size):
        chunk = rows[i : i + size]
        x = torch.stack([loaded.preprocess(load_image(SAMPLES / r["file"])) for r in chunk])
        yield [r["file"] for r in chunk], x, torch.tensor([int(r["class_index"]) for r in chunk])


def scores(model, x: torch.Tensor, classes: torch.Tensor, logits: torch.Tensor, maps: torch.Tensor):
    """``(p, o)``: the class probability of the image and of the image times its map."""
    rows = torch.arange(len(classes))
    with torch.no_grad():
        p = torch.softmax(logits, 1)[rows, classes]
        o = torch.softmax(model(x * maps), 1)[rows, classes]
    return p, o


def report(name: str, p: list[torch.Tensor], o: list[torch.Tensor]) -> None:
    result = average_drop_gain_increase(torch.cat(p), torch.cat(o))
    print(f"{name}: " + ", ".join(f"{k} {float(v):.2f}" for k, v in result.items()), flush=True)


def mirror_descent(u: torch.Tensor, grad: torch.Tensor, lr: float) -> None:
    """One step of mirror descent on the simplex ``w = softmax(u)``: ``u -= lr * d / max|d|`` per image with
    ``d = grad / w`` (the gradient with respect to ``w``, centred), instead of Adam's per-coordinate scaling."""
    w = torch.softmax(u, 1).clamp_min(1e-30)
    d = torch.nan_to_num(grad / w)
    u.sub_(lr * d / d.abs().amax(1, keepdim=True).clamp_min(1e-30))


def optimize(model, x, feats, classes, steps: int, step_fn) -> torch.Tensor:
    """``steps`` updates of ``u`` by ``step_fn(u, grad, step)`` on the log-probability; returns the best ``u``."""
    u = torch.zeros(feats.shape[:2], requires_grad=True)
    best, best_u = torch.full((len(classes),), -float("inf")), u.detach().clone()
    for step in range(steps + 1):
        value = objective(model, x, saliency_mask(feats, u, tuple(x.shape[-2:])), classes, "log-prob")
        better = value.detach() > best
        best[better], best_u[better] = value.detach()[better], u.detach()[better]
        if step == steps:
            break
        (grad,) = torch.autograd.grad(-value.sum(), u)
        with torch.no_grad():
            step_fn(u, grad, step)
    return best_u


def measure(name: str, args, loaded, cam: OptiCAM, maps_of) -> None:
    """AD / AG / AI of ``maps_of(x, classes, feats) -> maps`` over the first ``--limit`` samples."""
    p, o = [], []
    for _, x, c in batches(0, args.limit, loaded):
        logits, feats = cam.features(x)
        p_, o_ = scores(loaded.model, x, c, logits, maps_of(x, c, feats))
        p.append(p_)
        o.append(o_)
    report(name, p, o)


def run_eg(args, loaded) -> None:
    cam = OptiCAM(loaded.model, loaded.target_layer)
    for lr in (1.0, 3.0, 10.0):

        def maps_of(x, c, feats, lr=lr):
            def step(u, grad, t):  # cosine-decayed rate, as the presets use
                mirror_descent(u, grad, lr * lr_factor("cosine", t, 9))

            return saliency_mask(feats, optimize(loaded.model, x, feats, c, 9, step), tuple(x.shape[-2:]))

        measure(f"mirror descent, lr {lr}, cosine, 9 steps", args, loaded, cam, maps_of)


def run_lbfgs(args, loaded) -> None:
    cam = OptiCAM(loaded.model, loaded.target_layer)
    for lr in (1.0, 3.0, 10.0):

        def maps_of(x, c, feats, lr=lr):
            u = torch.zeros(feats.shape[:2], requires_grad=True)
            opt = torch.optim.LBFGS([u], lr=lr, max_iter=9, max_eval=9, history_size=10, line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad()
                loss = -objective(loaded.model, x, saliency_mask(feats, u, tuple(x.shape[-2:])), c, "log-prob").sum()
                loss.backward()
                return loss

            opt.step(closure)
            return saliency_mask(feats, u.detach(), tuple(x.shape[-2:]))

        measure(f"LBFGS (strong Wolfe), lr {lr}, 9 evaluations", args, loaded, cam, maps_of)


def run_surrogate(args, loaded) -> None:
    """Start from weights optimized through the network's head only: the classifier applied to the layer's
    maps times the mask at the layer's resolution (no backbone pass), then 9 real steps (tenth preset)."""
    head = loaded.model.model.forward_head  # EfficientNet-Lite0: bn2 -> pooling -> classifier
    for sur_lr in (0.1, 1.0):
        cam = OptiCAM.from_preset("tenth", loaded.model, loaded.target_layer)

        def maps_of(x, c, feats, sur_lr=sur_lr, cam=cam):
            u = torch.zeros(feats.shape[:2], requires_grad=True)
            opt = torch.optim.Adam([u], lr=sur_lr)
            for _ in range(100):
                value = torch.log_softmax(head(feats * normalize(combine(feats, u))), 1)[torch.arange(len(c)), c]
                opt.zero_grad()
                (-value.sum()).backward()
                opt.step()
            start = u.detach()
            cam.initial_weights = lambda f, a: start.clone()
            return cam.explain(x, c).maps

        measure(f"surrogate start (100 head-only Adam steps, lr {sur_lr}) + tenth", args, loaded, cam, maps_of)


def fit_weights(feats: torch.Tensor, u: torch.Tensor, target: torch.Tensor, steps: int, lr: float) -> torch.Tensor:
    """The ``u`` (from ``u``, ``steps`` Adam steps) whose normalized map is closest to ``target`` (least
    squares at the layer's resolution): no model pass, only the feature maps."""
    u = u.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([u], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        ((normalize(combine(feats, u)) - target) ** 2).sum().backward()
        opt.step()
    return u.detach()


def run_mapspace(args, loaded) -> None:
    """Steps in the space of the 7 x 7 map instead of the K channel weights: each of the 9 model passes
    gives the gradient with respect to the normalized map ``S``; the map moves by ``eta`` (cosine-decayed) times
    that gradient scaled to a largest entry of 1, and the weights are then fitted to the moved map (a map
    has 49 numbers against K = 1280 weights, and Adam's first steps move every weight by about its rate)."""
    cam = OptiCAM(loaded.model, loaded.target_layer)
    for eta, inner, inner_lr in ((0.5, 30, 0.5), (1.0, 50, 0.5), (1.5, 30, 0.5), (2.0, 50, 0.5)):

        def maps_of(x, c, feats, eta=eta, inner=inner, inner_lr=inner_lr):
            size = tuple(x.shape[-2:])
            u = torch.zeros(feats.shape[:2])
            best, best_u = torch.full((len(c),), -float("inf")), u.clone()
            for step in range(10):
                last = step == 9
                s = normalize(combine(feats, u)).detach().requires_grad_(not last)
                with torch.set_grad_enabled(not last):
                    value = objective(loaded.model, x, normalize(upsample(s, size)), c, "log-prob")
                better = value.detach() > best
                best[better], best_u[better] = value.detach()[better], u[better]
                if last:
                    break
                (grad,) = torch.autograd.grad(value.sum(), s)
                grad = grad / grad.abs().amax((1, 2, 3), keepdim=True).clamp_min(1e-30)
                target = normalize((s.detach() + eta * lr_factor("cosine", step, 9) * grad).clamp(0, 1))
                u = fit_weights(feats, u, target, inner, inner_lr)
            return saliency_mask(feats, best_u, tuple(x.shape[-2:]))

        measure(f"map-space steps, eta {eta}, fit {inner} x lr {inner_lr}, 9 passes", args, loaded, cam, maps_of)


def run_collect(args, loaded) -> None:
    """The ``fast`` preset's optimized weights (and the maps and Grad-CAM weights) of training images."""
    COLLECTED.mkdir(parents=True, exist_ok=True)
    cam = OptiCAM.from_preset("fast", loaded.model, loaded.target_layer)
    for files, x, c in batches(args.start, args.stop, loaded):
        out = COLLECTED / f"{files[0]}.pt"
        if out.exists():
            continue
        _, _, feats, alpha = cam._features_and_gradcam(x, c)
        weights = cam.explain(x, c).weights
        torch.save({"files": files, "classes": c, "A": feats.half(), "alpha": alpha, "w": weights}, out)
        print(f"{files[0]}: {len(files)} images", flush=True)


def run_channels(args, loaded) -> None:
    """How much of the optimized weights' mass lies on the top-r channels by simple per-channel statistics
    (vs random channels), and how far a small per-channel network gets at predicting the weights."""
    data = [torch.load(f) for f in sorted(COLLECTED.glob("*.pt"))]
    if not data:
        raise SystemExit(f"nothing collected in {COLLECTED}; run `collect` first")
    feats = torch.cat([d["A"].float() for d in data])
    alpha = torch.cat([d["alpha"] for d in data])
    w = torch.cat([d["w"] for d in data])
    mean, peak = feats.mean((2, 3)), feats.amax((2, 3))
    effective = torch.exp(-(w * w.clamp_min(1e-30).log()).sum(1)).median()
    print(f"{len(w)} images; effective channels exp(H(w)), median: {effective:.1f}")
    generator = torch.Generator().manual_seed(0)
    for name, score in [("alpha * mean", alpha * mean), ("alpha", alpha), ("mean", mean), ("max", peak),
                        ("random", torch.rand(mean.shape, generator=generator))]:  # fmt: skip
        order = score.argsort(1, descending=True)
        mass = [w.gather(1, order[:, :r]).sum(1).mean().item() for r in (32, 128, 512)]
        print(f"mass of w on the top 32 / 128 / 512 channels by {name}: " + " / ".join(f"{m:.3f}" for m in mass))
    x = torch.stack([alpha, mean, peak, alpha * mean, alpha * peak], -1)
    x = (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1e-8)
    split = int(len(w) * 0.75)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[-1], 32), torch.nn.GELU(), torch.nn.Linear(32, 1))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)

    def cross_entropy(part: slice) -> torch.Tensor:
        return -(w[part] * torch.log_softmax(net(x[part]).squeeze(-1), 1)).sum(1).mean()

    for _ in range(1500):
        opt.zero_grad()
        cross_entropy(slice(0, split)).backward()
        opt.step()
    held = slice(split, len(w))
    with torch.no_grad():
        uniform = -(w[held] * torch.log(torch.full_like(w[held], 1 / w.shape[1]))).sum(1).mean()
        entropy = -(w[held] * w[held].clamp_min(1e-30).log()).sum(1).mean()
        print(
            f"held-out cross-entropy of the weights: learned start {cross_entropy(held):.3f}, uniform start "
            f"{uniform:.3f}, perfect prediction {entropy:.3f} ({len(w) - split} images)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=["eg", "lbfgs", "surrogate", "mapspace", "collect", "channels"])
    parser.add_argument("--limit", type=int, default=16, help="first N samples (default 16: the screen set)")
    parser.add_argument("--start", type=int, default=200, help="collect: first sample (after the confirm set)")
    parser.add_argument("--stop", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tune_cpu_allocator()
    loaded = load_model("efficientnet_lite0")
    for p in loaded.model.parameters():
        p.requires_grad_(False)
    studies = {"eg": run_eg, "lbfgs": run_lbfgs, "surrogate": run_surrogate, "mapspace": run_mapspace}
    studies.update(collect=run_collect, channels=run_channels)
    studies[args.study](args, loaded)


if __name__ == "__main__":
    main()
