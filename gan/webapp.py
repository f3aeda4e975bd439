"""The web page (Gradio): a number written in several handwritings, or in the
visitor's own (a digit drawn on a sketchpad or uploaded), with a PNG download.
A generator of other classes than the digits (`train.py --dataset`) gets a
page of its own: a class picker and a grid, a row per class picked.
`python app.py` serves it on localhost; `build` makes it."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import jax
import numpy as np
from PIL import Image

from gan import batching, datasets, images
from gan.digit_writer import DigitWriter, line_noise
from gan.models import NOISE_DIM
from gan.limits import (MAX_SEED, WriterError, check_count, check_flag, check_number,
                        check_seed)

# Upscaling of the picture on the page and in the download.
SCALE = 2
# Most handwritings per request: the slider's end, and what `render` accepts
# from any client (the Python API allows gan.limits.MAX_STYLES).
PAGE_STYLES = 16
EXAMPLE = "2026"
# Most pictures per class on the class page (a grid's columns).
PAGE_PER_CLASS = 16
# The label choice that lets the classifier read the drawn digit.
READ_IT = "read it for me"
LABELS = (READ_IT, *"0123456789")
# Downloads kept in the page's folder (the newest; older ones are removed), and
# how often and after how long Gradio's own copies are removed (seconds).
KEPT_FILES = 32
CACHE_SWEEP_S = 300
# Largest upload the server accepts (Gradio refuses bigger files itself), and
# the visitors' sessions Gradio keeps in memory (the oldest go first; its
# default, 10,000, let memory grow with every new client).
MAX_UPLOAD = "10mb"
SESSIONS_KEPT = 64
# The sketchpad: its canvas (pixels) and brush (a mouse-drawn stroke as wide as
# a pen's, relative to the digit).
CANVAS = 280
BRUSH = 18


def render(writer: DigitWriter, text: Any, styles: Any, seed: Any, verify: Any,
           folder: str, handwriting: Any = None, label: Any = READ_IT
           ) -> tuple[np.ndarray | None, str | None, str, np.ndarray | None]:
    """One request: (picture uint8 `[H, W]`, PNG path for the download, status
    line, the visitor's digit as prepared beside G's redrawing of it, or None).

    `handwriting`: a picture of one digit (PIL image or 2-D array) to write in,
    or None for `styles` handwritings drawn from `seed`. Every argument is
    checked by the API's rules (gan.limits), whatever client sent it; bad input
    gives no picture and a message saying why.
    """
    try:
        text, seed_int = check_number(text), check_seed(seed)
        styles_int = check_count("handwritings", styles, PAGE_STYLES)
        verify = check_flag("verify", verify)
        style = None
        if handwriting is not None:
            if label not in LABELS:
                raise WriterError(f"the digit drawn is one of {', '.join(LABELS)}, "
                                  f"got {label!r:.40}")
            digit = None if label == READ_IT else int(label)  # one of LABELS
            style, styles_int = writer.style_from(handwriting, digit, seed_int), 1
        number = writer.number(text, styles_int, seed_int, verify, style)
    except WriterError as e:
        return None, None, "⚠️ " + str(e).replace("`", ""), None
    picture = images.number_image(number.images, SCALE)
    hand = "mine" if style else f"seed{seed_int}"
    path = os.path.join(folder, f"number_{text.strip().replace(' ', '_')}_{hand}.png")
    images.save_png(path, picture)
    keep_newest(folder, KEPT_FILES)
    if style:
        status = f"**{text}** in your handwriting (a {style.label})"
        fit = np.asarray(images.number_image(np.stack([[style.source, style.fit]]),
                                             SCALE * 2))
    else:
        status = (f"**{text}** in {styles_int} handwriting{'s' * (styles_int > 1)}, "
                  f"seed {seed_int}")
        fit = None
    if verify:
        status += (f"; {number.redrawn} line{'s' * (number.redrawn != 1)} redrawn after "
                   "the classifier misread a digit")
        if number.unverified:
            status += f" ({number.unverified} still misread)"
    return np.asarray(picture), path, status, fit


def render_classes(writer: DigitWriter, wanted: Any, per_class: Any, seed: Any,
                   verify: Any, folder: str
                   ) -> tuple[np.ndarray | None, str | None, str]:
    """One request of the class page: (picture uint8 `[H, W]`, PNG path for the
    download, status line). `wanted`: class names or indices
    (`DigitWriter.class_rows`), a row each; `per_class` pictures in a row, the
    same noise down a column. Bad input gives no picture and a message."""
    try:
        if isinstance(wanted, (list, tuple)) and not wanted:
            raise WriterError("pick at least one class")
        per_class = check_count("pictures per class", per_class, PAGE_PER_CLASS)
        seed_int, verify = check_seed(seed), check_flag("verify", verify)
        rows = writer.class_rows(wanted)
        grid, redrawn = writer.grid(rows, per_class, seed_int, verify)
    except WriterError as e:
        return None, None, "⚠️ " + str(e).replace("`", "")
    names = [writer.classes[r] for r in rows]
    picture = images.class_grid(grid.reshape(-1, 28, 28), names, SCALE)
    picked = hashlib.sha256(repr(rows).encode()).hexdigest()[:8]  # a name per request
    path = os.path.join(folder, f"classes_{picked}_x{per_class}_seed{seed_int}.png")
    images.save_png(path, picture)
    keep_newest(folder, KEPT_FILES)
    status = f"**{datasets.describe(names)}**: {per_class} each, seed {seed_int}"
    if verify:
        status += (f"; {redrawn} picture{'s' * (redrawn != 1)} redrawn after the "
                   "classifier misread the first drawing")
    return np.asarray(picture), path, status


def warm_up(writer: DigitWriter) -> None:
    """Compiles, before the first visitor, every program a request can need:
    the padded batch sizes (`gan.batching`) of G and the classifier, the noise
    of 1 to PAGE_STYLES handwritings, verification, and the inversion of a
    drawn digit. Requests then compile nothing, and the server's memory stays
    flat."""
    for size in batching.SIZES:
        writer.draw(np.zeros((size, NOISE_DIM), np.float32), np.zeros(size, np.int32))
    if not writer.writes_digits:  # the class page: G, and its reader if there is one
        try:
            reader = writer.reader
        except WriterError:
            return                                 # no classifier: no verification
        for size in batching.SIZES:
            reader(np.zeros((size, 28, 28), np.uint8))
        return
    for size in batching.SIZES:
        writer.reader(np.zeros((size, 28, 28), np.uint8))
    for styles in range(1, PAGE_STYLES + 1):
        line_noise(jax.random.key(0), styles)        # verification's shapes too
    jax.random.fold_in(jax.random.key(MAX_SEED), 1)  # a redraw's key; a large seed
    stroke = np.zeros((28, 28), np.uint8)
    stroke[4:24, 13:16] = 255                                  # a plain 1
    writer.number("1", style=writer.style_from(stroke, 1), verify=True)


def drawn_digit(sketch: Any, upload: Any) -> Image.Image | None:
    """The picture to take the handwriting from: an upload, else the
    sketchpad's drawing when it holds a stroke; None for neither."""
    if isinstance(upload, Image.Image):
        return upload
    composite = sketch.get("composite") if isinstance(sketch, dict) else None
    if not isinstance(composite, Image.Image):
        return None
    alpha = composite.getchannel("A") if "A" in composite.getbands() else None
    if alpha is not None and alpha.getextrema()[1] == 0:
        return None                                  # an untouched canvas
    return composite


