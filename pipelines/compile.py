"""Compile the pipelines to the YAML the Kubeflow UI uploads; the committed copies live in ``compiled/``."""

from __future__ import annotations

import tempfile
from pathlib import Path

from kfp import compiler

from pipelines import PIPELINES

COMPILED_DIR = Path(__file__).resolve().parent / "compiled"


def compiled_path(name: str, folder: Path = COMPILED_DIR) -> Path:
    """Where pipeline ``name`` compiles to."""
    return folder / f"{name}.yaml"


def compile_pipeline(name: str, folder: Path = COMPILED_DIR) -> Path:
    """Compile one pipeline; the file is replaced only once fully written."""
    if name not in PIPELINES:
        raise KeyError(f"unknown pipeline {name!r}; choose from {', '.join(PIPELINES)}")
    folder.mkdir(parents=True, exist_ok=True)
    target = compiled_path(name, folder)
    with tempfile.NamedTemporaryFile("w", dir=folder, prefix=f".{name}.", suffix=".yaml", delete=False) as temp:
        temp_path = Path(temp.name)
    try:
        compiler.Compiler().compile(PIPELINES[name], package_path=str(temp_path))
        temp_path.replace(target)
    finally:
        temp_path.unlink(missing_ok=True)
    return target


def compile_all(folder: Path = COMPILED_DIR) -> list[Path]:
    """Compile every pipeline into ``folder``."""
    return [compile_pipeline(name, folder) for name in PIPELINES]
