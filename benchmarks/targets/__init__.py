"""Helpers of bench_targets.py: accuracy, latency, quantize time and peak memory.

- `cases`: the models, their calibration feeds, evaluation inputs and targets.
- `ocr_pipeline`: character error rate of the whole rapidocr pipeline.
- `vad`: Silero VAD speech decisions on speech synthesized with espeak-ng.
- `embeddings`: MiniLM embedding cosine and retrieval agreement.
- `latency`: one-thread inference latency.
- `memory`: wall time and peak memory of a quantize or float-inference process.
- `variants`: the quantizer settings under comparison.
- `report`: the markdown tables.
"""