def _as_sent(payload: Any) -> Any:
    return payload


def keep_newest(folder: str, count: int) -> None:
    """Removes all but the `count` newest files of `folder`."""
    paths = [os.path.join(folder, name) for name in os.listdir(folder)]
    paths = sorted((p for p in paths if os.path.isfile(p)), key=os.path.getmtime)
    for path in paths[:-count]:
        try:
            os.remove(path)
        except OSError:
            pass  # a concurrent request removed it first


def _next_seed(seed: Any) -> int:
    """The seed after `seed` (the "New ..." buttons); 0 after one that was no seed."""
    try:
        return (check_seed(seed) + 1) % (MAX_SEED + 1)
    except WriterError:
        return 0


def _controls(gr: Any, verify_label: str, go_label: str, new_label: str,
              picture_label: str) -> tuple[Any, ...]:
    """What both pages have under their settings: verify, go and new buttons,
    the status line, the picture and its download."""
    with gr.Row():
        verify = gr.Checkbox(False, label=verify_label, elem_id="verify")
        go = gr.Button(go_label, variant="primary", elem_id="write")
        new = gr.Button(new_label, elem_id="new")
    status = gr.Markdown(elem_id="status")
    picture = gr.Image(label=picture_label, format="png", type="numpy",
                       interactive=False, elem_id="picture")
    download = gr.DownloadButton("Download PNG", interactive=False, elem_id="download")
    return verify, go, new, status, picture, download


