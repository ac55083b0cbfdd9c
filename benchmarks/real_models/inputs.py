"""Real inputs for the PP-OCR models and MiniLM, split into calibration and evaluation.

Images come from scikit-image's bundled samples and from text lines rendered with Pillow.
Every maker is deterministic: the same call returns the same arrays. Calibration and
evaluation never share a source image, a sentence or a rendered line.

Preprocessing follows rapidocr-onnxruntime 1.4.4: BGR channel order and pixels scaled
to [-1, 1] with (x / 255 - 0.5) / 0.5. Text lines are resized to height 48 keeping
their aspect ratio, then padded on the right with zeros up to the model width.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

TEXT_LINE_HEIGHT = 48
REC_WIDTH = 320
CLS_WIDTH = 192
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"))
FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSansCondensed.ttf",
)

# Short English sentences, written for these benchmarks. Text lines for rec and cls
# are rendered from them, and MiniLM embeds them.
SENTENCES = (
    "The train leaves the station at half past seven.",
    "Please keep the receipt for your records.",
    "Invoice 2041 is due on the fifteenth of March.",
    "A quiet street lined with old oak trees.",
    "The museum is closed on Mondays and holidays.",
    "Store the samples below four degrees Celsius.",
    "Our team shipped the new release on Friday.",
    "Turn left at the bakery and walk two blocks.",
    "The recipe calls for three cups of flour.",
    "Total amount: 48.90 EUR including tax.",
    "Heavy rain is expected along the coast tonight.",
    "The committee approved the budget for next year.",
    "Keep this door closed at all times.",
    "She read the letter twice before answering.",
    "Battery level low, connect the charger.",
    "Chapter 3 describes the measurement setup.",
    "Flight 318 to Lisbon boards at gate B12.",
    "The library lends books for up to four weeks.",
    "Water the plants every second morning.",
    "Meeting moved to room 4.07 on the fourth floor.",
    "The bridge was built in 1894 from local stone.",
    "Mix the paint well before applying a thin coat.",
    "No parking between 8 am and 6 pm.",
    "The cat slept all afternoon in the sun.",
    "Results are shown in the table below.",
    "Press and hold the button for five seconds.",
    "The orchestra tuned their instruments quietly.",
    "Delivery expected within three working days.",
    "Wash your hands before handling food.",
    "The river froze completely during the winter.",
    "Enter your password to continue.",
    "Fresh bread is baked here every morning.",
    "The printer on the second floor is out of paper.",
    "Children under twelve travel for free.",
    "He planted tomatoes and beans in the garden.",
    "Exit through the rear door in case of fire.",
    "The conference opens with a short keynote.",
    "Serial number: QX-5521-0087.",
    "Tickets are available at the front desk.",
    "The old map showed a path across the hills.",
)

# scikit-image samples bundled with the package (no download). Photos and scanned text.
DET_CALIBRATION_SAMPLES = ("astronaut", "coffee", "text", "rocket", "immunohistochemistry")
DET_EVALUATION_SAMPLES = ("chelsea", "page", "camera")


@dataclass(frozen=True)
class InputSplit:
    """Calibration feeds and held-out evaluation feeds for one model."""

    calibration: list[dict[str, np.ndarray]]
    evaluation: list[dict[str, np.ndarray]]


def normalize_image(image: np.ndarray) -> np.ndarray:
    """Convert a uint8 RGB image [H, W, 3] to the PP-OCR input layout [3, H, W] in [-1, 1]."""
    bgr = image[:, :, ::-1].astype(np.float32)
    return ((bgr / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Return a uint8 RGB copy of a gray, RGB or RGBA image."""
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[:, :, :3]).astype(np.uint8)


def load_sample(name: str) -> np.ndarray:
    """Load one of scikit-image's bundled sample images as uint8 RGB."""
    import skimage.data

    return as_rgb(getattr(skimage.data, name)())


