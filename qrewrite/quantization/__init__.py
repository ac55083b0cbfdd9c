"""Quantization plan, refinements, scale math and Q/DQ materialization."""
