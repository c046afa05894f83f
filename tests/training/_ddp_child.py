"""One rank of the DDP test (started by `torchrun --nproc_per_node 2 --standalone`): gmp (or the training stage
named in argv[2], e.g. movement) to 80% then a distilled finetune on the toy task, then a forced mask drift on
rank 1 that `resync_masks` must repair. Each rank writes its masks and weights (safetensors) and a small JSON to
the folder given as argv[1]."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parent))

import prunekit  # noqa: E402
from prunekit.training import distributed  # noqa: E402
from prunekit.training.finetune_loop import resync_masks  # noqa: E402
from _gmp_toy import toy_data, toy_model  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

out = Path(sys.argv[1])
METHOD = sys.argv[2] if len(sys.argv) > 2 else "gmp"
torch.manual_seed(1000 + int(__import__("os").environ["RANK"]))  # ranks start from different weights on purpose
model = toy_model()
if int(__import__("os").environ["RANK"]) == 1:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
recipe = {"stages": [
    {"method": METHOD, "sparsity": 0.8, "epochs": 2, "batch_size": 16, "lr": 3e-3, "checkpoint_every": 5,
     "checkpoint_dir": str(out / "ckpt")},
    {"method": "finetune", "epochs": 1, "batch_size": 16, "distill": {"temperature": 2}},
]}
report = prunekit.prune(model, recipe, torch.zeros(2, 1, 8, 8), data=toy_data())
rank = distributed.rank()
tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
save_file(tensors, str(out / f"rank{rank}.safetensors"))

masks = [m for m in model.modules() if isinstance(m, prunekit.masks.KeepMask)]
if rank == 1:
    masks[0].mask[0, 0, 0, 0] = ~masks[0].mask[0, 0, 0, 0]  # a drifted mask on one rank only
drifted = resync_masks(model, None)
save_file({f"{i}": m.mask.clone() for i, m in enumerate(masks)}, str(out / f"resynced{rank}.safetensors"))
info = {"rank": rank, "world": distributed.world_size(), "drifted": drifted,
        "notes": report.stages[0]["notes"] + report.stages[1]["notes"]}
(out / f"rank{rank}.json").write_text(json.dumps(info))
torch.distributed.destroy_process_group()
