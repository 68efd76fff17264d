"""Small datasets that ship with a package, split and standardised the same way in every notebook."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Split:
    """Train and test tensors: X is (n, d) float, y is (n,) int64 class labels."""

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def num_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def load_digits_split(
    test_fraction: float = 0.25,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Split:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes; shipped with the package, no network),
    split at random (stratified) and standardised with the training set's mean and standard deviation."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_fraction, random_state=seed, stratify=y)
    mean, std = X_tr.mean(axis=0), X_tr.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # a few border pixels are always 0
    to_x = lambda a: torch.as_tensor((a - mean) / std, dtype=dtype, device=device)
    to_y = lambda a: torch.as_tensor(a, dtype=torch.int64, device=device)
    return Split(to_x(X_tr), to_y(y_tr), to_x(X_te), to_y(y_te))