def build(writer: DigitWriter, folder: str) -> Any:
    """The page, as a `gradio.Blocks` (not yet launched), saving its downloads
    in `folder` (the caller owns it: app.py removes it at exit)."""
    import gradio as gr  # noqa: PLC0415 - only the web page needs it.

    if not writer.writes_digits:
        return _class_page(gr, writer, folder)

    def write(text, styles, seed, verify, sketch, upload, label):
        picture, path, status, fit = render(writer, text, styles, seed, verify, folder,
                                            drawn_digit(sketch, upload), label)
        return (picture, gr.DownloadButton(value=path, interactive=path is not None),
                status, fit)

    def new_handwriting(text, styles, seed, verify, sketch, upload, label):
        seed = _next_seed(seed)
        return (seed, *write(text, styles, seed, verify, sketch, upload, label))

    with gr.Blocks(title="cDCGAN: write a number",
                   delete_cache=(CACHE_SWEEP_S, CACHE_SWEEP_S)) as page:
        gr.Markdown("# Write a number\nA conditional GAN trained on MNIST writes it, "
                    "each line in one handwriting, or in yours: draw one digit "
                    "below (or upload a photo of one).")
        with gr.Row():
            text = gr.Textbox(EXAMPLE, label="Number (digits and spaces, up to 64)",
                              max_lines=1, elem_id="number")
            styles = gr.Slider(1, PAGE_STYLES, value=8, step=1,
                               label=f"Handwritings (up to {PAGE_STYLES})",
                               elem_id="styles")
            seed = gr.Number(0, label="Seed", precision=None, elem_id="seed")
        # Their values reach `render` as sent, which checks them (gan.limits)
        # with the page's messages, whoever sent them: Gradio's own check of a
        # slider value ended in a traceback on null, "8" or [8]. (On the
        # instances: a subclass of a Gradio component writes a .pyi file.)
        for box in (styles, seed):
            box.preprocess = _as_sent
        verify, go, new, status, picture, download = _controls(
            gr, "Verify: redraw lines with a misread digit", "Write", "New handwriting",
            "Your number")
        gr.Markdown("### In your handwriting\nDraw one digit (or upload a picture of "
                    "one), then press Write. Clear the drawing to go back to the "
                    "seeds' handwritings.")
        with gr.Row():
            sketch = gr.Sketchpad(type="pil", image_mode="RGBA", label="Draw one digit",
                                  canvas_size=(CANVAS, CANVAS), fixed_canvas=True,
                                  brush=gr.Brush(default_size=BRUSH, colors=["#000000"],
                                                 color_mode="fixed"),
                                  layers=False, elem_id="sketch")
            with gr.Column():
                upload = gr.Image(type="pil", sources=["upload"], label="or upload one",
                                  height=200, elem_id="upload")
                label = gr.Dropdown(list(LABELS), value=READ_IT, label="Which digit it is",
                                    elem_id="label")
            fit = gr.Image(label="Your digit as the generator sees it, and its redrawing",
                           format="png", type="numpy", interactive=False, elem_id="fit")
        inputs = [text, styles, seed, verify, sketch, upload, label]
        outputs = [picture, download, status, fit]
        go.click(write, inputs, outputs, api_name="write")
        text.submit(write, inputs, outputs)
        new.click(new_handwriting, inputs, [seed, *outputs])
        page.load(write, inputs, outputs)
    return page


def _shown_name(dataset: str) -> str:
    """A dataset's name for visitors: a folder by its own name, not the
    server's path."""
    folder = datasets.folder_of(dataset)
    return f"your pictures ({os.path.basename(folder)})" if folder else dataset


def _class_page(gr: Any, writer: DigitWriter, folder: str) -> Any:
    """The page of a generator of other classes: pick classes, get a row of
    each (`render_classes`)."""

    def draw(wanted, per_class, seed, verify):
        picture, path, status = render_classes(writer, wanted, per_class, seed, verify,
                                               folder)
        return (picture, gr.DownloadButton(value=path, interactive=path is not None),
                status)

    def new_pictures(wanted, per_class, seed, verify):
        seed = _next_seed(seed)
        return (seed, *draw(wanted, per_class, seed, verify))

    classes = list(writer.classes)
    with gr.Blocks(title=f"cDCGAN: {datasets.describe(classes, 3)}",
                   delete_cache=(CACHE_SWEEP_S, CACHE_SWEEP_S)) as page:
        gr.Markdown(f"# Draw a class\nA conditional GAN trained on "
                    f"{_shown_name(writer.dataset)} draws the classes you pick, a row "
                    f"each ({len(classes)} classes).")
        picked = gr.Dropdown(classes, value=classes[:min(len(classes), 4)],
                             multiselect=True, label="Classes (a row each)",
                             elem_id="classes")
        with gr.Row():
            per_class = gr.Slider(1, PAGE_PER_CLASS, value=8, step=1,
                                  label=f"Pictures per class (up to {PAGE_PER_CLASS})",
                                  elem_id="per_class")
            seed = gr.Number(0, label="Seed", precision=None, elem_id="seed")
        for box in (picked, per_class, seed):  # checked by render_classes (see build)
            box.preprocess = _as_sent
        verify, go, new, status, picture, download = _controls(
            gr, "Verify: redraw pictures the classifier misreads", "Draw",
            "New pictures", "The classes")
        inputs = [picked, per_class, seed, verify]
        outputs = [picture, download, status]
        go.click(draw, inputs, outputs, api_name="draw")
        new.click(new_pictures, inputs, [seed, *outputs])
        page.load(draw, inputs, outputs)
    return page
