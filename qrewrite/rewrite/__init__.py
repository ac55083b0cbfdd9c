"""The rule DSL and engine on top of onnxscript's rewriter."""
