"""A Keras-like model summary, derived by tracing the model: layers, shapes, parameters, FLOPs.

The rows come from a trace of `model.apply` on a single abstract image: `nn.intercept_methods` records every
submodule call (name, type, shapes, variables), and the same trace's jaxpr supplies the operations that run between
submodules (ReLU, max pooling, flatten). The interceptor drops a marker equation into the jaxpr where each layer
starts and ends, so layers and in-between operations come out in the order the model runs them. A second trace
with two images tells which axis of each shape is the batch.
"""

import dataclasses
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.extend import core as jax_core

log = logging.getLogger(__name__)

BATCH = 1  # trace one image, so every count is per image
IMAGE_SHAPE = (28, 28, 1)
FLOPS_PER_MULTIPLY_ADD = 2
BYTES_PER_FLOAT32 = 4
BYTES_PER_MB = 2**20  # Keras' "MB" in model.summary()
_ENTER_MARK = "mnist_jax_summary_enter"  # named scopes of the marker equations
_EXIT_MARK = "mnist_jax_summary_exit"

# Operations between layers that readers know by another name: function or primitive name -> type shown.
OPERATION_KINDS = {
    "relu": "ReLU", "relu6": "ReLU6", "gelu": "GELU", "silu": "SiLU", "sigmoid": "Sigmoid", "tanh": "Tanh",
    "softmax": "Softmax", "log_softmax": "LogSoftmax", "reduce_window_max": "MaxPool", "reshape_max_pool": "MaxPool",
    "reduce_window_sum": "SumPool", "convert_element_type": "Cast", "squeeze": "Squeeze", "transpose": "Transpose",
}


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """One row of the summary: a Flax submodule call, or an operation between submodules."""

    name: str  # module path ("Conv_0") or a numbered operation ("relu_0")
    kind: str  # the module class ("Conv", "Dense", "Dropout") or operation ("ReLU", "MaxPool", "Flatten")
    input_shape: tuple[int, ...]  # traced with a batch of BATCH images
    output_shape: tuple[int, ...]
    params: int = 0  # all variables of the layer (trainable or not)
    trainable_params: int = 0  # the layer's "params" collection
    flops: int = 0  # 2 per multiply-add of Conv and Dense kernels, per image
    is_module: bool = True  # False for an operation between submodules
    input_batch_axis: int | None = 0  # where the batch is in each shape (channels-first layers carry it second)
    output_batch_axis: int | None = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)


def summarize(model: nn.Module) -> list[LayerInfo]:
    """Trace `model` on one abstract image and return its layers and in-between operations in execution order."""
    variables = abstract_variables(model)
    rows = _traced_rows(model, variables, BATCH)
    # A second trace, one image wider, shows which axis of every shape is the batch.
    wider = _traced_rows(model, variables, BATCH + 1)
    return [dataclasses.replace(row, input_batch_axis=_batch_axis(row.input_shape, other.input_shape),
                                output_batch_axis=_batch_axis(row.output_shape, other.output_shape))
            for row, other in zip(rows, wider, strict=True)]


def _traced_rows(model: nn.Module, variables: Any, batch: int) -> list[LayerInfo]:
    recorder = _LayerRecorder()

    def apply_recorded(variables, images):
        with nn.intercept_methods(recorder):
            return model.apply(variables, images, train=False)

    jaxpr = jax.make_jaxpr(apply_recorded)(variables, _abstract_images(batch))
    return _in_execution_order(recorder.layers, jaxpr.jaxpr.eqns)


def _batch_axis(shape: tuple[int, ...], wider_shape: tuple[int, ...]) -> int | None:
    grown = [axis for axis, (size, wider) in enumerate(zip(shape, wider_shape)) if size != wider]
    return grown[0] if len(grown) == 1 else None


def abstract_variables(model: nn.Module) -> Any:
    """All of the model's variable collections as shapes and dtypes, without computing anything."""
    return jax.eval_shape(model.init, jax.random.key(0), _abstract_images())


def xla_flops(model: nn.Module) -> float | None:
    """XLA's own FLOP count for one image through the compiled model (None if the backend gives none)."""
    compiled = jax.jit(lambda variables, images: model.apply(variables, images, train=False)).lower(
        abstract_variables(model), _abstract_images()).compile()
    cost = compiled.cost_analysis()
    if isinstance(cost, list):  # older JAX versions return one dict per device program
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def summary_totals(rows: Iterable[LayerInfo]) -> dict[str, Any]:
    """Total and trainable parameters, their float32 size in MB, and FLOPs per image."""
    rows = list(rows)
    total = sum(row.params for row in rows)
    trainable = sum(row.trainable_params for row in rows)
    return {"total_params": total, "trainable_params": trainable, "non_trainable_params": total - trainable,
            "params_mb": total * BYTES_PER_FLOAT32 / BYTES_PER_MB, "flops_per_image": sum(row.flops for row in rows)}


