"""Weight algorithms. Only cross-layer equalization (cle.py) is built so far."""
