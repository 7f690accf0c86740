"""Serve a classifier over HTTP: ``create_app`` builds the FastAPI app, ``resnetkit serve`` runs it.

Needs the ``serve`` extra: ``pip install 'resnetkit[serve]'`` (FastAPI, uvicorn,
python-multipart, prometheus-client); the ONNX backend also needs ``resnetkit[export]``.
"""

from resnetkit.serve.app import ApiError, ServeConfig, create_app
from resnetkit.serve.batcher import BatcherClosedError, MicroBatcher

__all__ = ["ApiError", "BatcherClosedError", "MicroBatcher", "ServeConfig", "create_app"]
