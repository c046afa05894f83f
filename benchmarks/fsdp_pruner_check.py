"""FSDP2 + prunekit Pruner on 2 CPU processes (gloo): masks attached before fully_shard, Pruner.step inside unshard."""
import tempfile, traceback
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn


def run(rank, world, init):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from prunekit.training.pruner import Pruner
    from prunekit.masks import current_mask
    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5))
    pruner = Pruner(model, {"sparsity": 0.8, "protect_first": False, "protect_last": False}, total_steps=20)
    pruner.prepare()                                    # masks first: fully_shard then shards `original`
    units = [model[0], model[2], model[4]]
    for u in units:
        fully_shard(u, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    out = {}
    try:
        gen = torch.Generator().manual_seed(1)
        for step in range(1, 21):
            x = torch.randn(8, 8, generator=gen)[rank::world]
            y = torch.randint(0, 4, (8,), generator=gen)[rank::world]
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step(); opt.zero_grad()
            for u in units:
                u.unshard()                             # full weights readable: the Pruner scores them
            pruner.step(step)
            for u in units:
                u.reshard()
            with torch.no_grad():                       # zero this rank's shard of the pruned entries
                for u in units:
                    p = u.parametrizations.weight.original
                    local = p.to_local(); start = rank * -(-p.shape[0] // world)  # torch.chunk on dim 0
                    local.masked_fill_(~current_mask(u)[start:start + local.shape[0]], 0)
        out["sparsity"] = [round(1 - current_mask(u).float().mean().item(), 3) for u in units]
        masks = torch.cat([current_mask(u).flatten() for u in units]).to(torch.uint8)
        gathered = [torch.empty_like(masks) for _ in range(world)]
        dist.all_gather(gathered, masks)
        out["masks_identical"] = all(torch.equal(g, gathered[0]) for g in gathered)
        full = [u.parametrizations.weight.original.full_tensor() for u in units]
        out["pruned_stored_zero"] = all(bool((f[~current_mask(u)] == 0).all()) for f, u in zip(full, units))
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        traceback.print_exc()
    print(rank, out, flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(run, args=(2, "file://" + tempfile.mktemp()), nprocs=2)