def format_summary(rows: list[LayerInfo], title: str | None = None, xla_flops: float | None = None) -> str:
    """A Keras-like text table: Layer (type), Output shape, Params, FLOPs, then the totals."""
    header = ("Layer (type)", "Output shape", "Params", "FLOPs")
    cells = [(f"{row.name} ({row.kind})", format_shape(row.output_shape, row.output_batch_axis), f"{row.params:,}",
              f"{row.flops:,}") for row in rows]
    widths = [max(len(line[column]) for line in [header, *cells]) for column in range(len(header))]
    rule = "=" * (sum(widths) + 3 * (len(widths) - 1))
    lines = [f'Model: "{title}"'] if title else []
    lines += [_table_line(header, widths), rule, *(_table_line(cell, widths) for cell in cells), rule]
    lines += _total_lines(summary_totals(rows), xla_flops)
    return "\n".join(lines)


def format_shape(shape: tuple[int, ...], batch_axis: int | None = 0) -> str:
    """A shape as Keras prints it, the batch dimension shown as None (any batch size)."""
    dims = ["None" if axis == batch_axis else str(size) for axis, size in enumerate(shape)]
    return f"({', '.join(dims)}{',' if len(dims) == 1 else ''})"


def _table_line(cells: tuple[str, ...], widths: list[int]) -> str:
    """Left-align the first two columns (names, shapes) and right-align the numbers."""
    aligned = [cell.ljust(width) if column < 2 else cell.rjust(width)
               for column, (cell, width) in enumerate(zip(cells, widths))]
    return "   ".join(aligned)


def _total_lines(totals: dict[str, Any], xla_flops: float | None) -> list[str]:
    size = totals["params_mb"]
    non_trainable_mb = totals["non_trainable_params"] * BYTES_PER_FLOAT32 / BYTES_PER_MB
    trainable_mb = size - non_trainable_mb
    lines = [f"Total params: {totals['total_params']:,} ({size:.2f} MB as float32)",
             f"Trainable params: {totals['trainable_params']:,} ({trainable_mb:.2f} MB)",
             f"Non-trainable params: {totals['non_trainable_params']:,} ({non_trainable_mb:.2f} MB)",
             f"FLOPs per image (2 per multiply-add in Conv and Dense): {totals['flops_per_image']:,}"]
    if xla_flops is not None:
        lines.append(f"FLOPs per image by XLA's cost analysis (adds biases, activations, pooling): {xla_flops:,.0f}")
    return lines


class _LayerRecorder:
    """An `nn.intercept_methods` interceptor that records the outermost submodule calls as LayerInfo rows."""

    def __init__(self):
        self.layers: list[LayerInfo] = []
        self._open_paths: list[tuple[str, ...]] = []  # modules whose __call__ is running, outermost first
        self._layer_flops = 0
        self._seen_paths: set[tuple[str, ...]] = set()
        self._unfolding: set[tuple[str, ...]] = set()  # fused layers running as the layers they fuse

    def __call__(self, next_fun: Callable, args: tuple, kwargs: dict, context: Any) -> Any:
        module = context.module
        if module.path == () or context.method_name != "__call__":
            return next_fun(*args, **kwargs)  # the model itself, or a helper method: not a layer of its own
        if hasattr(module, "unfused") and module.path not in self._unfolding:
            # A fused layer (layers.ConvMaxPool) is listed as the layers it fuses: its `unfused` form runs instead,
            # whose super().__call__ becomes the layer's row, as the class it extends ("Conv").
            self._unfolding.add(module.path)
            try:
                return module.unfused(*args, **kwargs)
            finally:
                self._unfolding.discard(module.path)
        outermost = not self._open_paths
        reentered = module.path in self._open_paths  # e.g. a subclass calling super().__call__
        if outermost:
            _mark(_ENTER_MARK)
            self._layer_flops = 0
        self._open_paths.append(module.path)
        try:
            outputs = next_fun(*args, **kwargs)
        finally:
            self._open_paths.pop()
        if not reentered:
            self._layer_flops += _kernel_flops(module, outputs)
        if outermost:
            _mark(_EXIT_MARK)
            first_call = module.path not in self._seen_paths  # a shared layer's parameters count once
            self._seen_paths.add(module.path)
            kind = type(module).__bases__[0].__name__ if module.path in self._unfolding else type(module).__name__
            self.layers.append(_module_row(module, kind, args, outputs, self._layer_flops, first_call))
        return outputs


