"""Fast, exactly equivalent forms of our CNNs' convolutions and pooling for XLA:CPU.

Why: on XLA:CPU a convolution inside a loop (our epoch is one `lax.scan`) misses the fast library path (a step of
the speedrun's network: 8x slower), while matrix products stay fast; and the gradient of `nn.max_pool`
(select_and_scatter) costs ~10 ms a batch. These forms compute the same function with the same parameters (tests
check it against the straightforward `nn.Conv` and `nn.max_pool`). `ConvMaxPool` is both at once, for the article's
CNN; the batch-last convolution serves the speedrun's small network. Outside loops the reverse holds, so programs
without one (the Predictor's) trace under `native_ops()`.
"""

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

_NATIVE_OPS = contextvars.ContextVar("native_ops", default=False)


@contextlib.contextmanager
def native_ops() -> Iterator[None]:
    """Trace `Conv`, `ConvMaxPool` and `max_pool_2x2` as XLA's own convolution and reduce_window, for programs
    without loops.

    Outside a loop those are mostly XLA:CPU's fast path (inference at batch 64 and 512: the article CNN 1.1x and
    2.3x the im2col forms, bncnn 5x and 4x; stridecnn 1.2x and 0.8x); inside one (the scanned epoch, the batched
    evaluation) they are the slow path. The same function: pooling bit for bit, the convolution within float32
    rounding (it sums in another order).
    """
    token = _NATIVE_OPS.set(True)
    try:
        yield
    finally:
        _NATIVE_OPS.reset(token)


