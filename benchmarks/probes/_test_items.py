"""Shared by the probes: the first test images of a checkpoint's data, with their labels and object boxes."""
import torch

from dartok.data.registry import create_dataset


def test_items(data: dict, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``n`` test images of a checkpoint's ``config["data"]`` (a dataset with object boxes).

    Returns:
        ``x`` ``B×C×H×W`` float32, ``y`` ``B`` int64 labels, ``boxes`` ``B×4`` float32
        ``(x0, y0, x1, y1)`` in ``[0, 1]``; ``B = min(n, len(test set))``.
    """
    ds = create_dataset(data["name"], data.get("root"), "test", canvas_size=data["canvas_size"], return_box=True,
                        **data.get("kwargs", {}))
    items = [ds[i] for i in range(min(n, len(ds)))]
    x = torch.stack([it[0] for it in items])
    y = torch.tensor([it[1]["label"] for it in items])
    boxes = torch.stack([torch.as_tensor(it[1]["box"], dtype=torch.float32) for it in items])
    return x, y, boxes


def predict_with_pdf(model, x: torch.Tensor, pdf: torch.Tensor, chunk: int = 250) -> torch.Tensor:
    """The ``B`` predicted classes (int64) of a DART ``model`` in eval mode on ``x`` when its tokenizer cuts
    ``pdf`` (``B×h×w``, through ``patch_embed.given_pdf``) instead of its own score map; in chunks of ``chunk``."""
    preds = []
    with torch.no_grad():
        for xb, pb in zip(x.split(chunk), pdf.split(chunk)):
            with model.patch_embed.given_pdf(pb):
                preds.append(model(xb).argmax(1))
    return torch.cat(preds)


def top1_with_pdf(model, x: torch.Tensor, y: torch.Tensor, pdf: torch.Tensor, chunk: int = 250) -> float:
    """Test top-1 (%, 2 decimals) of :func:`predict_with_pdf` against the labels ``y``."""
    return round(100 * (predict_with_pdf(model, x, pdf, chunk) == y).float().mean().item(), 2)


def dart_oracle_pair(argv: list[str]):
    """``argv`` = ``[DART_CHECKPOINT, ORACLE_CHECKPOINT, (SAMPLES = 2000)]`` of one preset and seed → the two
    models (eval mode, one torch thread) and their data's first SAMPLES test items:
    ``(dart, oracle, x, y, boxes)``. Exits with an ``Error:`` line if the two were trained on different data."""
    from dartok.train.checkpoint import model_from_checkpoint

    n = int(argv[2]) if len(argv) > 2 else 2000
    torch.set_num_threads(1)
    dart, cfg = model_from_checkpoint(argv[0])  # eval mode
    oracle, ocfg = model_from_checkpoint(argv[1])
    if cfg["data"] != ocfg["data"]:
        raise SystemExit(f"Error: the checkpoints were trained on different data: {cfg['data']} vs {ocfg['data']}")
    return (dart, oracle, *test_items(cfg["data"], n))
