"""Small numerical analysis shared by notebooks: power-law fits on log-log axes."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PowerLawFit:
    """y ~ coefficient * x**slope, fitted by least squares on (log x, log y)."""

    slope: float
    coefficient: float
    r2: float
    slope_stderr: float = float("nan")   # standard error of the slope from the residuals (nan with 2 points)
    points: int = 0

    def slope_interval(self, level: float = 0.95) -> tuple[float, float]:
        """Confidence interval of the slope (Student t with points - 2 degrees of freedom; the fit's own scatter
        about the line, not the error of each y). (-inf, inf) when 2 points leave no scatter to judge by."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must lie in (0, 1), got {level}")
        if self.points < 3 or not np.isfinite(self.slope_stderr):
            return (-math.inf, math.inf)
        from scipy.stats import t

        half = float(t.ppf(0.5 + level / 2, self.points - 2)) * self.slope_stderr
        return (self.slope - half, self.slope + half)

    def slope_text(self, level: float = 0.95) -> str:
        """'1.02 ± 0.08' (the half-width of the `level` interval), or '1.02' with only two points."""
        low, high = self.slope_interval(level)
        return f"{self.slope:.2f}" if not math.isfinite(low) else f"{self.slope:.2f} ± {(high - low) / 2:.2f}"

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
    sxx = float(((lx - lx.mean()) ** 2).sum())
    stderr = math.sqrt(float(residual @ residual) / (x.size - 2) / sxx) if x.size > 2 else float("nan")
    return PowerLawFit(float(slope), float(np.exp(intercept)), r2, stderr, int(x.size))
