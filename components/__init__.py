"""Kubeflow Pipelines v2 components: one per stage, each a thin typed face of a ``cloudlulc`` function.

A component's body only converts between Kubeflow's parameters/artifacts and the library call; the
logic lives in ``cloudlulc``. Every component runs in the CPU image, GPU steps in the CUDA image
(``components/Dockerfile``, ``components/Dockerfile.cuda``); both hold this package and the library.

Modules: ``checks`` (parameters), ``ingest``, ``validate``, ``train``, ``gate``, ``export``,
``promote``, ``mapping``; ``parameters`` and ``runtime`` are plain helpers the bodies import at run
time. Bodies import what they use inside the function, because Kubeflow ships each body to its
container as source; and this file imports nothing, because inside a running step ``kfp.dsl`` has no
component decorator to import the component modules with.
"""
