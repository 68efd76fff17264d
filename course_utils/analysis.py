"""Small numerical analysis shared by notebooks: power-law fits on log-log axes."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PowerLawFit:
    """y ~ coefficient * x**slope, fitted by least squares on (log x, log y)."""

    slope: float
    coefficient: float
    r2: float

    def predict(self, x: np.ndarray | float) -> np.ndarray:
        return self.coefficient * np.asarray(x, dtype=float) ** self.slope

    def __str__(self) -> str:
        return f"y ≈ {self.coefficient:.3g} · x^{self.slope:.3f} (R² = {self.r2:.3f})"


def fit_power_law(x, y) -> PowerLawFit:
    """Fit y = c * x^k on log-log axes; x and y must be positive, finite, equally long, with >= 2 distinct x."""
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    if x.size < 2 or np.unique(x).size < 2:
        raise ValueError("a power-law fit needs at least two distinct x values")
    for name, v in (("x", x), ("y", y)):
        if not np.all(np.isfinite(v)) or np.any(v <= 0):
            raise ValueError(f"{name} must be finite and positive for a log-log fit, got {v[~(np.isfinite(v) & (v > 0))][:3]}")
    lx, ly = np.log(x), np.log(y)
    slope, intercept = np.polyfit(lx, ly, 1)
    residual = ly - (slope * lx + intercept)
    total = ly - ly.mean()
    r2 = 1.0 - float(residual @ residual) / float(total @ total) if np.any(total) else 1.0
    return PowerLawFit(float(slope), float(np.exp(intercept)), r2)
