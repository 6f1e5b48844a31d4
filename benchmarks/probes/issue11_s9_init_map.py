import dartok, torch
from dartok.data.registry import create_dataset
from dartok.scorer import Scorer, scores_to_pdf
from dartok.localization import object_mass
torch.set_num_threads(1)
ds = create_dataset("cluttered_fmnist", None, "test", canvas_size=128, return_box=True)
items = [ds[i] for i in range(500)]
x = torch.stack([it[0] for it in items]); b = torch.stack([torch.as_tensor(it[1]["box"], dtype=torch.float32) for it in items])
print("box area", ((b[:,2]-b[:,0])*(b[:,3]-b[:,1])).mean().item())
for stage in (None, 2):
  for seed in (0, 1):
    torch.manual_seed(seed)
    s = Scorer("mobilenetv3_small", input_size=128, stage=stage, in_chans=1, cam_classes=10).eval()
    with torch.no_grad():
        f = s.features(x); cam = s.cam(f); lg = cam.mean((2,3)); m = torch.einsum("bkhw,bk->bhw", cam, torch.softmax(lg,1))
        full = s.scores_from_features(f); fm = f.norm(dim=1)
        for name, mp in (("cam", m), ("head+cam", full), ("feat norm", fm)):
            h, w = mp.shape[-2:]; idx = mp.flatten(1).argmax(1); cy, cx = (idx // w + 0.5)/h, (idx % w + 0.5)/w
            inside = ((cx >= b[:,0]) & (cx <= b[:,2]) & (cy >= b[:,1]) & (cy <= b[:,3])).float().mean().item()
            print(stage, seed, name, (h, w), f"argmax in box {inside:.3f}", " ".join(f"g{g}:{object_mass(scores_to_pdf(mp, scale=g, activation='softmax'), b).mean().item():.3f}" for g in (1,2)))
