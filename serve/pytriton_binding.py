"""bit-serve's two models bound to a Triton (PyTriton's), not yet started: its addresses and ports, the model
configs (batching, inputs, outputs), the model store patched, and its command line locked down.

Imports PyTriton: it lives in bit-serve's own environment (numpy < 2), see serve_cli.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonLifecyclePolicy, TritonSecurityConfig

from ..engine.classifier import Classifier
from ..engine.errors import BitError
from . import pytriton_patches
from .classifier_models import ClassifierModels
from .serve_options import ServeOptions, check_model_name
from .triton_models import IMAGE_INPUT, IMAGE_SUFFIX

# Triton's own time to stop (--exit-timeout-secs), shared by its steps: waiting for open HTTP connections to close
# (an idle keep-alive client holds it that long; requests still running on them finish meanwhile), then for
# in-flight requests and finalizing the models (about 2.5 s here). When the connections took it all, Triton exits
# without finalizing, and pytriton_lifecycle._stop ends the stubs and removes what they left.
EXIT_TIMEOUT_S = 8
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes, the last one a NUL


def check_socket_paths(workspace: str, options: ServeOptions) -> None:
    """PyTriton's Unix sockets live in the workspace, named after the models; a socket path is at most 107 bytes."""
    longest = os.path.join(workspace, f"{options.name}{IMAGE_SUFFIX}_0_{options.image_workers - 1}-server.sock")
    if len(os.fsencode(longest)) > SOCKET_PATH_MAX:
        raise BitError(
            f"the workspace path is too long for Triton's sockets ({longest!r} is over {SOCKET_PATH_MAX} bytes); "
            "choose a shorter --workspace or --name"
        )


class _Instance:
    """One model instance's callable. PyTriton keys per-instance state by the callable, so each is its own object."""

    def __init__(self, infer: Callable):
        self.infer = infer

    def __call__(self, requests):
        return self.infer(requests)


def create_triton(
    clf: Classifier, options: ServeOptions, workspace: str, output: pytriton_patches.TritonOutput
) -> tuple[Triton, list]:
    """A Triton (not started) with both models bound, its model store in `workspace` (a directory that does not
    exist yet) written and patched, its command line locked down (serve/pytriton_patches.py); returns it and the
    model names. `options` are settled (serve_options.settled): a name and a max batch."""
    name = check_model_name(options.name)
    models = ClassifierModels(clf)
    spec = clf.spec
    config = TritonConfig(
        allow_http=options.http,
        http_address=options.host,
        grpc_address=options.host,
        metrics_address=options.host,
        http_port=options.http_port,
        grpc_port=options.grpc_port,
        metrics_port=options.metrics_port,
        log_verbose=options.log_verbose,
        exit_timeout_secs=EXIT_TIMEOUT_S,
    )
    triton = Triton(
        config=config,
        workspace=workspace,
        # the model store is written at bind time and loaded when Triton starts: no model-control API needed
        triton_lifecycle_policy=TritonLifecyclePolicy(launch_triton_on_startup=True, local_model_store=True),
        security_config=TritonSecurityConfig(access_token=None, restricted_endpoints=[]),  # lock_down's instead
    )
    logits = Tensor(name="logits", dtype=np.float32, shape=(len(models.label_names),))
    triton.bind(
        model_name=name,
        infer_func=_Instance(models.infer_float),
        inputs=[Tensor(name=spec.name, dtype=np.float32, shape=(spec.resolution, spec.resolution, 3))],
        outputs=[logits],
        config=ModelConfig(
            max_batch_size=options.max_batch,
            batcher=DynamicBatcher(
                max_queue_delay_microseconds=options.max_queue_delay_us,
                preferred_batch_size=[options.max_batch],
            ),
        ),
    )
    triton.bind(
        model_name=name + IMAGE_SUFFIX,
        # Several instances instead of a batcher: see serve/classifier_models.py.
        infer_func=[_Instance(models.infer_images) for _ in range(options.image_workers)],
        inputs=[Tensor(name=IMAGE_INPUT, dtype=np.bytes_, shape=(1,))],
        outputs=[logits, Tensor(name="classes", dtype=np.bytes_, shape=(models.top_k,))],
        config=ModelConfig(max_batch_size=options.max_batch, batcher=None),
    )
    store = pytriton_patches.model_store(workspace)
    for model, reshape in ((name, pytriton_patches.float_input_reshape(spec.resolution)), (name + IMAGE_SUFFIX, None)):
        pytriton_patches.patch_proxy_files(store / model)
        pytriton_patches.edit_model_config(store / model, reshape)
    pytriton_patches.lock_down(triton._triton_server_config)
    pytriton_patches.prepare_server(triton, output, options.log_verbose)
    return triton, [name, name + IMAGE_SUFFIX]
