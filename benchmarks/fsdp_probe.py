import os, sys, tempfile, traceback
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

def run(rank, world, init):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.device_mesh import init_device_mesh
    from prunekit.masks import attach_mask, current_mask
    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    keep = model[0].weight.abs() > model[0].weight.abs().median()
    attach_mask(model[0], keep)
    out = {}
    try:
        for m in (model[0], model[2]):
            fully_shard(m, mesh=mesh)
        fully_shard(model, mesh=mesh)
        out["shard"] = "ok"
        p = model[0].parametrizations.weight.original
        out["orig_type"] = type(p).__name__ + str(tuple(p.to_local().shape) if hasattr(p, "to_local") else "")
        out["mask_type"] = type(model[0].parametrizations.weight[0].mask).__name__
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        x = torch.randn(4, 8); y = torch.randint(0, 4, (4,))
        loss = nn.functional.cross_entropy(model(x), y); loss.backward(); opt.step()
        out["step"] = "ok"
        try:
            w = model[0].weight
            out["weight_outside_fwd"] = type(w).__name__
        except Exception as e:
            out["weight_outside_fwd"] = f"ERR {type(e).__name__}: {str(e).splitlines()[0][:150]}"
        try:
            model[0].unshard(); w = model[0].weight; out["weight_after_unshard"] = type(w).__name__ + str(tuple(w.shape)); model[0].reshard()
        except Exception as e:
            out["weight_after_unshard"] = f"ERR {type(e).__name__}: {str(e).splitlines()[0][:150]}"
        full = p.full_tensor()
        out["pruned_zero_eff"] = bool((full * keep)[~keep].abs().sum() == 0)
        # mask update: new mask from the full weight (all ranks compute, identical), set the buffer in place
        new = keep & (full.abs() > full.abs()[keep].median())
        model[0].parametrizations.weight[0].mask.copy_(new)
        loss = nn.functional.cross_entropy(model(x), y); loss.backward(); opt.step()
        out["after_mask_update"] = "ok"
        from torch.distributed.tensor import DTensor
        local = p.to_local(); rows = local.shape[0]
        m_local = model[0].parametrizations.weight[0].mask[rank*rows:(rank+1)*rows]
        with torch.no_grad(): local.masked_fill_(~m_local, 0)
        out["local_zero"] = bool((p.full_tensor()[~new] == 0).all())
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, StateDictOptions
        full_sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        out["full_sd"] = type(full_sd["0.parametrizations.weight.original"]).__name__ + str(tuple(full_sd["0.parametrizations.weight.original"].shape)) if full_sd else "empty on this rank"
        sd = model.state_dict()
        out["sd_mask_type"] = type(sd["0.parametrizations.weight.0.mask"]).__name__
        out["sd_orig_type"] = type(sd["0.parametrizations.weight.original"]).__name__
        try:
            attach_mask(model[2], torch.ones(4, 16, dtype=torch.bool)); model(x)
            out["attach_after_shard"] = "ok"
        except Exception as e:
            out["attach_after_shard"] = f"ERR {type(e).__name__}: {str(e).splitlines()[0][:150]}"
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        traceback.print_exc()
    print(rank, out, flush=True)
    dist.destroy_process_group()

if __name__ == "__main__":
    f = tempfile.mktemp()
    mp.spawn(run, args=(2, "file://" + f), nprocs=2)
