"""The container images the components run in: the CPU image, and the CUDA image for GPU steps.

Both are built from this folder's Dockerfiles with the same pinned install as the README. The tags
follow the package version; ``CLOUDLULC_IMAGE`` / ``CLOUDLULC_CUDA_IMAGE`` override them when
compiling pipelines for another registry (the committed YAML uses the defaults).
"""

from __future__ import annotations

import os

from cloudlulc import __version__

CPU_IMAGE = os.environ.get("CLOUDLULC_IMAGE", f"ghcr.io/cloudlulc/cloudlulc:{__version__}")
CUDA_IMAGE = os.environ.get("CLOUDLULC_CUDA_IMAGE", f"ghcr.io/cloudlulc/cloudlulc-cuda:{__version__}")
