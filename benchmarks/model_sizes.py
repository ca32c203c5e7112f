"""Parameters and GFLOPs per 512 x 512 patch of every architecture at both sizes.

Usage: python benchmarks/model_sizes.py [--size 512]
"""

from __future__ import annotations

import argparse

from common import save

from cloudlulc.models import ARCHITECTURES, SIZES, build_model, gflops_per_patch, model_config, parameter_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    rows = {}
    for architecture in ARCHITECTURES:
        for size in SIZES:
            model = build_model(model_config(architecture, size))
            rows[f"{architecture}/{size}"] = {
                "parameters_millions": round(parameter_count(model) / 1e6, 2),
                f"gflops_per_{args.size}px": round(gflops_per_patch(model, args.size), 1),
            }
    save("model_sizes", {"command": f"python benchmarks/model_sizes.py --size {args.size}", "models": rows})


if __name__ == "__main__":
    main()
