"""An epoch's shuffled batches, drawn on the host with NumPy, equal bit for bit to `jax.random` drawing them.

The plan used to be a jitted program: 0.3-0.5 s of compiling before the first step, for 10 ms of work. Here is
`jax.random.permutation` of the default (Threefry-2x32, partitionable) keys, written out in NumPy: the same
keys, bits and stable sorts, so every seed trains on the batches it always did (tests/test_shuffle.py checks
this against jax.random itself).
"""

import numpy as np

KeyData = tuple[np.uint32, np.uint32]  # what jax.random.key_data holds for a Threefry key
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))  # Threefry-2x32's, alternating every four rounds
_PARITY = np.uint32(0x1BD11BDA)  # Threefry's key-schedule constant (Salmon et al., 2011)


def key(seed: int) -> KeyData:
    """`jax.random.key(seed)`'s data, (0, seed), for a seed in [0, 2**32)."""
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32); got {seed}.")
    return np.uint32(0), np.uint32(seed)


def fold_in(key_data: KeyData, data: int) -> KeyData:
    """`jax.random.fold_in` for a data value in [0, 2**32)."""
    high, low = threefry2x32(key_data, np.zeros(1, np.uint32), np.array([data], np.uint32))
    return high[0], low[0]


def split(key_data: KeyData) -> tuple[KeyData, KeyData]:
    """`jax.random.split(key)`, two keys."""
    high, low = _counted(key_data, 2)
    return (high[0], low[0]), (high[1], low[1])


def random_bits(key_data: KeyData, count: int) -> np.ndarray:
    """`jax.random.bits(key, (count,), jnp.uint32)`."""
    high, low = _counted(key_data, count)
    return high ^ low


def permutation(key_data: KeyData, count: int) -> np.ndarray:
    """`jax.random.permutation(key, count)` as int32."""
    # Stable sorts by fresh random keys, as many rounds as jax.random makes so that ties are unlikely.
    rounds = int(np.ceil(3 * np.log(max(1, count)) / np.log(np.iinfo(np.uint32).max)))
    order = np.arange(count, dtype=np.int32)
    for _ in range(rounds):
        key_data, subkey = split(key_data)
        order = order[np.argsort(random_bits(subkey, count), kind="stable")]
    return order


def threefry2x32(key_data: KeyData, high: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Threefry-2x32 block cipher of jax.random (20 rounds) over counter pairs (high, low)."""
    ks = (key_data[0], key_data[1], key_data[0] ^ key_data[1] ^ _PARITY)
    x0, x1 = high + ks[0], low + ks[1]
    for block in range(5):
        for rotation in _ROTATIONS[block % 2]:
            x0 = x0 + x1
            x1 = ((x1 << np.uint32(rotation)) | (x1 >> np.uint32(32 - rotation))) ^ x0
        x0 = x0 + ks[(block + 1) % 3]
        x1 = x1 + ks[(block + 2) % 3] + np.uint32(block + 1)  # an array first: wraps around without a warning
    return x0, x1


def _counted(key_data: KeyData, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Threefry of the counters 0 .. count-1 (as 64-bit numbers split in high and low halves)."""
    counters = np.arange(count, dtype=np.uint64)
    return threefry2x32(key_data, (counters >> np.uint64(32)).astype(np.uint32), counters.astype(np.uint32))