def resize_rgb(image: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def det_images(names: tuple[str, ...], height: int, width: int) -> list[np.ndarray]:
    """Resize scikit-image samples to [height, width] uint8 RGB for the det model."""
    return [resize_rgb(load_sample(name), height, width) for name in names]


def render_document(sentence_indices: range, height: int, width: int) -> np.ndarray:
    """Render SENTENCES as a page of text lines in varied fonts, [height, width] uint8 RGB."""
    first = sentence_indices[0]
    rng = np.random.default_rng(1000 + first)
    page = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(215, 256, 3)))
    draw = ImageDraw.Draw(page)
    top = int(rng.integers(8, 24))
    for i in sentence_indices:
        font = find_font(i, size=int(rng.integers(14, 30)))
        left = int(rng.integers(8, max(9, width // 6)))
        ink = tuple(int(v) for v in rng.integers(0, 80, 3))
        draw.text((left, top), SENTENCES[i], font=font, fill=ink)
        top += font.getbbox(SENTENCES[i])[3] + int(rng.integers(8, 28))
        if top > height - 30:
            break
    return np.asarray(page)


def det_split(height: int = 480, width: int = 640) -> InputSplit:
    """Build det feeds, one image per feed, of shape [1, 3, height, width].

    Calibration uses 5 scikit-image samples and 2 rendered text pages, and evaluation
    uses 3 other samples and 2 pages of other sentences. `height` and `width` must be
    multiples of 32, because the det model downsamples by a factor of 32 and
    concatenates upsampled feature maps.
    """
    if height % 32 or width % 32:
        raise ValueError(f"det input size must be multiples of 32, got {height}x{width}")
    calibration = [
        *det_images(DET_CALIBRATION_SAMPLES, height, width),
        render_document(range(0, 10), height, width),
        render_document(range(10, 20), height, width),
    ]
    evaluation = [
        *det_images(DET_EVALUATION_SAMPLES, height, width),
        render_document(range(20, 30), height, width),
        render_document(range(30, 40), height, width),
    ]
    return InputSplit(
        calibration=[{"x": normalize_image(image)[None]} for image in calibration],
        evaluation=[{"x": normalize_image(image)[None]} for image in evaluation],
    )


def find_font(index: int, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Return a DejaVu font (cycling through FONT_FILES) or Pillow's bundled default."""
    for folder in FONT_DIRS:
        path = folder / FONT_FILES[index % len(FONT_FILES)]
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)


def render_text_line(
    text: str, index: int, flipped: bool = False, noise_sigma: float = 4.0
) -> np.ndarray:
    """Render `text` as a uint8 RGB line image of height 48 with varied font and colors.

    The font, colors, blur and noise depend only on `index`, so a line renders the same
    every time. `flipped` rotates it by 180 degrees, the case the cls model detects.
    `noise_sigma` is the standard deviation of the added Gaussian pixel noise (0 to 255
    scale).
    """
    rng = np.random.default_rng(index)
    font = find_font(index, size=int(rng.integers(26, 36)))
    background = tuple(int(v) for v in rng.integers(200, 256, size=3))
    ink = tuple(int(v) for v in rng.integers(0, 70, size=3))

    left, top, right, bottom = font.getbbox(text)
    margin_x, margin_y = int(rng.integers(4, 16)), int(rng.integers(4, 10))
    canvas_size = (right - left + 2 * margin_x, bottom - top + 2 * margin_y)
    canvas = Image.new("RGB", canvas_size, background)
    ImageDraw.Draw(canvas).text((margin_x - left, margin_y - top), text, font=font, fill=ink)
    if rng.random() < 0.5:
        canvas = canvas.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.0))))

    line = np.asarray(canvas).astype(np.float32)
    line += rng.normal(0.0, noise_sigma, size=line.shape)
    line = np.clip(line, 0, 255).astype(np.uint8)
    if flipped:
        line = line[::-1, ::-1]
    scaled_width = max(1, round(line.shape[1] * TEXT_LINE_HEIGHT / line.shape[0]))
    return resize_rgb(np.ascontiguousarray(line), TEXT_LINE_HEIGHT, scaled_width)


def text_line_input(line: np.ndarray, width: int) -> np.ndarray:
    """Fit a rendered line into `width` as [3, 48, width], as rapidocr does.

    A line wider than `width` is squeezed to `width`. A narrower one keeps its size and
    is padded with zeros (mid-gray after normalization) on the right.
    """
    if line.shape[1] > width:
        line = resize_rgb(line, TEXT_LINE_HEIGHT, width)
    padded = np.zeros((3, TEXT_LINE_HEIGHT, width), dtype=np.float32)
    padded[:, :, : line.shape[1]] = normalize_image(line)
    return padded


def text_line_batches(
    sentence_indices: range, width: int | None, batch_size: int, flip_every: int = 0
) -> list[dict[str, np.ndarray]]:
    """Render the given SENTENCES as [batch_size, 3, 48, W] feeds for rec or cls.

    W is `width`, or with `width=None` the widest line of the batch but at least 320,
    which is how rapidocr sizes rec batches. With `flip_every` = k > 0, every k-th line
    is rotated by 180 degrees.
    """
    lines = [
        render_text_line(SENTENCES[i], index=i, flipped=flip_every > 0 and i % flip_every == 0)
        for i in sentence_indices
    ]
    feeds = []
    for start in range(0, len(lines), batch_size):
        batch = lines[start : start + batch_size]
        batch_width = width or max([REC_WIDTH] + [line.shape[1] for line in batch])
        feeds.append({"x": np.stack([text_line_input(line, batch_width) for line in batch])})
    return feeds


