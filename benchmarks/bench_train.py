"""Training throughput (patches/s) and peak memory of each architecture at a named size.

One optimizer step = forward, the full CloudLULC loss, backward, gradient clipping, AdamW. Inputs are
in-memory tensors, so the figure is the model's own cost (data loading is measured by
bench_dataset.py). On CUDA, --amp compares bf16 autocast with fp32.

Usage: python benchmarks/bench_train.py [--size tiny] [--crop 256] [--batch 8] [--steps 10] [--device cpu]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from common import save

from cloudlulc.models import ARCHITECTURES, build_model, model_config
from cloudlulc.training.losses import CloudLULCLoss


def measure(architecture: str, args: argparse.Namespace, autocast: bool) -> dict[str, float]:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(model_config(architecture, args.size)).to(device).train()
    loss_function = CloudLULCLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    optical = torch.rand(args.batch, 12, args.crop, args.crop, device=device)
    sar = torch.rand(args.batch, 2, args.crop, args.crop, device=device)
    labels = torch.randint(0, 6, (args.batch, args.crop, args.crop), device=device)
    mask = torch.randint(0, 4, (args.batch, args.crop, args.crop), device=device)

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            terms = loss_function(model.forward_features(optical, sar), labels, clear=optical, cloud_mask=mask)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    for _ in range(2):  # warm-up
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {"patches_per_s": round(args.batch * args.steps / seconds, 2)}
    if device.type == "cuda":
        result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="also measure bf16 autocast (CUDA)")
    parser.add_argument("--architectures", nargs="*", default=list(ARCHITECTURES))
    args = parser.parse_args()
    rows = {}
    for architecture in args.architectures:
        rows[architecture] = measure(architecture, args, autocast=False)
        if args.amp:
            rows[f"{architecture} (bf16)"] = measure(architecture, args, autocast=True)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    command = (
        f"python benchmarks/bench_train.py --size {args.size} --crop {args.crop} --batch {args.batch} "
        f"--steps {args.steps} --device {args.device}{' --amp' if args.amp else ''}"
    )
    save(
        f"train_{args.size}_{args.device.split(':')[0]}",
        {
            "command": command,
            "threads": torch.get_num_threads(),
            "models": rows,
            "peak_process_memory_gib": round(peak_rss, 2),
        },
    )


if __name__ == "__main__":
    main()
