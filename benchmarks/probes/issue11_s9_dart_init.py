"""DART from a scorer pre-trained as a classifier (probe for issue 11)."""
import sys, json
import dartok, torch
import dartok.train.run as R
from dartok.train.config import resolve_config
ckpt, frozen, out = sys.argv[1], sys.argv[2] == "frozen", sys.argv[3]
seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
extra = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
SC = extra.pop("_scale", None); BI = extra.pop("_bias", None)
orig = R._build_model
def build(cfg, data, device):
    m = orig(cfg, data, device)
    if ckpt != "none":
        sd = torch.load(ckpt)
        sd = {k: v for k, v in sd.items() if not k.startswith("head.") and k not in ("score_scale", "score_bias")}
        missing, unexpected = m.model.patch_embed.scorer.load_state_dict(sd, strict=False)
        print("loaded scorer; missing", missing, "unexpected", unexpected, flush=True)
    if SC is not None:
        with torch.no_grad():
            m.model.patch_embed.scorer.score_scale.fill_(SC); m.model.patch_embed.scorer.score_bias.fill_(BI)
        print("contrast", SC, BI, flush=True)
    return m
R._build_model = build
scorer = {"trunk": "mobilenetv3_small", "input_size": 128, "cam_classes": 10, "trainable_trunk": not frozen, **extra}
cfg = resolve_config(canvas_size=128, epochs=5, train_samples=8000, test_samples=2000, batch_size=64, lr=1e-3,
                     warmup_epochs=1, seed=seed, model="dart_vit_micro_patch8", num_tokens=36,
                     model_kwargs={"scorer": scorer}, output=out, threads=1, progress=False)
res = dartok.train.train(cfg)
print("RESULT", res["test"], flush=True)