def _mark(scope: str) -> None:
    """Leave an equation in the jaxpr under a recognisable name; it computes nothing the model uses."""
    with jax.named_scope(scope):
        jax.lax.optimization_barrier(jnp.zeros((), jnp.int8))


def _module_row(module: nn.Module, kind: str, args: tuple, outputs: Any, flops: int,
                count_params: bool) -> LayerInfo:
    variables = module.variables if count_params else {}
    return LayerInfo(name="/".join(module.path), kind=kind,
                     input_shape=_first_shape(args), output_shape=_first_shape(outputs),
                     params=_size(variables), trainable_params=_size(variables.get("params", {})), flops=flops)


def _kernel_flops(module: nn.Module, outputs: Any) -> int:
    """2 x output elements x kernel inputs per output, for layers with a kernel (Conv, Dense); others count 0."""
    kernel = module.variables.get("params", {}).get("kernel")
    if kernel is None:
        return 0
    inputs_per_output = kernel.size // kernel.shape[-1]  # (kh, kw, in, out) or (in, out)
    return FLOPS_PER_MULTIPLY_ADD * outputs.size // BATCH * inputs_per_output


def _first_shape(tree: Any) -> tuple[int, ...]:
    arrays = [leaf for leaf in jax.tree.leaves(tree) if hasattr(leaf, "shape")]
    return tuple(arrays[0].shape) if arrays else ()


def _size(tree: Any) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(tree))


def _in_execution_order(layers: list[LayerInfo], eqns: list[Any]) -> list[LayerInfo]:
    """Interleave the recorded layers with the equations that run outside any layer."""
    if sum(_mark_of(eqn) == _ENTER_MARK for eqn in eqns) != len(layers):
        log.warning("Layer markers are hidden inside a transform; the summary lists layers without operations.")
        return layers
    rows, pending_layers, inside_layer, counts = [], iter(layers), False, Counter()
    for eqn in eqns:
        mark = _mark_of(eqn)
        if mark == _ENTER_MARK:
            rows.append(next(pending_layers))
        elif mark is None and not inside_layer and (row := _operation_row(eqn, counts)):
            rows.append(row)
        inside_layer = mark == _ENTER_MARK or (inside_layer and mark != _EXIT_MARK)
    return rows


def _mark_of(eqn: Any) -> str | None:
    scope = str(eqn.source_info.name_stack).rsplit("/", 1)[-1]
    return scope if scope in (_ENTER_MARK, _EXIT_MARK) else None


def _operation_row(eqn: Any, counts: Counter) -> LayerInfo | None:
    """A row for one equation between layers; None for equations on constants only (no data flows in)."""
    data_inputs = [var for var in eqn.invars if not isinstance(var, jax_core.Literal)]
    if not data_inputs or not eqn.outvars:
        return None
    input_shape, output_shape = tuple(data_inputs[0].aval.shape), tuple(eqn.outvars[0].aval.shape)
    kind = _operation_kind(eqn, input_shape, output_shape)
    name = f"{_snake_case(kind)}_{counts[kind]}"
    counts[kind] += 1
    return LayerInfo(name=name, kind=kind, input_shape=input_shape, output_shape=output_shape, is_module=False)


def _operation_kind(eqn: Any, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> str:
    if eqn.primitive.name == "reshape":
        keeps_batch = bool(input_shape) and output_shape[:1] == input_shape[:1]
        return "Flatten" if keeps_batch and len(output_shape) == 2 else "Reshape"
    name = _function_name(eqn) or eqn.primitive.name
    return OPERATION_KINDS.get(name, name)


def _function_name(eqn: Any) -> str | None:
    """The Python function behind a jit or custom_jvp equation (e.g. "relu"), if JAX kept it."""
    if isinstance(eqn.params.get("name"), str):
        return eqn.params["name"]
    debug_info = getattr(eqn.params.get("call_jaxpr"), "jaxpr", None)
    debug_info = getattr(debug_info, "debug_info", None)
    return getattr(debug_info, "func_name", None)


def _snake_case(kind: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z][a-z])", "_", kind).lower()


def _abstract_images(batch: int = BATCH) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((batch, *IMAGE_SHAPE), jnp.float32)

