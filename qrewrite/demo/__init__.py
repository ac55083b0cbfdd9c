"""The bundled demo: a small CNN trained on scikit-learn's digits."""
