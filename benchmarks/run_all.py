"""Run every benchmark with its default arguments (about 20 minutes on a 2-core machine)."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

for script in ("model_sizes.py", "bench_synth.py", "bench_dataset.py", "bench_validate.py", "bench_train.py"):
    print(f"== {script}", flush=True)
    subprocess.run([sys.executable, str(HERE / script)], check=True)
