#!/bin/sh
# The one pinned install of CloudLULC, shared by the Makefile (dev) and both images (cpu, cuda), so that
# what `make test` checks is, by construction, what the pipeline steps run.
#
#   components/install.sh VENV_DIR [dev|cpu|cuda]
#
#   dev   torch==2.13.0 from the configured index (the local CPU wheel on development machines),
#         then the package editable with its dev, pipelines and server extras: `make` (.venv).
#   cpu   torch==2.13.0+cpu from the PyTorch CPU index, then the package with the pipelines and server
#         extras (pipeline steps; the MLflow server on PostgreSQL), not editable:
#         components/Dockerfile.
#   cuda  torch==2.13.0 from PyPI (it brings the CUDA 13 libraries), then the package with the pipelines
#         extra, then tensorrt==$TENSORRT_VERSION (engine builds; must match the TensorRT of the Triton image):
#         components/Dockerfile.cuda.
#
# Every step passes constraints.txt, so torch's own dependencies and the package's resolve to the same
# pins in all three profiles. Environment:
#   PYTHON                  interpreter that creates the venv (default python3)
#   CLOUDLULC_TORCH_INDEX   extra index for the cpu profile's torch (default https://download.pytorch.org/whl/cpu;
#                           empty: only the configured indexes / find-links, e.g. a local wheel)
#   TENSORRT_VERSION        required by the cuda profile (the Dockerfile passes its build argument)
#   CLOUDLULC_TENSORRT_INDEX extra index for the tensorrt wheels (default https://pypi.nvidia.com; the PyPI
#                           tensorrt-cu13-libs is a stub that downloads from there at build time anyway)
set -eu

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 VENV_DIR [dev|cpu|cuda]" >&2
    exit 2
fi
venv=$1
profile=${2:-dev}
root=$(cd "$(dirname "$0")/.." && pwd)
constraints="$root/constraints.txt"
torch_version=2.13.0

case $profile in
    dev | cpu | cuda) ;;
    *)
        echo "$0: unknown profile '$profile' (expected dev, cpu or cuda)" >&2
        exit 2
        ;;
esac
if [ "$profile" = cuda ] && [ -z "${TENSORRT_VERSION:-}" ]; then
    echo "$0: the cuda profile needs TENSORRT_VERSION (the TensorRT of the Triton image that serves the plans)" >&2
    exit 2
fi

if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
pip() {
    "$venv/bin/python" -m pip "$@"
}

# 1. torch, exactly 2.13.0: any looser spec lets pip pick a newer torch (gigabytes of CUDA packages).
case $profile in
    dev)
        pip install -q -c "$constraints" "torch==$torch_version"
        ;;
    cpu)
        torch_index=${CLOUDLULC_TORCH_INDEX-https://download.pytorch.org/whl/cpu}
        if [ -n "$torch_index" ]; then
            pip install -q -c "$constraints" --extra-index-url "$torch_index" "torch==$torch_version+cpu"
        else
            pip install -q -c "$constraints" "torch==$torch_version+cpu"
        fi
        ;;
    cuda)
        pip install -q -c "$constraints" "torch==$torch_version"
        ;;
esac

# 2. the package, every version pinned by constraints.txt (from the repository root: pyproject.toml).
cd "$root"
case $profile in
    dev) pip install -q -c "$constraints" -e '.[dev,pipelines,server]' ;;
    cpu) pip install -q -c "$constraints" '.[pipelines,server]' ;;
    cuda) pip install -q -c "$constraints" '.[pipelines]' ;;
esac

# 3. the TensorRT Python package for engine builds (CUDA image only).
if [ "$profile" = cuda ]; then
    trt_index=${CLOUDLULC_TENSORRT_INDEX-https://pypi.nvidia.com}
    if [ -n "$trt_index" ]; then
        pip install -q -c "$constraints" --extra-index-url "$trt_index" "tensorrt==$TENSORRT_VERSION"
    else
        pip install -q -c "$constraints" "tensorrt==$TENSORRT_VERSION"
    fi
fi

# 4. the environment must import what every stage needs, and be consistent.
"$venv/bin/python" -c "import cloudlulc, components, pipelines, torch, rasterio, great_expectations, mlflow, kfp"
if [ "$profile" = cuda ]; then
    # metadata only: loading TensorRT's libraries needs a GPU driver, which an image build does not have
    "$venv/bin/python" -c "import importlib.metadata as m; assert m.version('tensorrt') == '$TENSORRT_VERSION'"
fi
pip check
echo "installed CloudLULC ($profile) into $venv"
