"""Shared fixtures for the privacy core: a small standardised slice of the breast-cancer data."""

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.preprocessing import StandardScaler


@pytest.fixture(scope="session")
def breast_cancer() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """120 standardised records with both classes: enough for DP-SGD steps, small enough to stay fast."""
    features, labels = load_breast_cancer(return_X_y=True)
    rows = np.random.default_rng(7).permutation(len(labels))[:120]
    return StandardScaler().fit_transform(features[rows]), labels[rows]