class Conv(nn.Conv):
    """`nn.Conv` whose VALID or SAME, strided or not, case runs as im2col (shifted slices) and one matrix product.

    Same fields, parameter names, shapes and initialisation as `nn.Conv`, so checkpoints are interchangeable;
    explicit padding, dilation or feature groups, or tracing under `native_ops()`, fall back to `nn.Conv` itself.
    """

    @nn.compact
    def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
        if not _is_im2col_case(self) or _NATIVE_OPS.get():
            return super().__call__(x_BxHxWxC)
        kh, kw = self.kernel_size
        sh, sw = _pair(self.strides)
        cin = x_BxHxWxC.shape[-1]
        x, kernel, bias = self._promoted_parameters(x_BxHxWxC)
        if self.padding == "SAME":
            x = _pad_same(x, (kh, kw), (sh, sw))
        out_h, out_w = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
        # Patch features in (row, col, channel) order, the order of kernel.reshape(-1, features).
        patches = jnp.concatenate([x[:, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw, :]
                                   for i in range(kh) for j in range(kw)], -1)
        y = patches @ kernel.reshape(kh * kw * cin, self.features)
        return y + bias if bias is not None else y

    def _promoted_parameters(self, x_BxHxWxC: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        """The input, `nn.Conv`'s kernel (kh, kw, C, F) and bias (None without one), in the computation's dtype."""
        kh, kw = self.kernel_size
        shape = (kh, kw, x_BxHxWxC.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        return nn.dtypes.promote_dtype(x_BxHxWxC, kernel, bias, dtype=self.dtype)


def _is_im2col_case(conv: nn.Conv) -> bool:
    """A 2-D, VALID or SAME, undilated, ungrouped convolution: the cases im2col handles."""
    ones = (None, 1, (1, 1))
    return (conv.padding in ("VALID", "SAME") and conv.kernel_dilation in ones and conv.input_dilation in ones
            and conv.feature_group_count == 1 and len(conv.kernel_size) == 2)


def _pair(strides: Any) -> tuple[int, int]:
    """nn.Conv's strides (None, an int or a pair) as a pair."""
    if strides is None:
        return 1, 1
    return (strides, strides) if isinstance(strides, int) else tuple(strides)


def _pad_same(x_BxHxWxC: jax.Array, kernel: tuple[int, int], strides: tuple[int, int]) -> jax.Array:
    """Zero-pad rows and columns as XLA's SAME does: ceil(size / stride) outputs, the odd pixel after."""
    pads = [(0, 0)]
    for size, k, s in zip(x_BxHxWxC.shape[1:3], kernel, strides):
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    return jnp.pad(x_BxHxWxC, pads + [(0, 0)])


def max_pool_2x2(x_BxHxWxC: jax.Array) -> jax.Array:
    """2x2 max pooling, stride 2, VALID (odd trailing rows/columns dropped), as a reshape and a max.

    Rows and columns are axes 1 and 2; the first and last axes are independent, so (F, H, W, B) works as well.

    Its gradient goes to the first maximum of each window in row-major order, exactly as XLA's
    select_and_scatter (the gradient of `nn.max_pool`) does, ties included. Under `native_ops()`: `nn.max_pool`.
    """
    if _NATIVE_OPS.get():
        return nn.max_pool(x_BxHxWxC, (2, 2), strides=(2, 2), padding="VALID")
    return reshape_max_pool(x_BxHxWxC)


@jax.custom_vjp
def reshape_max_pool(x_BxHxWxC: jax.Array) -> jax.Array:
    """`max_pool_2x2` outside `native_ops()`: a reshape and a max, with its custom gradient."""
    return _windows(x_BxHxWxC).max(axis=(2, 4))


def _windows(x_BxHxWxC: jax.Array) -> jax.Array:
    """(B, H/2, 2, W/2, 2, C): each 2x2 window on axes 2 and 4."""
    b, h, w, c = x_BxHxWxC.shape
    return x_BxHxWxC[:, : h // 2 * 2, : w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c)


def _max_pool_forward(x):
    pooled = reshape_max_pool(x)
    return pooled, (x, pooled)


def _max_pool_backward(residuals, grad_BxH2xW2xC):
    x, pooled = residuals
    windows = _windows(x)
    taken = jnp.zeros(pooled.shape, bool)
    rows = []
    for row in (0, 1):
        cols = []
        for col in (0, 1):  # row-major order: the first maximum found takes the whole gradient
            first = (windows[:, :, row, :, col] == pooled) & ~taken
            taken |= first
            cols.append(jnp.where(first, grad_BxH2xW2xC, 0))
        rows.append(jnp.stack(cols, 3))  # (B, H/2, W/2, 2, C)
    b, h2, w2, c = pooled.shape
    grad_x = jnp.stack(rows, 2).reshape(b, h2 * 2, w2 * 2, c)  # (B, H/2, 2, W/2, 2, C) back to rows and columns
    return (jnp.pad(grad_x, ((0, 0), (0, x.shape[1] - h2 * 2), (0, x.shape[2] - w2 * 2), (0, 0))),)


reshape_max_pool.defvjp(_max_pool_forward, _max_pool_backward)


class ConvMaxPool(Conv):
    """`max_pool_2x2(activation(Conv(...)(x)))`: a convolution, its activation and 2x2 max pooling, as one matrix
    product and a max.

    Same fields, parameter names, shapes and initialisation as `nn.Conv`, and an `activation` (None: none), which
    must be non-decreasing (ReLU is): it is applied after pooling, on a quarter of the elements, where it gives the
    same values and gradients. Only the VALID, stride-1 case takes the fused form; others, and tracing under
    `native_ops()`, run `unfused`.
    """

    # Why: computed apart, the convolution's output (four times the pooled size) and its gradient are written, read,
    # masked and transposed several times a step, which cost the article's CNN more than its matrix products
    # (BENCHMARKS.md). Here the im2col rows come grouped by pooling window, so pooling is a max over one axis of the
    # product, its gradient a mask of the same layout, and the kernel's gradient one product patches^T @ dy. The bias
    # is added after pooling: max(y) + b rounds to the same values as max(y + b) (rounding is monotonic).

    activation: Callable[[jax.Array], jax.Array] | None = None

    @nn.compact
    def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
        fusable = _is_im2col_case(self) and self.padding == "VALID" and _pair(self.strides) == (1, 1)
        if not fusable or _NATIVE_OPS.get():
            return self.unfused(x_BxHxWxC)
        kh, kw = self.kernel_size
        cin = x_BxHxWxC.shape[-1]
        x, kernel, bias = self._promoted_parameters(x_BxHxWxC)
        patches = _pooling_patches(x, kh, kw)  # (B, H', W', 4, kh * kw * C)
        # A 2-D product: XLA then takes the kernel's gradient as patches^T @ dy, without transposing dy first.
        y = patches.reshape(-1, patches.shape[-1]) @ kernel.reshape(kh * kw * cin, self.features)
        y = _window_max(y.reshape(*patches.shape[:-1], self.features))
        y = y + bias if bias is not None else y
        return self.activation(y) if self.activation else y

    def unfused(self, x_BxHxWxC: jax.Array) -> jax.Array:
        """The same function as the layers it fuses, one after another (`mnist-jax summary` lists these)."""
        y = super().__call__(x_BxHxWxC)
        return max_pool_2x2(self.activation(y) if self.activation else y)


_WINDOW = ((0, 0), (0, 1), (1, 0), (1, 1))  # a 2x2 window in row-major order: select_and_scatter's search order
_WINDOW_SIZE = len(_WINDOW)


def _pooling_patches(x_BxHxWxC: jax.Array, kh: int, kw: int) -> jax.Array:
    """(B, H', W', 4, kh * kw * C): for each pooled output, the im2col rows of the four convolution outputs of its
    window; H' and W' are the pooled sizes, odd trailing convolution rows and columns dropped as pooling does."""
    b, h, w, c = x_BxHxWxC.shape
    out_h, out_w = (h - kh + 1) // 2, (w - kw + 1) // 2
    if out_h < 1 or out_w < 1:
        raise ValueError(f"{h}x{w} inputs are too small for a {kh}x{kw} kernel and 2x2 pooling.")

    # Each tap of each window position is the input at stride 2 from one of (kh + 1) x (kw + 1) offsets: slicing
    # those once and concatenating once makes fewer, larger copies (faster at small batches).
    strided = {(row, col): x_BxHxWxC[:, row:row + 2 * out_h - 1:2, col:col + 2 * out_w - 1:2]
               for row in range(kh + 1) for col in range(kw + 1)}
    taps = [strided[di + i, dj + j] for di, dj in _WINDOW for i in range(kh) for j in range(kw)]  # (row, col, channel)
    return jnp.concatenate(taps, -1).reshape(b, out_h, out_w, _WINDOW_SIZE, kh * kw * c)


@jax.custom_vjp
def _window_max(y_BxHxWx4xF: jax.Array) -> jax.Array:
    """Max over the window axis (-2); the gradient goes to the first maximum, as select_and_scatter's does."""
    return y_BxHxWx4xF.max(-2)


def _window_max_forward(y):
    # The maximum and the first maximum's position in one pass over `y` (one variadic reduction); the position is
    # kept instead of `y`: an eighth of its bytes, so the backward pass reads far less.
    position = jax.lax.broadcasted_iota(jnp.int32, y.shape, y.ndim - 2)

    def larger_or_first(a, b):
        (a_value, a_position), (b_value, b_position) = a, b
        a_nan, b_nan = jnp.isnan(a_value), jnp.isnan(b_value)  # NaN is the largest, as max pooling passes it on
        larger = (b_value > a_value) | (b_nan & ~a_nan)
        same = (b_value == a_value) | (b_nan & a_nan)
        take_b = larger | (same & (b_position < a_position))  # order-free: XLA may reduce in any order
        return jnp.where(take_b, b_value, a_value), jnp.where(take_b, b_position, a_position)

    pooled, first = jax.lax.reduce((y, position), (jnp.array(-jnp.inf, y.dtype), jnp.int32(y.shape[-2])),
                                   larger_or_first, (y.ndim - 2,))
    return pooled, first.astype(jnp.int8)


def _window_max_backward(first, grad_BxHxWxF):
    window = jnp.arange(_WINDOW_SIZE, dtype=jnp.int8)[:, None]
    return (jnp.where(first[..., None, :] == window, grad_BxHxWxF[..., None, :], 0),)


_window_max.defvjp(_window_max_forward, _window_max_backward)


class BatchLastConv(nn.Module):
    """`nn.Conv(features, kernel_size, strides, padding="VALID")` on (C, H, W, B) input: channels first, batch last."""

    # Same parameters as nn.Conv. Why this layout: kernel^T @ patches keeps the long pixels-times-batch axis last,
    # the shape XLA:CPU's matrix products run fastest with few filters; and with the batch innermost, every
    # shifted slice of im2col (and of its gradient) copies whole rows of B contiguous values, not rows of W.

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_CxHxWxB: jax.Array) -> jax.Array:
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        c, h, w, b = x_CxHxWxB.shape
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (kh, kw, c, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        x, kernel, bias = nn.dtypes.promote_dtype(x_CxHxWxB, kernel, bias, dtype=self.dtype)
        out_h, out_w = (h - kh) // sh + 1, (w - kw) // sw + 1
        if out_h < 1 or out_w < 1:
            raise ValueError(f"{h}x{w} inputs are smaller than the {kh}x{kw} kernel.")
        # Patch rows in (row, col, channel) order, the order of kernel.reshape(-1, features).
        patches = jnp.stack([x[:, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw, :]
                             for i in range(kh) for j in range(kw)])
        y = kernel.reshape(kh * kw * c, self.features).T @ patches.reshape(kh * kw * c, -1)
        return y.reshape(self.features, out_h, out_w, b) + bias[:, None, None, None]


class PlainCNN(nn.Module):
    """The article's CNN written the obvious way with Flax's own layers: the reference for tests and benchmarks."""

    @nn.compact
    def __call__(self, x_BxHxWx1: jax.Array, train: bool = False) -> jax.Array:
        x = nn.relu(nn.Conv(32, (3, 3), padding="VALID")(x_BxHxWx1))
        x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(128)(x))
        return nn.Dense(10)(x)
