import sys, time, math
import dartok, torch, torch.nn.functional as F
from dartok.data.registry import create_dataset
from dartok.scorer import Scorer, scores_to_pdf
from dartok.localization import object_mass
torch.manual_seed(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
E = int(sys.argv[1]) if len(sys.argv) > 1 else 6
POOL = sys.argv[4] if len(sys.argv) > 4 else "avg"
STAGE = int(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[5] != "none" else None
INP = int(sys.argv[6]) if len(sys.argv) > 6 else 128
def load(split, n):
    ds = create_dataset("cluttered_fmnist", None, split, canvas_size=128, return_box=True)
    items = [ds[i] for i in range(n)]
    return (torch.stack([it[0] for it in items]), torch.tensor([it[1]["label"] for it in items]),
            torch.stack([torch.as_tensor(it[1]["box"], dtype=torch.float32) for it in items]))
t=time.time(); xtr,ytr,btr = load("train", 8000); xte,yte,bte = load("test", 2000); print("data", time.time()-t, xtr.shape, flush=True)
s = Scorer("mobilenetv3_small", input_size=INP, stage=STAGE, in_chans=xtr.shape[1], cam_classes=10, cam_pool=POOL)
params = [p for n,p in s.named_parameters() if not n.startswith("head.")]
opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
steps = E * (8000 // 64); k = 0
for ep in range(E):
    s.train(); perm = torch.randperm(8000); t = time.time(); corr = 0
    for i in range(0, 8000 - 63, 64):
        idx = perm[i:i+64]
        lr = 1e-3 * 0.5 * (1 + math.cos(math.pi * k / steps)); k += 1
        for g in opt.param_groups: g["lr"] = lr
        feats = s.features(xtr[idx]); s.scores_from_features(feats)
        loss = s.auxiliary_loss(ytr[idx]); opt.zero_grad(); loss.backward(); opt.step()
    s.eval()
    with torch.no_grad():
        feats = s.features(xte); cam = s.cam(feats); from dartok.scorer import cam_pool_logits; logits = cam_pool_logits(cam, POOL, 5.0)
        top1 = (logits.argmax(1) == yte).float().mean().item()*100
        m = torch.einsum("bkhw,bk->bhw", cam, torch.softmax(logits,1))
        full = s.scores_from_features(feats)
        h, w = m.shape[-2:]; idx = m.flatten(1).argmax(1); cy, cx = (idx // w + 0.5)/h, (idx % w + 0.5)/w
        inside = ((cx >= bte[:,0]) & (cx <= bte[:,2]) & (cy >= bte[:,1]) & (cy <= bte[:,3])).float().mean().item()
        ms = object_mass(scores_to_pdf(full, activation="sigmoid"), bte).mean().item()
        mx = " ".join(f"g{g}:{object_mass(scores_to_pdf(m, scale=g, activation='softmax'), bte).mean().item():.3f}" for g in (1,2,4))
    print(f"grid {m.shape[-2:]} ep {ep+1} {time.time()-t:.0f}s aux top1 {top1:.1f} argmax-in-box {inside:.3f} mass sigmoid(head+cam) {ms:.3f} softmax(cam) {mx}", flush=True)
torch.save(s.state_dict(), f"/tmp/probe/scorer_E{E}_{POOL}_s{STAGE}_i{INP}.pt")
