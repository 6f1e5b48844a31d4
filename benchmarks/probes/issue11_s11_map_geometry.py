"""Probe (issue 11, session 11): where a trained scorer's map lies against the object box.

    python benchmarks/probes/issue11_s11_map_geometry.py <DART checkpoint dir>

On 1 000 test images of Cluttered Fashion-MNIST (128 px): the pdf's object mass, how often its best
cell is in the box, and boxes fitted to the map (moment boxes, thresholded boxes, with and without
the 4-connected region of the peak) with their IoU against the true box and the mass their uniform
density puts in it; then the centre offset of the fitted box, and the same after reading the map
at the cells' centres (``Scorer.align``). Run on the session-10 demo's DART checkpoint (unaligned);
output: ``issue11_s11_map_geometry_output.txt``. It found the +3.0 / +4.4 px offset that
``align_cells`` removes.
"""
import sys, torch, torch.nn.functional as F
import dartok
from dartok.train.checkpoint import model_from_checkpoint
from dartok.data.fashion_mnist import ClutteredFashionMNIST
from dartok.localization import box_pdf, object_mass, box_coverage
from dartok.scorer import moment_box, blur_pdf
torch.set_num_threads(1)
ck = sys.argv[1]
model, cfg = model_from_checkpoint(ck)
tok = model.tokenizer if hasattr(model, "tokenizer") else model.patch_embed
sc = tok.scorer
ds = ClutteredFashionMNIST("test", canvas_size=128, num_samples=1000, seed=0, return_box=True)
xs, bs = [], []
for i in range(len(ds)):
    x, t = ds[i]; xs.append(x); bs.append(torch.as_tensor(t["box"], dtype=torch.float32))
X = torch.stack(xs); B = torch.stack(bs)
with torch.no_grad():
    s = sc.scores_from_features(sc.features(X))
    pdf = sc.pdf_from_scores(s)
h, w = s.shape[-2:]
z = (s.flatten(1) - s.flatten(1).mean(1, keepdim=True)) / s.flatten(1).std(1, unbiased=False, keepdim=True)
z = z.view_as(s)
def iou(a, b):
    ix = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    iy = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = ix * iy
    ar = lambda c: (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])
    return inter / (ar(a) + ar(b) - inter)
def rep(name, box):
    m = object_mass(box_pdf(box, (h, w)), B)
    area = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
    print(f"{name:28s} IoU {iou(box, B).mean():.3f}  mass(box_pdf) {m.mean():.3f}  area {area.mean():.3f}")
print("true box area", ((B[:, 2] - B[:, 0]) * (B[:, 3] - B[:, 1])).mean().item(), "grid", h, w)
print("current pdf object mass", object_mass(pdf, B).mean().item())
am = pdf.flatten(1).argmax(1); cy, cx = (am // w + 0.5) / h, (am % w + 0.5) / w
inb = ((cx > B[:, 0]) & (cx < B[:, 2]) & (cy > B[:, 1]) & (cy < B[:, 3])).float().mean()
print("argmax in box", inb.item())
for g in (1.0, 2.0, 3.0):
    rep(f"moment softmax g{g}", moment_box(torch.softmax(z.flatten(1) * g, 1).view_as(z)))
rep("moment of current pdf", moment_box(pdf))
ys = torch.arange(h).float(); xs_ = torch.arange(w).float()
def thresh_box(p, tau, cc=False):
    pm = p.flatten(1).max(1).values[:, None, None]
    mask = p >= tau * pm
    if cc:  # connected component (4-neighbour) of the argmax by iterated dilation
        seed = torch.zeros_like(mask); a = p.flatten(1).argmax(1)
        seed.view(len(p), -1)[torch.arange(len(p)), a] = True
        for _ in range(h + w):
            grown = F.max_pool2d(seed[:, None].float(), 3, 1, 1)[:, 0].bool() & mask
            if torch.equal(grown, seed): break
            seed = grown
        mask = seed
    rows = mask.any(2); cols = mask.any(1)
    y0 = rows.float().argmax(1); y1 = h - rows.flip(1).float().argmax(1)
    x0 = cols.float().argmax(1); x1 = w - cols.flip(1).float().argmax(1)
    return torch.stack([x0 / w, y0 / h, x1 / w, y1 / h], 1).float()
for src, p in (("softmax", torch.softmax(z.flatten(1), 1).view_as(z)), ("pdf", pdf)):
    for tau in (0.1, 0.2, 0.3, 0.5):
        rep(f"{src} thr{tau}", thresh_box(p, tau))
        rep(f"{src} thr{tau} cc", thresh_box(p, tau, True))
b = thresh_box(pdf, 0.2, True)
c = lambda q: torch.stack([(q[:, 0] + q[:, 2]) / 2, (q[:, 1] + q[:, 3]) / 2], 1)
sz = lambda q: torch.stack([q[:, 2] - q[:, 0], q[:, 3] - q[:, 1]], 1)
d = (c(b) - c(B)) * 128
print("centre offset px mean", d.mean(0).tolist(), "abs median", d.abs().median(0).values.tolist())
print("size ratio median", (sz(b) / sz(B)).median(0).values.tolist(), "true size px median", (sz(B) * 128).median(0).values.tolist())
mb = moment_box(pdf)
print("moment(pdf) centre offset abs median", ((c(mb) - c(B)) * 128).abs().median(0).values.tolist())
for scale in (1.0, 1.3, 1.6, 2.0):
    cc, ss = c(b), sz(b) * scale
    bb = torch.cat([cc - ss / 2, cc + ss / 2], 1).clamp(0, 1)
    rep(f"thr0.2cc x{scale}", bb)
# weighted centre + fixed size
p = pdf
ysv = (torch.arange(h).float() + .5) / h; xsv = (torch.arange(w).float() + .5) / w
for side in (0.2, 0.25, 0.3):
    am = p.flatten(1).argmax(1); cy, cx = (am // w + 0.5) / h, (am % w + 0.5) / w
    bb = torch.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], 1).clamp(0, 1)
    rep(f"argmax fixed side {side}", bb)
print("---- aligned (score map sampled at the cell centres)")
wgt = 7 / 16
def align(s):
    s = torch.cat([s, s[:, -1:]], 1); s = (1 - wgt) * s[:, :-1] + wgt * s[:, 1:]
    s = torch.cat([s, s[:, :, -1:]], 2); return (1 - wgt) * s[:, :, :-1] + wgt * s[:, :, 1:]
pdf2 = sc.pdf_from_scores(align(s))  # = Scorer.align at stride 8 on a 16x16 map (cell_centre_weights)
print("aligned pdf object mass", object_mass(pdf2, B).mean().item())
b2 = thresh_box(pdf2, 0.2, True)
print("aligned centre offset mean", ((c(b2) - c(B)) * 128).mean(0).tolist())
for tau in (0.1, 0.2, 0.3):
    rep(f"aligned pdf thr{tau} cc", thresh_box(pdf2, tau, True))
rep("aligned moment pdf", moment_box(pdf2))