def rec_split(calibration_count: int = 16, evaluation_count: int = 16) -> InputSplit:
    """Build rec feeds of 4 lines each, shape [4, 3, 48, W], from disjoint sentences.

    W is the widest line of each feed (at least 320), so it differs between feeds.
    """
    return InputSplit(
        calibration=text_line_batches(range(calibration_count), None, batch_size=4),
        evaluation=text_line_batches(
            range(calibration_count, calibration_count + evaluation_count),
            None,
            batch_size=4,
        ),
    )


def cls_split(calibration_count: int = 16, evaluation_count: int = 16) -> InputSplit:
    """Build cls feeds of 4 lines each, shape [4, 3, 48, 192].

    Every line whose sentence index is a multiple of 3 is upside down.
    """
    return InputSplit(
        calibration=text_line_batches(
            range(calibration_count), CLS_WIDTH, batch_size=4, flip_every=3
        ),
        evaluation=text_line_batches(
            range(calibration_count, calibration_count + evaluation_count),
            CLS_WIDTH,
            batch_size=4,
            flip_every=3,
        ),
    )


def minilm_split(calibration_count: int = 16, batch_size: int = 4) -> InputSplit:
    """Tokenize SENTENCES into MiniLM feeds: the first ones calibrate, the rest evaluate.

    Each feed is padded to its longest sentence, so sequence lengths differ by feed.
    """
    from benchmarks.real_models.minilm import tokenize

    def feeds(sentences: tuple[str, ...]) -> list[dict[str, np.ndarray]]:
        return [
            tokenize(list(sentences[start : start + batch_size])).as_feed()
            for start in range(0, len(sentences), batch_size)
        ]

    return InputSplit(
        calibration=feeds(SENTENCES[:calibration_count]),
        evaluation=feeds(SENTENCES[calibration_count:]),
    )


# Inputs of tests/test_real_models.py, stored so that the test needs neither Pillow nor
# scikit-image. Regenerate with `python -m benchmarks.real_models.inputs`.
OCR_TEST_INPUTS = Path(__file__).resolve().parent / "ocr_test_inputs.npz"
TEST_DET_HEIGHT, TEST_DET_WIDTH = 128, 160


def pad_text_line(line: np.ndarray, width: int) -> np.ndarray:
    """Fit a line into [48, width] uint8 RGB like `text_line_input`, padding with 128.

    Gray 128 normalizes to 0.004, close to the zero padding rapidocr applies after
    normalization.
    """
    if line.shape[1] > width:
        line = resize_rgb(line, TEXT_LINE_HEIGHT, width)
    padded = np.full((TEXT_LINE_HEIGHT, width, 3), 128, dtype=np.uint8)
    padded[:, : line.shape[1]] = line
    return padded


def write_ocr_test_inputs(path: Path = OCR_TEST_INPUTS) -> None:
    """Write uint8 RGB cls lines and det images, each split into calibration and evaluation.

    The cls lines render without pixel noise, which keeps the file small. The det images
    are 128x160: a photo and a rendered text page for calibration, and for evaluation the top-left
    corner of scikit-image's scanned "page" sample (cropped at its own resolution, because
    shrinking makes its text too small to detect reliably) and a page of other sentences.
    Evaluation images all contain text because on a photo without text the det output is
    all zero after quantization, which leaves its cosine similarity undefined.
    """
    lines = [
        pad_text_line(render_text_line(SENTENCES[i], i, i % 3 == 0, noise_sigma=0.0), CLS_WIDTH)
        for i in range(16)
    ]
    size = (TEST_DET_HEIGHT, TEST_DET_WIDTH)
    np.savez_compressed(
        path,
        cls_calibration=np.stack(lines[:8]),
        cls_evaluation=np.stack(lines[8:]),
        det_calibration=np.stack(
            [det_images(("astronaut",), *size)[0], render_document(range(0, 6), *size)]
        ),
        det_evaluation=np.stack(
            [
                load_sample("page")[:TEST_DET_HEIGHT, :TEST_DET_WIDTH],
                render_document(range(20, 26), *size),
            ]
        ),
    )


if __name__ == "__main__":
    write_ocr_test_inputs()
    print(f"wrote {OCR_TEST_INPUTS}")
