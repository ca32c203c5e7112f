"""A real Triton (nvidia-pytriton) whose model-repository protocol needs a key.

Usage: ``python restricted_triton.py PORT KEY``.

Run as its own process by tests/test_serving_restricted.py; serves until SIGTERM.
"""

import signal
import sys

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

from cloudlulc.serving.local_triton import _python_backend_environment


@batch
def echo(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"y": x}


def main() -> None:
    port, key = int(sys.argv[1]), sys.argv[2]
    _python_backend_environment()
    config = TritonConfig(grpc_address="127.0.0.1", http_address="127.0.0.1", grpc_port=port, http_port=port + 1,
                          metrics_port=port + 2)  # fmt: skip
    security = TritonSecurityConfig(access_token=key, restricted_endpoints=["model-repository"])
    with Triton(config=config, security_config=security) as triton:
        triton.bind(model_name="echo", infer_func=echo, inputs=[Tensor(name="x", dtype=np.float32, shape=(-1,))],
                    outputs=[Tensor(name="y", dtype=np.float32, shape=(-1,))])  # fmt: skip
        signal.signal(signal.SIGTERM, lambda *_: triton.stop())
        triton.serve()


if __name__ == "__main__":
    main()
