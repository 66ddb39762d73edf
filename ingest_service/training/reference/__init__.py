"""Reference models: small torch networks trained on the real recorded data in ``data/``.

They exist to exercise the pipeline end to end on real images and sweeps (real ONNX
files, real metadata, real uncertainty), not to detect anything in production: they are
trained on a handful of frames. Train and export them with::

    python -m ingest_service.training.reference.train --out models/ [--quick]

torch is imported only in this package; the agent itself needs only onnxruntime.
"""
