"""Tiny learnable fake datasets written in the official CIFAR-10 binary layout."""

from pathlib import Path

import numpy as np

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _records(n: int, rng: np.random.Generator) -> bytes:
    labels = rng.integers(0, 10, n).astype(np.uint8)
    # Each class gets its own mean colour, so that a few steps of training can learn it.
    base = (np.arange(10)[:, None] * np.array([25, 70, 130])[None, :]) % 256
    pixels = rng.normal(0, 30, (n, 3, 32, 32)) + base[labels][:, :, None, None]
    pixels = pixels.clip(0, 255).astype(np.uint8).reshape(n, 3072)
    return np.concatenate([labels[:, None], pixels], axis=1).tobytes()


def write_fake_cifar10(root: Path, n_train: int = 250, n_test: int = 100, seed: int = 0) -> Path:
    """Write ``root/cifar-10-batches-bin`` with 5 train batches and a test batch."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per_batch = n_train // 5
    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(_records(per_batch, rng))
    (folder / "test_batch.bin").write_bytes(_records(n_test, rng))
    (folder / "batches.meta.txt").write_text("\n".join(CLASSES) + "\n")
    return root
